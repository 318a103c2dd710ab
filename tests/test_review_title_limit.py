"""A person's product title is held to MAX_TITLE_CHARACTERS (150, Google Merchant Center's title limit) when saved:
over it is refused with a sentence, never cut, in both stores (a 17,999-character title used to be saved)."""

from __future__ import annotations

import pytest

from pipeline.attributes import load_attribute_schema
from pipeline.batches.feeds import GOOGLE_LIMITS
from pipeline.batches.review import save_changes, seo_problems
from pipeline.models import CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult
from pipeline.wordlimit import MAX_TITLE_CHARACTERS

SCHEMA = load_attribute_schema()


@pytest.fixture
def item(store):
    source = SourceItem(source="p.jpg", ref=SourceRef("file", "/p.jpg"), sku="SKU-0")
    batch = store.create_batch("titles", "ann", IngestReport(items=[source]))
    (item,) = store.list_items(batch.id)
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    store.save_result(item.id, ItemResult(content_key="0" * 64, image_path="p", caption=CaptionResult("a top", {}, "m"),
                                          attributes=[], checks=checks, word_count=2,
                                          summary=SummaryResult("A top.", "Top", [], {}, "offline", True)), [])
    return store.get_item(item.id)


def test_a_title_over_the_feed_limit_is_refused_with_a_sentence_and_one_at_the_limit_saves(store, item):
    assert MAX_TITLE_CHARACTERS == GOOGLE_LIMITS["title"] == 150  # a title saved in Review is never cut in the Google feed
    long = "Red cotton shirt " * 1058 + "x"  # 17,987 characters
    report = save_changes(store, {item.id: {"Title": long}}, SCHEMA, "rev")
    sentence = (f"The title has {len(long)} characters; the limit is 150 (what product feeds show). Shorten it and save again.")
    assert report.refused == [f"#1 SKU-0: {sentence}"]
    assert report.kept == [{"Item": "#1 SKU-0", "Field": "Title", "Your value": long}]  # the typing is not lost
    assert store.get_item(item.id).title == "Top" and store.edits(item.id) == []
    assert seo_problems({item.id: {"Title": long}}, {item.id: "#1 SKU-0"}) == report.refused  # the live warning says the same

    at_limit = "  " + "a" * 150 + "  "  # ends stripped, as stored
    assert save_changes(store, {item.id: {"Title": at_limit}}, SCHEMA, "rev").ok
    assert store.get_item(item.id).title == "a" * 150
    assert not save_changes(store, {item.id: {"Title": "a" * 151}}, SCHEMA, "rev").ok
    assert seo_problems({item.id: {"Title": at_limit}}, {}) == []
