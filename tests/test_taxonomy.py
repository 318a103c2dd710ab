"""Issue 19: the attribute taxonomy as versioned data — store contract (both stores, a barrier race of two
saves), import validation, a batch run following the active version (questions, synonyms, the summarizer's
structured-output schema, the version recorded per item and in the report), and the Admin → Taxonomy page."""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import replace
from pathlib import Path

import openai
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.text import shown
from pipeline.admin.taxonomy import (
    MAX_INPUT_BYTES, MAX_TAXONOMY_BYTES, StaleTaxonomyError, TaxonomyError, activate_taxonomy, active_taxonomy, default_schema_text, diff_taxonomies,
    current_schema, dump_taxonomy, follow_active_taxonomy, latest_version, parse_taxonomy, save_taxonomy,
)
from pipeline.attributes import load_attribute_schema
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply, image_parts

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
DEFAULT = load_attribute_schema()
HOSTILE = "**bold** [x](http://evil.example) <b>hi</b> :material/home:"


def taxonomy(*, sleeve_question: str = "How long are the sleeves?", color_required: bool = False) -> dict:
    """The default taxonomy plus a `sleeve` attribute and a new colour synonym (crimson -> red)."""
    data = json.loads(default_schema_text())
    for attribute in data["attributes"]:
        if attribute["name"] == "color":
            attribute["synonyms"]["crimson"] = "red"
            attribute["required"] = color_required
    data["attributes"].append({"name": "sleeve", "question": sleeve_question, "prefix": "the sleeves are",
                               "vocabulary": ["short", "long", "sleeveless"], "synonyms": {"long sleeves": "long"}})
    data["categories"] = {"shirt": {"attributes": ["color", "sleeve"], "required": ["sleeve"]}}  # no pattern/material/style
    return data


# Store contract ---------------------------------------------------------------------------------------
def test_versions_are_immutable_numbered_with_who_and_when_and_activation_is_a_separate_step(store):
    assert store.active_taxonomy() is None and store.taxonomy_versions() == []
    assert active_taxonomy(store, DEFAULT) == (0, DEFAULT)  # nothing stored: version 0, the shipped default

    first = save_taxonomy(store, json.dumps(taxonomy()), "ana@example.com", based_on=0)
    second = save_taxonomy(store, json.dumps(taxonomy(sleeve_question="Sleeve length?")), "bo@example.com", based_on=1)
    assert (first.version, second.version) == (1, 2)
    assert active_taxonomy(store, DEFAULT) == (0, DEFAULT)  # saving does not activate

    versions = store.taxonomy_versions()
    assert [(v.version, v.created_by, v.active) for v in versions] == [(1, "ana@example.com", False), (2, "bo@example.com", False)]
    assert all(v.created_at for v in versions)
    assert parse_taxonomy(versions[0].document).spec("sleeve").question == "How long are the sleeves?"  # v1 kept as saved

    activate_taxonomy(store, 1, "admin@example.com")
    version, schema = active_taxonomy(store, DEFAULT)
    assert version == 1 and schema.spec("color").synonyms["crimson"] == "red"
    assert [v.active for v in store.taxonomy_versions()] == [True, False]
    assert store.get_taxonomy(1).activated_by == "admin@example.com"
    assert any(e.action == "taxonomy_activate" and e.detail == "version 1" for e in store.audit_log())

    activate_taxonomy(store, 0, "admin@example.com")  # back to the default
    assert active_taxonomy(store, DEFAULT) == (0, DEFAULT)
    with pytest.raises(TaxonomyError, match="There is no taxonomy version 9."):
        activate_taxonomy(store, 9, "admin@example.com")


def test_a_save_from_an_older_version_is_refused_naming_who_saved_meanwhile(store):
    save_taxonomy(store, json.dumps(taxonomy()), "ana@example.com", based_on=0)
    with pytest.raises(StaleTaxonomyError) as refused:
        save_taxonomy(store, json.dumps(taxonomy(sleeve_question="Sleeve length?")), "bo@example.com", based_on=0)
    assert str(refused.value).startswith("Version 1 was saved by ana@example.com at ")
    assert str(refused.value).endswith("after you started from version 0; reload it and apply your changes again.")
    assert latest_version(store) == 1


