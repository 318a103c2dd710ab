"""Every change of an item's review status obeys the approval rules, whoever asks: Approve selected, the one-item view,
and the grid's editable Status cell saved with Save changes (which once wrote review_status straight to the store, so an
item missing a required attribute, or one that could not be tagged, was approved and exported). Both stores."""

from __future__ import annotations

import json

import pytest

from pipeline.admin.taxonomy import default_schema_text, parse_taxonomy
from pipeline.batches.export import filter_items as export_items
from pipeline.batches.review import review_item, save_changes, set_review_status
from pipeline.models import AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult


def schema_requiring_color():
    data = json.loads(default_schema_text())
    next(a for a in data["attributes"] if a["name"] == "color")["required"] = True
    return parse_taxonomy(json.dumps(data))


SCHEMA = schema_requiring_color()
MAROONISH = ('Not approved: the taxonomy requires color ("maroonish" is not an allowed value) for every item. '
             "Set it to one of the allowed values, then approve.")


@pytest.fixture
def items(store):
    """#1 red (approvable), #2 colour "maroonish" (outside the list: color missing), #3 failed."""
    sources = [SourceItem(source=f"p{i}.jpg", ref=SourceRef("file", f"/photos/p{i}.jpg"), sku=f"SKU-{i}") for i in range(3)]
    batch = store.create_batch("status", "ann", IngestReport(items=sources))
    red, odd, failed = store.list_items(batch.id)
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    for item, color in ((red, "red"), (odd, "maroonish")):
        attributes = [AttributeValue("category", "shirt", "shirt", True), AttributeValue("color", color, color, color == "red")]
        store.save_result(item.id, ItemResult(content_key=f"{item.id:064d}", image_path="p", caption=CaptionResult("a top", {}, "m"),
                                              attributes=attributes, checks=checks, word_count=2,
                                              summary=SummaryResult("A top.", "Top", [], {}, "offline", True)), [])
    store.save_error(failed.id, "Could not read the image.", [])
    return store.list_items(batch.id)


def statuses(store, items) -> list[str]:
    return [store.get_item(item.id).review_status for item in items]


def test_the_grids_status_cell_is_refused_like_approve_for_a_missing_required_attribute_or_a_failed_item(store, items):
    red, odd, failed = items
    report = save_changes(store, {red.id: {"Status": "approved"}, odd.id: {"Status": "approved"},
                                  failed.id: {"Status": "approved"}}, SCHEMA, "rev")
    assert report.refused == [f"#2 SKU-1: {MAROONISH}", "#3 SKU-2: failed items cannot be approved."]
    assert [(e.item_id, e.field, e.new) for e in report.saved] == [(red.id, "review_status", "approved")]
    assert statuses(store, items) == ["approved", "pending", "pending"]
    assert [i.id for i in export_items(store.list_items(red.batch_id), "approved")] == [red.id]  # only it is exported
    # the same sentences as Approve selected gives
    assert set_review_status(store, [odd.id, failed.id], "approved", "rev", schema=SCHEMA).refused == report.refused


def test_rejecting_or_resetting_through_the_status_cell_needs_nothing(store, items):
    red, odd, failed = items
    report = save_changes(store, {odd.id: {"Status": "rejected"}, failed.id: {"Status": "rejected"}}, SCHEMA, "rev")
    assert report.ok and statuses(store, items) == ["pending", "rejected", "rejected"]
    assert save_changes(store, {odd.id: {"Status": "pending"}}, SCHEMA, "rev").ok
    assert statuses(store, items) == ["pending", "pending", "rejected"]


def test_a_required_attribute_set_in_the_same_save_counts_whatever_the_cell_order(store, items):
    red, odd, failed = items
    report = save_changes(store, {odd.id: {"Status": "approved", "color": "red"}}, SCHEMA, "rev")  # Status typed first
    assert report.ok, report.refused
    assert [e.field for e in report.saved] == ["attribute:color", "review_status"]
    assert store.get_item(odd.id).review_status == "approved"


def test_an_item_whose_other_cell_was_refused_is_not_approved_by_its_status_cell(store, items):
    red, odd, failed = items
    report = save_changes(store, {red.id: {"Summary": "word " * 51, "Status": "approved"}}, SCHEMA, "rev")
    assert report.refused[0].startswith("#1 SKU-0: The summary has 51 words")
    assert report.refused[1:] == ["#1 SKU-0: Status: Not approved: another change to this item was not saved (see above)."]
    assert statuses(store, items) == ["pending", "pending", "pending"]
    # the one-item view says the same through review_item: the field refused, the status left alone
    assert not review_item(store, red.id, {"Summary": "word " * 51}, "approved", SCHEMA, "rev").ok
    assert store.get_item(red.id).review_status == "pending"


def test_without_a_schema_the_shipped_default_requires_nothing_but_failed_items_still_refuse(store, items):
    """`set_review_status` without a schema reads the active taxonomy; the shipped default requires nothing."""
    red, odd, failed = items
    assert set_review_status(store, [odd.id], "approved", "rev").ok
    assert not set_review_status(store, [failed.id], "approved", "rev").ok
