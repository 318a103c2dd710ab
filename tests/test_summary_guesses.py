"""The summarizer's answer for an empty required attribute is kept (issue 19 follow-up). The taxonomy requires sleeve and
colour for shirts, and the OpenAI structured output must answer them (tests/test_required_attributes.py); when the
captioner left one empty or outside the allowed values, the item stores the summarizer's allowed answer with its source
("summarizer:<model>"), flagged for a person, instead of throwing the paid answer away. Real-time and Batch API runs
(the real `openai` client against the local OpenAI-compatible server), both stores, Review (library and AppTest) and
Quality's credit."""

from __future__ import annotations

import json

import openai
import pytest

from pipeline.admin.analytics import model_of
from pipeline.attributes import keep_required_guesses
from pipeline.batches.review import attributes_text, attributes_to_review, missing_required, set_review_status
from pipeline.batches.runner import NormalizeOptions, Stages, run_batch
from pipeline.models import AttributeValue, CaptionResult, IngestReport, SourceItem, SourceRef, Usage
from pipeline.service import fetch_limits
from pipeline.settings import Settings
from pipeline.store import LocalImageStore
from pipeline.summarizers.openai_batch import OpenAIBatchSummarizer
from pipeline.summarizers.openai_summarizer import OpenAISummarizer
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply
from test_required_attributes import SCHEMA


def answer_for(request) -> Reply:
    """The summarizer answers every attribute it is asked (sleeve long, colour red, material cotton)."""
    facts = json.loads(request["messages"][1]["content"])
    category = facts["attributes"].get("category", {}).get("answer") or None
    return Reply(content={"title": "Red shirt", "summary": "A red shirt.", "tags": ["shirt"],
                          "attributes": {name: None for name in SCHEMA.names()}
                          | {"category": category, "color": "red", "sleeve": "long", "material": "cotton"}},
                 prompt_tokens=100, completion_tokens=20)


class NamedCaptioner:
    """The captioner's answers follow the photo: a shirt with colour "reddish" (outside the list) and no sleeve answer,
    or a mug with colour "white". Sees only pixels, so each photo gets its own seed and answers by its colour."""

    model_id = "fake-blip"

    def __init__(self, answers_by_key: dict[str, dict[str, str]]) -> None:
        self.answers_by_key = answers_by_key

    def warm_up(self) -> None:
        pass

    def caption(self, image, questions):
        return (CaptionResult(caption="a shirt", answers=self.answers_by_key[image.content_key], model_id=self.model_id),
                Usage("endpoint", self.model_id, 0, 0, 1, 5.0))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def wait(self, cancel, seconds: float) -> bool:
        self.now += seconds
        return bool(cancel is not None and cancel.is_set())


SHIRT = {"category": "shirt", "color": "reddish"}  # colour outside the list, no sleeve answer
MUG = {"category": "mug", "color": "white"}  # nothing required for mugs


def tagged_run(store, tmp_path, server: FakeOpenAI, *, cheapest: bool) -> dict[str, object]:
    """Run a shirt and a mug through the runner (cheapest: OpenAI's Batch API); {sku: stored item}."""
    from pipeline.images.normalize import normalize_image

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline")
    answers, items = {}, []
    for seed, (sku, values) in enumerate((("shirt", SHIRT), ("mug", MUG))):
        path = tmp_path / f"{sku}.jpg"
        path.write_bytes(jpeg_bytes(size=(320, 240), seed=seed + 3))
        options = NormalizeOptions()
        answers[normalize_image(path.read_bytes(), max_side=options.max_side, max_pixels=options.max_pixels,
                                quality=options.quality).content_key] = values
        items.append(SourceItem(source=path.name, ref=SourceRef("file", str(path)), sku=sku))
    batch_id = store.create_batch("b", "t", IngestReport(items=items)).id
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=0, timeout=10)
    summarizer = OpenAISummarizer(client, SCHEMA, model="gpt-4o", fallback_model="gpt-4o-mini", max_retries=0, deadline_s=30)
    clock = Clock()
    later = OpenAIBatchSummarizer(summarizer, store, min_items=1, clock=clock, wait=clock.wait)
    stages = Stages(store=store, images=LocalImageStore(tmp_path / "images"), captioner=NamedCaptioner(answers),
                    summarizer=summarizer, schema=SCHEMA, fetch_limits=fetch_limits(settings), normalize=NormalizeOptions(),
                    batch_summarizer=later)
    progress = run_batch(stages, batch_id, concurrency=1, cheapest=cheapest)
    assert (progress.ok, progress.failed) == (2, 0), [i.error for i in store.list_items(batch_id)]
    assert bool(server.state.batch_creates) is cheapest
    return {item.sku: item for item in store.list_items(batch_id)}