def test_two_admins_saving_at_once_never_lose_one(store):
    """Both editors read 'newest is 0' before either writes (a barrier), then both save from version 0. In
    DynamoDB both also pass the store's own read before either Put (a second barrier), so only the
    conditional Put can tell them apart. Exactly one becomes version 1; the other is refused, not lost."""
    both_read = threading.Barrier(2, timeout=30)
    if isinstance(store, DynamoStore):
        inside = threading.Barrier(2, timeout=30)
        real, waited = store._latest_taxonomy, threading.local()

        def latest_then_wait():
            found = real()
            if not getattr(waited, "done", False):
                waited.done = True
                inside.wait()
            return found

        store._latest_taxonomy = latest_then_wait
    outcomes: dict[str, object] = {}

    def admin(who: str) -> None:
        found = store.taxonomy_versions()
        both_read.wait()
        try:
            outcomes[who] = save_taxonomy(store, json.dumps(taxonomy(sleeve_question=f"Sleeves of {who}?")), who,
                                          based_on=found[-1].version if found else 0).version
        except StaleTaxonomyError as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=admin, args=(who,)) for who in ("ana", "bo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(type(o).__name__ for o in outcomes.values()) == ["StaleTaxonomyError", "int"]
    (winner,) = [who for who, o in outcomes.items() if o == 1]
    (loser,) = [o for o in outcomes.values() if o != 1]
    assert str(loser).startswith(f"Version 1 was saved by {winner} at ")
    (stored,) = store.taxonomy_versions()
    assert stored.created_by == winner and parse_taxonomy(stored.document).spec("sleeve").question == f"Sleeves of {winner}?"


def test_an_item_keeps_the_version_it_was_tagged_with_in_both_stores(store, tmp_path):
    from pipeline.models import AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult

    record = store.create_batch("b", "test", IngestReport(items=[SourceItem(source=f"{i}.jpg", ref=SourceRef("file", f"/x/{i}.jpg"))
                                                                 for i in range(3)]))
    first, second, third = store.list_items(record.id)
    checks = PhotoChecks(800, 600, False, 400.0, False, 180.0, False, False, True, True, ["red"])

    def tagged(version: int) -> ItemResult:
        return ItemResult(content_key="k" * 64, image_path="p.jpg", checks=checks, word_count=2, taxonomy_version=version,
                          caption=CaptionResult(caption="a mug", answers={"color": "red"}, model_id="m"),
                          attributes=[AttributeValue("color", "red", "red", True)],
                          summary=SummaryResult(summary="A mug.", title="Mug", tags=[], attributes={}, model="offline", offline=True))

    store.save_result(first.id, tagged(3), [])
    store.save_result(second.id, tagged(0), [])
    store.save_error(third.id, "Could not read the image.", [])
    assert [store.get_item(i.id).taxonomy_version for i in (first, second, third)] == [3, 0, 0]
    store.save_result(first.id, tagged(4), [])  # tagged again (retry) under a newer version
    assert [i.taxonomy_version for i in store.list_items(record.id)] == [4, 0, 0]


# Import validation -------------------------------------------------------------------------------------
def broken(change) -> str:
    data = taxonomy()
    change(data)
    return json.dumps(data)


def colour(data: dict) -> dict:
    return next(a for a in data["attributes"] if a["name"] == "color")


@pytest.mark.parametrize("text, message", [
    ('{"attributes": [', "The taxonomy is not valid JSON: Expecting value at line 1, column 17."),
    ("[1, 2]", 'The taxonomy must be a JSON object with an "attributes" list.'),
    (broken(lambda d: d.update(colours=[])), 'Unknown key "colours" at the top of the taxonomy; the keys allowed there are "attributes" and "categories".'),
    (broken(lambda d: d.update(categories={"spaceship": {"attributes": ["color"]}})),
     'The rule for category "spaceship": "spaceship" is not one of the "category" attribute\'s allowed values.'),
    (broken(lambda d: d.update(categories={"mug": {"attributes": ["color", "handle"]}})),
     'The rule for category "mug" names the attribute "handle", which the taxonomy does not define.'),
    (broken(lambda d: d.update(categories={"mug": {"attributes": ["color"], "required": ["material"]}})),
     'The rule for category "mug" requires "material" but does not list it among its attributes.'),
    (broken(lambda d: d.update(categories={"mug": {"attributes": ["color"], "optional": []}})),
     'The rule for category "mug" has an unknown key "optional"; allowed keys are attributes, required.'),
    (broken(lambda d: colour(d).update(allowed=["red"])),
     'Attribute "color" has an unknown key "allowed"; allowed keys are name, question, prefix, vocabulary, synonyms, required.'),
    (broken(lambda d: colour(d)["synonyms"].update(scarlet="crimsonish")),
     'Attribute "color": the synonym "scarlet" points at "crimsonish", which is not one of its allowed values.'),
    (broken(lambda d: colour(d)["vocabulary"].append("red")), 'Attribute "color" lists the value "red" twice.'),
    (broken(lambda d: colour(d)["vocabulary"].append("Teal Blue")),
     'Attribute "color": the value "Teal Blue" must be written in lower case without spaces around it (answers are matched in lower case).'),
    (broken(lambda d: d["attributes"].append(dict(colour(d)))), 'The attribute "color" is defined twice.'),
    (broken(lambda d: colour(d).update(vocabulary=[])), 'Attribute "color" needs a "vocabulary" list of allowed values (non-empty texts).'),
    (broken(lambda d: colour(d).update(required="yes")), 'Attribute "color": "required" must be true or false.'),
    (broken(lambda d: colour(d).update(name="Colour!")),
     'Attribute 2 needs a name of lower-case letters, digits and _ (starting with a letter), like "color" or "sleeve_length".'),
    ('{"attributes": []}', 'The taxonomy needs an "attributes" list with at least one attribute.'),
    (b"\xff\xfe{}", "The file is not UTF-8 text; save it as UTF-8 JSON and upload it again."),
])
def test_a_bad_taxonomy_is_refused_with_one_plain_sentence(text, message):
    with pytest.raises(TaxonomyError) as refused:
        parse_taxonomy(text)
    assert str(refused.value) == message


def test_an_oversized_file_is_refused_before_it_is_parsed():
    text = json.dumps(taxonomy()) + " " * MAX_INPUT_BYTES
    sentence = f"The taxonomy text is {len(text) // 1000} KB; at most 1000 KB is read."
    for given in (text, text.encode("utf-8")):
        with pytest.raises(TaxonomyError) as refused:
            parse_taxonomy(given)
        assert str(refused.value) == sentence


# Hostile documents: nesting, text that is not Unicode, control characters, lengths, the stored size ---------
DEEP = "[" * 100_000 + "]" * 100_000  # 200 KB: exhausts json's recursion (RecursionError) if parsed


@pytest.mark.parametrize("given", [DEEP, DEEP.encode("utf-8"), '{"attributes": [{"name": "color", "vocabulary": ' + DEEP + "}]}"])
def test_a_deeply_nested_document_is_refused_with_one_sentence_before_it_is_parsed(given):
    with pytest.raises(TaxonomyError) as refused:
        parse_taxonomy(given)
    assert str(refused.value) == "The taxonomy is nested too deeply: at most 20 levels of brackets are read (a taxonomy needs 4)."


def test_brackets_inside_texts_are_not_counted_as_nesting():
    data = taxonomy()
    colour(data)["vocabulary"].append('[{"' * 30)  # quotes and brackets inside a value (escaped in JSON)
    parsed = parse_taxonomy(json.dumps(data))
    assert '[{"' * 30 in parsed.spec("color").vocabulary


@pytest.mark.parametrize("change, message", [
    (lambda d: colour(d)["vocabulary"].append("red\ud800"), 'Attribute "color": "vocabulary" holds'),
    (lambda d: colour(d)["synonyms"].update({"rot\udfff": "red"}), 'Attribute "color": "synonyms" holds'),
    (lambda d: colour(d).update(question="Colour\ud800?"), 'Attribute "color": "question" holds'),
    (lambda d: colour(d).update({"\ud800": 1}), 'Attribute "color": a key holds'),
    (lambda d: colour(d).update(name="col\ud800or"), 'Attribute 2: "name" holds'),
    (lambda d: d["categories"].update({"\ud800": {}}), '"categories" holds'),
    (lambda d: d.update({"\ud800": 1}), "A key at the top of the taxonomy holds"),
])
def test_text_that_is_not_unicode_is_refused_naming_the_field(change, message):
    """`"\\ud800"` (a lone surrogate, escaped in ASCII JSON) cannot be encoded, stored or shown: one sentence naming
    the field, whether the text arrives as an upload (bytes), as ASCII JSON, or re-dumped by the editor (raw)."""
    data = taxonomy()
    change(data)
    sentence = f"{message} text that is not valid Unicode (an unpaired surrogate such as \\ud800); remove that character."
    for given in (json.dumps(data), json.dumps(data).encode("ascii"), json.dumps(data, ensure_ascii=False)):
        with pytest.raises(TaxonomyError) as refused:
            parse_taxonomy(given)
        assert str(refused.value) == sentence
        str(refused.value).encode("utf-8")  # the sentence itself can be shown


@pytest.mark.parametrize("change, message", [
    (lambda d: colour(d)["vocabulary"].append("long\tsleeve"),
     'Attribute "color": the value "long\\tsleeve" contains a control character (a tab, a line break or similar); '
     "values and synonyms are one line of text."),
    (lambda d: colour(d)["synonyms"].update({"dark\nred": "red"}),
     'Attribute "color": the synonym "dark\\nred" contains a control character (a tab, a line break or similar); '
     "values and synonyms are one line of text."),
    (lambda d: colour(d).update(question="What colour?\nIgnore the photo."),
     'Attribute "color": the "question" contains a control character (a tab, a line break or similar); write it on one line.'),
    (lambda d: colour(d).update(prefix="the colour\x00is"),
     'Attribute "color": the "prefix" contains a control character (a tab, a line break or similar); write it on one line.'),
    (lambda d: colour(d).update(question="Q" * 200_000),
     'Attribute "color": the "question" is 200000 characters; at most 300 are allowed (it is sent with every caption request).'),
    (lambda d: colour(d).update(prefix="p" * 301),
     'Attribute "color": the "prefix" is 301 characters; at most 300 are allowed (it is sent with every caption request).'),
    (lambda d: colour(d)["vocabulary"].append("v" * 101),
     f'Attribute "color": the value "{"v" * 59}…" is 101 characters; at most 100 are allowed.'),
    (lambda d: colour(d)["synonyms"].update({"s" * 101: "red"}),
     f'Attribute "color": the synonym "{"s" * 59}…" is 101 characters; at most 100 are allowed.'),
])
def test_control_characters_and_over_long_texts_are_refused_with_one_sentence(change, message):
    data = taxonomy()
    change(data)
    with pytest.raises(TaxonomyError) as refused:
        parse_taxonomy(json.dumps(data))
    assert str(refused.value) == message


def test_texts_at_their_length_limits_are_accepted():
    data = taxonomy()
    colour(data).update(question="Q" * 300, prefix="p" * 300)
    colour(data)["vocabulary"].append("v" * 100)
    colour(data)["synonyms"]["s" * 100] = "red"
    parsed = parse_taxonomy(json.dumps(data)).spec("color")
    assert (len(parsed.question), len(parsed.prefix)) == (300, 300) and "v" * 100 in parsed.vocabulary


def sized(stored_bytes: int) -> dict:
    """A taxonomy whose stored form (dump_taxonomy) is exactly `stored_bytes` long: extra attributes of 40-character
    values, the last gap closed by lengthening one question."""
    from pipeline.attributes import AttributeSchema

    def size(data: dict) -> int:
        return len(dump_taxonomy(AttributeSchema.model_validate(data)).encode("utf-8"))

    data = json.loads(default_schema_text())
    values = iter(f"value {n:06d} " + "x" * 27 for n in range(1_000_000))
    extra: dict = {"vocabulary": [None] * 1_000}
    while (gap := stored_bytes - 250 - size(data)) > 0:
        if len(extra["vocabulary"]) == 1_000:
            extra = {"name": f"extra_{len(data['attributes'])}", "question": "Which?", "prefix": "it is", "vocabulary": [next(values)]}
            data["attributes"].append(extra)
        else:
            extra["vocabulary"].extend(next(values) for _ in range(min(1_000 - len(extra["vocabulary"]), max(1, gap // 60))))
    extra["question"] += "?" * (stored_bytes - size(data))
    assert size(data) == stored_bytes and len(extra["question"]) <= 300
    return data


def test_the_size_limit_is_the_stored_form_so_every_accepted_taxonomy_saves_and_its_download_uploads_again(store):
    """The limit applies to what is stored (indented JSON, also the download), not to the text given: a taxonomy at
    the limit saves in both stores (well inside DynamoDB's 400 KB item), its download re-uploads, one byte more is
    refused, and a compact text under the limit that stores over it is refused before it reaches the store."""
    from pipeline.attributes import AttributeSchema

    at_limit = json.dumps(sized(MAX_TAXONOMY_BYTES), separators=(",", ":"))  # given compact
    assert len(at_limit) < MAX_TAXONOMY_BYTES
    saved = save_taxonomy(store, at_limit, "ana@example.com", based_on=0)
    stored = store.get_taxonomy(saved.version).document
    assert len(stored.encode("utf-8")) == MAX_TAXONOMY_BYTES
    download = dump_taxonomy(parse_taxonomy(stored))  # what Download JSON offers
    assert download == stored
    assert save_taxonomy(store, download.encode("utf-8"), "bo@example.com", based_on=1).version == 2  # uploaded again

    with pytest.raises(TaxonomyError) as refused:
        parse_taxonomy(json.dumps(sized(MAX_TAXONOMY_BYTES + 1), separators=(",", ":")))
    assert str(refused.value) == "The taxonomy is 257 KB as stored (indented JSON, as downloaded); at most 256 KB is accepted."

    data = json.loads(default_schema_text())  # many short values: indenting adds ~40 % to the text
    data["attributes"] += [{"name": f"extra_{n}", "question": "Which?", "prefix": "it is",
                            "vocabulary": [f"value {i:04d} abcde" for i in range(1000)]} for n in range(11)]
    compact = json.dumps(data, separators=(",", ":"))
    stored_kb = -(-len(dump_taxonomy(AttributeSchema.model_validate(data)).encode("utf-8")) // 1000)  # rounded up, as said
    assert len(compact) < MAX_TAXONOMY_BYTES and stored_kb > MAX_TAXONOMY_BYTES / 1000
    with pytest.raises(TaxonomyError) as refused:
        save_taxonomy(store, compact, "cy@example.com", based_on=2)
    assert str(refused.value) == f"The taxonomy is {stored_kb} KB as stored (indented JSON, as downloaded); at most 256 KB is accepted."
    assert latest_version(store) == 2


def test_export_then_import_gives_the_same_taxonomy_and_the_diff_names_each_change():
    new = parse_taxonomy(json.dumps(taxonomy(color_required=True)))
    assert parse_taxonomy(dump_taxonomy(new)) == new
    assert parse_taxonomy(dump_taxonomy(DEFAULT).encode("utf-8")) == DEFAULT
    assert diff_taxonomies(DEFAULT, new) == ["sleeve: new attribute (3 values)", "color: synonym crimson: (none) → red", "color: now required",
                                             "category shirt: attributes: color, sleeve; required: sleeve"]
    assert diff_taxonomies(new, DEFAULT) == ["sleeve: removed", "color: synonym crimson: red → (none)", "color: no longer required",
                                             "category shirt: rule removed (every attribute applies)"]
    assert (new.applies("shirt"), new.applies("mug")) == ({"category", "color", "sleeve"}, set(new.names()))
    assert (new.required_for("shirt"), new.required_for("mug")) == ({"color", "sleeve"}, {"color"})


# The pipeline follows the active version ------------------------------------------------------------------
def answering(summaries: list[dict]):
    """Vision captions (the colour answer 'crimson', a sleeve answer when asked) and structured summaries that
    pick the first allowed value of every attribute the request's schema has."""
    def respond(request: dict) -> Reply:
        schema = request["response_format"]["json_schema"]["schema"]
        if image_parts(request):
            names = list(schema["properties"]["answers"]["properties"])
            answers = {name: {"category": "shirt", "color": "Crimson", "sleeve": "long sleeves"}.get(name, "unknown") for name in names}
            return Reply({"caption": "a crimson shirt", "answers": answers})
        summaries.append(request)
        attributes = schema["properties"]["attributes"]
        definitions = schema.get("$defs", {})
        if "$ref" in attributes:
            attributes = definitions[attributes["$ref"].split("/")[-1]]
        values = {}
        for name, field in attributes["properties"].items():
            choices = field.get("enum") or next(o["enum"] for o in field["anyOf"] if "enum" in o)
            values[name] = choices[0]
        return Reply({"title": "Shirt", "summary": "A shirt.", "tags": ["shirt"], "attributes": values})
    return respond


def attribute_field(request: dict, name: str) -> dict:
    schema = request["response_format"]["json_schema"]["schema"]
    attributes = schema["properties"]["attributes"]
    if "$ref" in attributes:
        attributes = schema["$defs"][attributes["$ref"].split("/")[-1]]
    return attributes["properties"][name]


def test_a_batch_asks_the_active_versions_questions_maps_its_synonyms_and_records_the_version(stages, tmp_path):
    from pipeline.batches.export import export_csv
    from pipeline.batches.runner import run_batch
    from pipeline.captioners.openai_vision import OpenAIVisionCaptioner
    from pipeline.service import create_batch
    from pipeline.settings import Settings
    from pipeline.summarizers.openai_summarizer import OpenAISummarizer

    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for index in range(2):
        paths.append(folder / f"p{index}.jpg")
        paths[-1].write_bytes(jpeg_bytes(seed=index + 1, color=(200, 20, 20)))
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    summaries: list[dict] = []
    with FakeOpenAI() as server:
        server.state.responder = answering(summaries)
        client = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=0, timeout=10.0)
        run_stages = replace(stages, captioner=OpenAIVisionCaptioner(client, model="gpt-4o-mini"),
                             summarizer=OpenAISummarizer(client, DEFAULT, model="gpt-4o", fallback_model=None))

        before = create_batch(stages.store, settings, paths[:1], name="before", created_by="test")
        run_batch(run_stages, before.id, concurrency=1)
        asked_before = json.dumps(server.state.requests[0])
        assert "sleeve" not in asked_before
        assert {"type": "null"} in attribute_field(summaries[0], "color")["anyOf"]  # not required: may be null

        save_taxonomy(stages.store, json.dumps(taxonomy(color_required=True)), "ana@example.com", based_on=0)
        activate_taxonomy(stages.store, 1, "ana@example.com")
        server.state.requests.clear()
        summaries.clear()
        after = create_batch(stages.store, settings, paths[1:], name="after", created_by="test")
        run_batch(run_stages, after.id, concurrency=1)  # the same Stages object: the run reads the active version
        again = create_batch(stages.store, settings, paths[:1], name="again", created_by="test")  # photo cached under v0
        run_batch(run_stages, again.id, concurrency=1)

    vision = next(r for r in server.state.requests if image_parts(r))  # the after batch's photo
    assert "How long are the sleeves?" in json.dumps(vision["messages"])  # the new question is asked
    assert "sleeve" in vision["response_format"]["json_schema"]["schema"]["properties"]["answers"]["properties"]
    summary_request = summaries[0]
    sleeve = attribute_field(summary_request, "sleeve")  # the shirt rule requires it: one of the values, never null
    assert "anyOf" not in sleeve and sleeve["enum"] == ["short", "long", "sleeveless"]
    assert {"type": "null"} in attribute_field(summary_request, "material")["anyOf"]  # required for nothing: may be null
    color = attribute_field(summary_request, "color")
    assert "anyOf" not in color and color["enum"][0] == "black"  # required: one of the values, never null

    (old,) = stages.store.list_items(before.id)
    (new,) = stages.store.list_items(after.id)
    assert old.taxonomy_version == 0 and new.taxonomy_version == 1
    assert old.attribute("sleeve") is None
    assert new.attribute("color").value == "red" and new.attribute("color").in_vocab  # crimson -> red (new synonym)
    assert old.attribute("color").raw == "Crimson" and not old.attribute("color").in_vocab  # the default has no 'crimson'
    assert (new.attribute("sleeve").value, new.attribute("sleeve").in_vocab) == ("long", True)  # long sleeves -> long
    assert [a.name for a in old.attributes] == ["category", "color", "material", "pattern", "style"]
    assert [a.name for a in new.attributes] == ["category", "color", "sleeve"]  # the shirt rule: only these apply

    (recaptioned,) = stages.store.list_items(again.id)  # its cached v0 caption has no sleeve answer: asked again
    assert len([r for r in server.state.requests if image_parts(r)]) == 2
    assert recaptioned.attribute("sleeve").value == "long" and recaptioned.taxonomy_version == 1
    active_schema = active_taxonomy(stages.store, DEFAULT)[1]
    rows = list(csv.DictReader(io.StringIO(export_csv([old, new], active_schema).decode("utf-8"))))
    assert [r["taxonomy_version"] for r in rows] == ["0", "1"]
    assert [r["sleeve"] for r in rows] == ["", "long"]


def test_stages_follow_activation_back_to_the_default_and_the_offline_summarizer_follows_too(stages):
    follows = follow_active_taxonomy(stages)
    assert follows is stages  # nothing active: unchanged
    save_taxonomy(stages.store, json.dumps(taxonomy()), "ana", based_on=0)
    activate_taxonomy(stages.store, 1, "ana")
    v1 = follow_active_taxonomy(stages)
    assert v1.taxonomy_version == 1 and "sleeve" in v1.schema.names() and v1.summarizer.schema == v1.schema
    assert stages.summarizer.schema == DEFAULT  # the original stages are not changed
    assert current_schema(stages) == v1.schema == current_schema(v1)  # what pages and exports should use
    activate_taxonomy(stages.store, 0, "ana")
    back = follow_active_taxonomy(v1)
    assert back.taxonomy_version == 0 and back.schema == DEFAULT and back.summarizer.schema == DEFAULT


def test_an_item_recorded_with_its_version_survives_a_reopened_sqlite_store(tmp_path):
    """The migration adds items.taxonomy_version to a database made before it (default 0)."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    SqliteStore(path)
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE items DROP COLUMN taxonomy_version")
        assert "taxonomy_version" not in {r[1] for r in db.execute("PRAGMA table_info(items)")}
    SqliteStore(path)
    with sqlite3.connect(path) as db:
        assert "taxonomy_version" in {r[1] for r in db.execute("PRAGMA table_info(items)")}


# Admin → Taxonomy page ------------------------------------------------------------------------------------
@pytest.fixture
def page_env(monkeypatch, tmp_path, tiny_model):
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "AUTH_MODE": "dev", "MAX_NEW_TOKENS": "8", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CAPTIONER", raising=False)
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()


def open_page(app: AppTest) -> AppTest:
    app.run()
    app.switch_page("pages/taxonomy.py").run()
    assert not app.exception, app.exception
    return app


def test_page_saves_and_activates_a_version_shows_hostile_text_literally_and_refuses_non_admins(page_env, monkeypatch):
    from pipeline.service import open_store
    from pipeline.settings import Settings

    app = open_page(AppTest.from_file(APP, default_timeout=120))
    assert "Active: version 0 (the default)." in shown(app.caption[0].value)
    assert app.selectbox(key="taxonomy-start").value == 0

    app.selectbox(key="taxonomy-part").set_value("color").run()
    color = json.loads(app.text_area[0].value)
    assert color["name"] == "color" and "grey" in color["vocabulary"]
    color["vocabulary"].append(HOSTILE.lower().strip())
    color["synonyms"]["crimson"] = "red"
    app.text_area[0].set_value(json.dumps(color)).run()
    assert not app.error, [e.value for e in app.error]
    changes = app.code[0].value
    assert f"color: values added: {HOSTILE.lower()}" in changes and "color: synonym crimson: (none) → red" in changes  # literal code block

    app.button(key="taxonomy-save").click().run()
    assert not app.exception, app.exception
    assert [shown(s.value) for s in app.success] == ["Saved as version 1. It is not active yet: activate it below."]
    store = open_store(Settings())
    assert [(v.version, v.created_by, v.active) for v in store.taxonomy_versions()] == [(1, "dev@localhost", False)]
    assert HOSTILE.lower() in parse_taxonomy(store.get_taxonomy(1).document).spec("color").vocabulary

    app.selectbox(key="taxonomy-activate-pick").set_value(1).run()
    app.button(key="taxonomy-activate").click().run()
    assert [shown(s.value) for s in app.success] == ["Version 1 is active: batches use it from their next run."]
    assert active_taxonomy(store, DEFAULT)[0] == 1
    assert "Active: version 1." in shown(app.caption[0].value)

    # a bad edit: one sentence, nothing saved; hostile text in the error is shown as text
    app.selectbox(key="taxonomy-part").set_value("pattern").run()
    pattern = json.loads(app.text_area[0].value)
    pattern["synonyms"][HOSTILE.lower()] = "tartan <script>"
    app.text_area[0].set_value(json.dumps(pattern)).run()
    (error,) = [shown(e.value) for e in app.error]
    assert "**bold**" not in app.error[0].value and "](http" not in app.error[0].value  # escaped Markdown: shown as text
    assert error == f'Attribute "pattern": the synonym "{HOSTILE.lower()}" points at "tartan <script>", which is not one of its allowed values.'
    assert app.button(key="taxonomy-save").disabled

    # another admin saved meanwhile: this editor (opened at version 1) is refused, not overwriting
    save_taxonomy(store, json.dumps(taxonomy()), "other@example.com", based_on=1)
    app.selectbox(key="taxonomy-part").set_value("style").run()
    app.button(key="taxonomy-save").click().run()
    (stale,) = [shown(e.value) for e in app.error]
    assert stale.startswith("Version 2 was saved by other@example.com at ") and stale.endswith("reload it and apply your changes again.")
    assert latest_version(store) == 2

    monkeypatch.setenv("DEV_USER_IS_ADMIN", "false")
    st.cache_resource.clear()
    refused = open_page(AppTest.from_file(APP, default_timeout=60))
    assert [e.value for e in refused.error] == ["This page is for admins. Ask an admin if you need access."]
    assert not refused.button and not refused.text_area


def test_review_shows_the_active_versions_fields_and_each_items_version(page_env):
    """Review's fields and filters follow the active taxonomy (a `sleeve` field once v1 is active); the
    one-item view says which version each item was tagged with."""
    from pipeline.models import AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult
    from pipeline.service import open_store
    from pipeline.settings import Settings

    store = open_store(Settings())
    save_taxonomy(store, json.dumps(taxonomy()), "ana", based_on=0)
    activate_taxonomy(store, 1, "ana")
    record = store.create_batch("shirts", "test", IngestReport(items=[
        SourceItem(source=f"s{i}.jpg", ref=SourceRef("file", f"/nowhere/{i}.jpg"), sku=f"SKU-{i}") for i in range(2)]))
    checks = PhotoChecks(800, 600, False, 400.0, False, 180.0, False, False, True, True, ["red"])
    for index, (item, version) in enumerate(zip(store.list_items(record.id), (1, 0))):
        photo = page_env / f"p{index}.jpg"
        photo.write_bytes(jpeg_bytes(seed=index + 1))
        attributes = [AttributeValue("category", "shirt", "shirt", True), AttributeValue("color", "crimson", "red", True)]
        if version == 1:
            attributes.append(AttributeValue("sleeve", "long sleeves", "long", True))
        store.save_result(item.id, ItemResult(
            content_key=f"{index:064x}", image_path=str(photo), checks=checks, word_count=3, taxonomy_version=version,
            caption=CaptionResult(caption="a shirt", answers={}, model_id="test"), attributes=attributes,
            summary=SummaryResult(summary="A red shirt.", title="Shirt", tags=[], attributes={}, model="offline", offline=True)), [])

    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("pages/review.py").run()
    assert not app.exception, app.exception
    captions = [shown(c.value) for c in app.caption]
    assert "Tagged with attribute taxonomy version 1" in captions
    first, second = store.list_items(record.id)
    (sleeve,) = [box for box in app.selectbox if box.label == "sleeve"]  # the v1 attribute is a field
    assert sleeve.value == "long" and sleeve.options == ["short", "long", "sleeveless"]
    app.selectbox(key="focus-item").set_value(second.id).run()
    assert "Tagged with attribute taxonomy version 0 (the default)" in [shown(c.value) for c in app.caption]


def test_page_refuses_deep_nesting_and_text_that_is_not_unicode_with_one_sentence_and_no_traceback(page_env):
    """Pasted into one attribute's editor or the whole taxonomy: 200 KB of `[[[…]]]` (RecursionError when parsed)
    and a `"\\ud800"` escape (UnicodeEncodeError once the editor re-dumps it) each give one sentence; Save is disabled."""
    app = open_page(AppTest.from_file(APP, default_timeout=120))
    app.selectbox(key="taxonomy-part").set_value("color").run()
    color = json.loads(app.text_area[0].value)
    app.text_area[0].set_value(DEEP).run()
    assert not app.exception, app.exception
    assert [shown(e.value) for e in app.error] == [
        "The attribute is nested too deeply: at most 20 levels of brackets are read (a taxonomy needs 4)."]
    assert app.button(key="taxonomy-save").disabled

    color["vocabulary"].append("red\ud800")
    app.text_area[0].set_value(json.dumps(color)).run()  # ASCII JSON: the surrogate arrives escaped
    assert not app.exception, app.exception
    assert [shown(e.value) for e in app.error] == [
        'Attribute "color": "vocabulary" holds text that is not valid Unicode (an unpaired surrogate such as \\ud800); '
        "remove that character."]
    assert app.button(key="taxonomy-save").disabled

    app.selectbox(key="taxonomy-part").set_value("(whole taxonomy)").run()
    app.text_area[0].set_value(DEEP).run()
    assert not app.exception, app.exception
    assert [shown(e.value) for e in app.error] == [
        "The taxonomy is nested too deeply: at most 20 levels of brackets are read (a taxonomy needs 4)."]


def test_page_saves_an_unedited_taxonomy_at_the_size_limit_whole_or_one_attribute(page_env):
    """The editor shows indented JSON, the stored form: a version at the limit saves again unedited, from the whole
    document and from one attribute's editor."""
    from pipeline.service import open_store
    from pipeline.settings import Settings

    store = open_store(Settings())
    save_taxonomy(store, json.dumps(sized(MAX_TAXONOMY_BYTES)), "ana@example.com", based_on=0)
    app = open_page(AppTest.from_file(APP, default_timeout=120))
    assert app.selectbox(key="taxonomy-start").value == 1 and not app.error
    app.button(key="taxonomy-save").click().run()
    assert not app.exception and not app.error, app.error
    assert [shown(s.value) for s in app.success] == ["Saved as version 2. It is not active yet: activate it below."]

    app.selectbox(key="taxonomy-start").set_value(1).run()
    app.selectbox(key="taxonomy-part").set_value("color").run()
    app.button(key="taxonomy-save").click().run()
    assert not app.exception and not app.error, app.error
    assert [shown(s.value) for s in app.success] == ["Saved as version 3. It is not active yet: activate it below."]
    assert store.get_taxonomy(3).document == store.get_taxonomy(2).document == store.get_taxonomy(1).document
    assert len(store.get_taxonomy(3).document.encode("utf-8")) == MAX_TAXONOMY_BYTES


def test_a_taxonomy_asks_at_most_as_many_questions_as_the_endpoint_answers():
    """Every attribute is a question in each caption request and the SageMaker handler refuses more than
    MAX_QUESTIONS (16): a 17-attribute taxonomy would fail every photo there, so it is refused when saved."""
    import re

    from pipeline.admin.taxonomy import parse_taxonomy

    handler = (Path(__file__).resolve().parent.parent / "sagemaker" / "code" / "inference.py").read_text()
    max_questions = int(re.search(r"^MAX_QUESTIONS = (\d+)$", handler, flags=re.M).group(1))

    def document(count: int) -> str:
        return json.dumps({"attributes": [{"name": f"a{i}", "question": "Which?", "prefix": "it is", "vocabulary": ["x", "y"],
                                           "synonyms": {}} for i in range(count)]})

    assert len(parse_taxonomy(document(max_questions)).attributes) == max_questions
    with pytest.raises(TaxonomyError, match=f"at most {max_questions} are allowed"):
        parse_taxonomy(document(max_questions + 1))
