"""Issue 19: per-category `required` attributes are enforced. An item whose category requires an attribute that has no
value, or a value outside the attribute's allowed list, is flagged in Review (filter, Required column) and cannot be
approved (one sentence naming the attribute; both stores); the OpenAI structured output answers those attributes
(never null) for an item of that category, real time and Batch API alike."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from pipeline.admin.taxonomy import activate_taxonomy, default_schema_text, parse_taxonomy, save_taxonomy
from pipeline.batches.review import filter_items, grid_rows, missing_required, review_item, save_changes, set_review_status
from pipeline.models import AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryRequest, SummaryResult
from pipeline.summarizers.openai_batch import OpenAIBatchSummarizer
from pipeline.summarizers.openai_summarizer import OpenAISummarizer
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply


def taxonomy_text() -> str:
    """The shipped taxonomy plus `sleeve`; a shirt requires sleeve and color, a mug has no rule."""
    data = json.loads(default_schema_text())
    data["attributes"].append({"name": "sleeve", "question": "How long are the sleeves?", "prefix": "the sleeves are",
                               "vocabulary": ["short", "long", "sleeveless"]})
    data["categories"] = {"shirt": {"attributes": ["color", "sleeve"], "required": ["sleeve", "color"]}}
    return json.dumps(data)


SCHEMA = parse_taxonomy(taxonomy_text())


def tagged(store, tmp_path: Path, answers: list[dict[str, str]]):
    """One tagged item per `answers` ({attribute: value}; a value ending in ? is kept outside the vocabulary)."""
    items = []
    for number in range(len(answers)):
        path = tmp_path / f"p{number}.jpg"
        path.write_bytes(jpeg_bytes(size=(64, 64), seed=number + 1))
        items.append(SourceItem(source=path.name, ref=SourceRef("file", str(path)), sku=f"SKU-{number}"))
    batch = store.create_batch("required", "ann", IngestReport(items=items))
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    for item, values in zip(store.list_items(batch.id), answers):
        attributes = [AttributeValue(name=name, raw=value, value=value.rstrip("?"), in_vocab=not value.endswith("?"))
                      for name, value in values.items()]
        store.save_result(item.id, ItemResult(content_key=f"{item.id:064d}", image_path="p", caption=CaptionResult("a top", {}, "m"),
                                              attributes=attributes, checks=checks, word_count=2,
                                              summary=SummaryResult("A top.", "Top", [], {}, "offline", True)), [])
    return store.list_items(batch.id)


def test_an_item_missing_a_required_attribute_is_flagged_and_not_approved_until_it_is_set(store, tmp_path):
    shirt, odd_shirt, mug, no_category = tagged(store, tmp_path, [
        {"category": "shirt", "color": "red"},  # sleeve: no answer
        {"category": "shirt", "color": "reddish?", "sleeve": "long"},  # color outside the list
        {"category": "mug", "color": "white"},  # no rule for mugs: nothing required
        {"category": "spaceship?"},  # a category outside the list: only attributes required everywhere (none here)
    ])
    assert missing_required(shirt, SCHEMA) == ["sleeve (no value)"]
    assert missing_required(odd_shirt, SCHEMA) == ['color ("reddish" is not an allowed value)']
    assert missing_required(mug, SCHEMA) == [] and missing_required(no_category, SCHEMA) == []

    every = [shirt, odd_shirt, mug, no_category]
    assert [i.id for i in filter_items(every, missing=True, schema=SCHEMA)] == [shirt.id, odd_shirt.id]
    assert [row["Required"] for row in grid_rows(every, SCHEMA)] == [
        "sleeve (no value)", 'color ("reddish" is not an allowed value)', "", ""]

    report = set_review_status(store, [shirt.id, odd_shirt.id, mug.id], "approved", "rev", schema=SCHEMA)
    assert report.refused == [
        '#1 SKU-0: Not approved: the taxonomy requires sleeve (no value) for category "shirt". '
        "Set it to one of the allowed values, then approve.",
        '#2 SKU-1: Not approved: the taxonomy requires color ("reddish" is not an allowed value) for category "shirt". '
        "Set it to one of the allowed values, then approve.",
    ]
    assert [e.item_id for e in report.saved] == [mug.id]  # the others still approve
    assert [store.get_item(i.id).review_status for i in (shirt, odd_shirt, mug)] == ["pending", "pending", "approved"]
    assert set_review_status(store, [shirt.id], "rejected", "rev", schema=SCHEMA).ok  # rejecting needs nothing

    # a person's own word is not an allowed value either: still refused
    assert save_changes(store, {odd_shirt.id: {"color": "rosy"}}, SCHEMA, "rev").ok
    assert not set_review_status(store, [odd_shirt.id], "approved", "rev", schema=SCHEMA).ok
    # set to an allowed value in the same press as Approve (the one-item view): saved, then approved
    report = review_item(store, odd_shirt.id, {"color": "red"}, "approved", SCHEMA, "rev")
    assert report.ok and store.get_item(odd_shirt.id).review_status == "approved"


def test_without_a_schema_approval_checks_the_active_taxonomy(store, tmp_path):
    (shirt,) = tagged(store, tmp_path, [{"category": "shirt", "color": "red"}])
    assert set_review_status(store, [shirt.id], "approved", "rev").ok  # the shipped default requires nothing
    set_review_status(store, [shirt.id], "pending", "rev")
    save_taxonomy(store, taxonomy_text(), "ana", based_on=0)
    activate_taxonomy(store, 1, "ana")
    report = set_review_status(store, [shirt.id], "approved", "rev")  # the CLI / any caller without a schema
    assert not report.ok and "sleeve (no value)" in report.refused[0]
    assert store.get_item(shirt.id).review_status == "pending"


# --- the structured output -------------------------------------------------------------------------------------
def attribute_field(body: dict, name: str) -> dict:
    schema = body["response_format"]["json_schema"]["schema"]
    attributes = schema["properties"]["attributes"]
    if "$ref" in attributes:
        attributes = schema["$defs"][attributes["$ref"].split("/")[-1]]
    return attributes["properties"][name]


def nullable(field: dict) -> bool:
    return {"type": "null"} in field.get("anyOf", [])


def request(category: str | None, hint: str = "") -> SummaryRequest:
    attributes = [AttributeValue(name="category", raw=category, value=category, in_vocab=True)] if category else []
    return SummaryRequest(caption="a red shirt", attributes=attributes, checks=None, hints={"category": hint} if hint else {})


def test_the_structured_output_answers_the_attributes_the_items_category_requires():
    answer = {"title": "Red shirt", "summary": "A red shirt.", "tags": ["shirt"],
              "attributes": {name: None for name in SCHEMA.names()} | {"category": "shirt", "color": "red", "sleeve": "long"}}
    with FakeOpenAI() as server:
        server.state.default = Reply(content=answer)
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=10)
        summarizer = OpenAISummarizer(client, SCHEMA, max_retries=0, deadline_s=30)
        summarizer.summarize(request("shirt"))
        summarizer.summarize(request("mug"))
        summarizer.summarize(request(None, hint="Shirt"))  # no category answer: the CSV's category hint decides
        shirt, mug, hinted = server.state.requests
    for body in (shirt, hinted):
        assert not nullable(attribute_field(body, "sleeve")) and not nullable(attribute_field(body, "color"))
        assert attribute_field(body, "sleeve")["enum"] == ["short", "long", "sleeveless"]
        assert nullable(attribute_field(body, "material"))  # not required for shirts
    assert all(nullable(attribute_field(mug, name)) for name in ("sleeve", "color", "material"))

    later = OpenAIBatchSummarizer(summarizer, store=None)  # the Batch API sends the same request body
    line = json.loads(later.request_lines({7: request("shirt")}).decode().splitlines()[0])
    assert not nullable(attribute_field(line["body"], "sleeve"))
    assert line["body"]["response_format"] == shirt["response_format"]