@pytest.mark.parametrize("cheapest", [False, True], ids=["real-time", "batch-api"])
def test_the_summarizers_answer_fills_an_empty_or_odd_required_attribute(store, tmp_path, cheapest):
    with FakeOpenAI() as server:
        server.state.responder = answer_for
        items = tagged_run(store, tmp_path, server, cheapest=cheapest)
    shirt, mug = items["shirt"], items["mug"]
    by_name = {a.name: a for a in shirt.attributes}
    assert (by_name["sleeve"].value, by_name["sleeve"].source, by_name["sleeve"].in_vocab) == ("long", "summarizer:gpt-4o", False)
    assert (by_name["color"].value, by_name["color"].raw, by_name["color"].source) == ("red", "reddish", "summarizer:gpt-4o")
    # material does not apply to shirts: the summarizer's "cotton" is not taken
    assert set(by_name) == {"category", "color", "sleeve"}
    assert (by_name["category"].value, by_name["category"].source) == ("shirt", "captioner")
    # a mug requires nothing: every value is the captioner's, the summarizer's "long" sleeve is not taken
    assert {a.source for a in mug.attributes} == {"captioner"}
    assert (mug.attribute("color").value, mug.attribute("sleeve").value) == ("white", "")

    assert missing_required(shirt, SCHEMA) == []  # the guessed values are allowed ones: Approve is not refused
    assert {"sleeve", "color"} <= set(attributes_to_review(shirt))  # ... but a person is asked to check them
    assert "red (guessed by gpt-4o)" in attributes_text(shirt, SCHEMA) and "long (guessed by gpt-4o)" in attributes_text(shirt, SCHEMA)
    assert model_of(shirt, "attribute:sleeve") == "gpt-4o" and model_of(shirt, "attribute:color") == "gpt-4o"
    assert model_of(shirt, "attribute:category") == "fake-blip" and model_of(mug, "attribute:color") == "fake-blip"

    report = set_review_status(store, [shirt.id], "approved", "rev", schema=SCHEMA)
    assert report.ok, report.refused
    approved = store.get_item(shirt.id)
    assert not {"sleeve", "color"} & set(attributes_to_review(approved))  # approving is the person's check
    assert approved.attribute("sleeve").source == "summarizer:gpt-4o"  # ... and clears nothing stored
    assert model_of(approved, "attribute:sleeve") == "gpt-4o"


def test_a_persons_edit_of_a_guess_clears_the_flag_and_keeps_the_credit(store, tmp_path):
    from pipeline.batches.review import save_changes

    with FakeOpenAI() as server:
        server.state.responder = answer_for
        shirt = tagged_run(store, tmp_path, server, cheapest=False)["shirt"]
    assert save_changes(store, {shirt.id: {"sleeve": "short"}}, SCHEMA, "rev").ok
    edited = store.get_item(shirt.id)
    assert (edited.attribute("sleeve").value, edited.attribute("sleeve").in_vocab) == ("short", True)
    assert "sleeve" not in attributes_to_review(edited)
    assert attributes_text(edited, SCHEMA) == "shirt · red (guessed by gpt-4o) · short"  # colour: still the guess
    assert model_of(edited, "attribute:sleeve") == "gpt-4o"  # Quality counts the edit against the model that guessed


def test_rows_stored_before_the_source_existed_read_as_the_captioners(store, tmp_path):
    """Both stores keep attributes as JSON objects; an old object has no `source`."""
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes(size=(64, 64), seed=1))
    batch_id = store.create_batch("old", "t", IngestReport(items=[SourceItem("p.jpg", SourceRef("file", str(path)), "SKU")])).id
    (item,) = store.list_items(batch_id)
    old = json.dumps([{"name": "color", "raw": "red", "value": "red", "in_vocab": True}])
    if hasattr(store, "_connection"):
        with store._connection() as connection:
            connection.execute("UPDATE items SET attributes = ?, status = 'ok' WHERE id = ?", (old, item.id))
    else:
        pk, sk = store._item_key(item.id)
        store.client.update_item(TableName=store.table, Key={"PK": {"S": pk}, "SK": {"S": sk}},
                                 UpdateExpression="SET attributes = :a", ExpressionAttributeValues={":a": {"S": old}})
    (color,) = store.get_item(item.id).attributes
    assert (color.value, color.source, color.guessed_by) == ("red", "captioner", None)


def test_only_required_attributes_of_the_stored_category_take_a_guess():
    captioner = [AttributeValue("category", "", "", False), AttributeValue("color", "reddish", "reddish", False)]
    answers = {"category": "shirt", "color": "red", "sleeve": "long"}
    # no category stored: nothing is required (as Review checks), so nothing is taken
    assert keep_required_guesses(SCHEMA, captioner, answers, "gpt-4o") == captioner
    # an answer outside the allowed values is never taken
    shirt = [AttributeValue("category", "shirt", "shirt", True), AttributeValue("color", "reddish", "reddish", False)]
    kept = keep_required_guesses(SCHEMA, shirt, {"color": "crimson", "sleeve": None}, "gpt-4o")
    assert kept == shirt


# --- Review (AppTest): the grid and the one-item view say who guessed ------------------------------------------------
from test_review_page import batch, button, grid, result, review_env, review_page  # noqa: E402,F401  (fixtures and helpers)


def test_review_shows_a_guessed_value_as_guessed_until_the_item_is_approved(batch, review_env):
    store, batch_id, items = batch
    photo = review_env / "photo-0.jpg"
    guessed = result(0, photo)
    guessed.attributes[1] = AttributeValue("color", "", "red", False, source="summarizer:gpt-4o")
    store.save_result(items[0].id, guessed, [])
    app = review_page()
    assert grid(app).value["Attributes"].iloc[0] == "red · red (guessed by gpt-4o) · red · red · red"
    assert app.selectbox(key="focus-item").value == items[0].id
    labels = [s.label for s in app.selectbox if s.label.startswith("color")]
    assert labels == ["color (guessed by gpt-4o)"]
    app.checkbox(key="filter-low").check().run()
    assert list(grid(app).value["Item"]) == ["#1 SKU-0", "#3 SKU-2"]  # Attributes to check
    assert app.selectbox(key="focus-item").value == items[0].id
    button(app, "Approve").click().run()  # the one-item view: Approve is the person's check of the guess
    assert store.get_item(items[0].id).review_status == "approved"
    assert list(grid(app).value["Item"]) == ["#3 SKU-2"]  # approved: the person checked the guess
    assert not app.exception, app.exception
