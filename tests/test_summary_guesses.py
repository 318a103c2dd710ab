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
from dashboard.text import shown  # noqa: E402
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
    labels = [shown(s.label) for s in app.selectbox if s.label.startswith("color")]  # a label is Markdown: the note is inert
    assert labels == ["color (guessed by gpt-4o)"]
    app.checkbox(key="filter-low").check().run()
    assert list(grid(app).value["Item"]) == ["#1 SKU-0", "#3 SKU-2"]  # Attributes to check
    assert app.selectbox(key="focus-item").value == items[0].id
    button(app, "Approve").click().run()  # the one-item view: Approve is the person's check of the guess
    assert store.get_item(items[0].id).review_status == "approved"
    assert list(grid(app).value["Item"]) == ["#3 SKU-2"]  # approved: the person checked the guess
    assert not app.exception, app.exception


# --- a SageMaker batch transform job (moto + the emulated job running the real handler on the tiny model) ------------
@pytest.mark.parametrize("batch_api", [False, True], ids=["real-time-summaries", "batch-api-summaries"])
def test_a_batch_transform_job_keeps_the_summarizers_answer_too(monkeypatch, make_settings, responder, tmp_path, batch_api):
    """Every attribute but category is required for every item here; the tiny model's answers are random words, so
    where one does not map onto its list the stored value is the summarizer's (the list's first value), marked as its
    guess; where one does, the captioner's stays."""
    from pipeline.attributes import load_attribute_schema, map_answer
    from pipeline.batches.batch_transform import BatchTransformRunner
    from pipeline.service import build_stages, create_batch
    from support import moto_sagemaker
    from support.sagemaker_emulator import TransformEmulator

    data = json.loads(load_attribute_schema().model_dump_json())
    for attribute in data["attributes"]:
        attribute["required"] = attribute["name"] != "category"
    (tmp_path / "schema.json").write_text(json.dumps(data))
    guesses = {a["name"]: a["vocabulary"][0] for a in data["attributes"] if a["name"] != "category"}
    answer = {"title": "Red tee", "summary": "A red cotton tee.", "tags": ["tee"], "attributes": {"category": None, **guesses}}
    with moto_sagemaker.endpoint_in_moto(monkeypatch), FakeOpenAI() as server:
        server.state.default = Reply(content=answer)
        settings = make_settings(captioner="sagemaker", sagemaker_transform_s3="s3://results/transform", transform_poll_s=0.05,
                                 summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                                 openai_batch_min_items=2 if batch_api else 50, attribute_schema=tmp_path / "schema.json")
        stages = build_stages(settings)
        stages.batch_summarizer.wait = lambda cancel, seconds: False
        TransformEmulator(responder).install(monkeypatch)
        paths = []
        for seed in range(3):
            paths.append(tmp_path / f"p{seed}.jpg")
            paths[-1].write_bytes(jpeg_bytes(size=(200, 160), seed=seed + 1))
        batch = create_batch(stages.store, settings, paths, name="j", created_by="ann")
        job = BatchTransformRunner.from_settings(settings, stages).run(batch.id)
    assert job.status == "Ingested" and bool(server.state.batch_creates) is batch_api
    sources = []
    for item in stages.store.list_items(batch.id):
        assert item.status == "ok", item.error
        for name, guess in guesses.items():
            value = item.attribute(name)
            captioners = map_answer(stages.schema.spec(name), value.raw)
            if captioners.in_vocab:
                assert (value.value, value.source) == (captioners.value, "captioner")
            else:
                assert (value.value, value.source, value.in_vocab) == (guess, "summarizer:gpt-4o", False)
            sources.append(value.source)
    assert "summarizer:gpt-4o" in sources  # the tiny model's words left at least one required attribute outside its list
