"""SEO and accessibility fields (issue 19): seo_title (<= 70 characters), meta_description (<= 160) and alt_text
(<= 125, what the photo shows, no marketing). Held on every path: the offline template, the real-time OpenAI path and
the Batch API path through the real `openai` client against tests/support/servers.py (an answer over a limit gets the
corrective request, then is cut at a word boundary), a person's edit in Review (refused on save with a sentence, never
cut), Regenerate; kept in both stores (an older SQLite file gains the columns), exported in the report and Shopify."""

from __future__ import annotations

import copy
import csv
import io
import json
import sqlite3
from pathlib import Path

import openai
import pytest

from pipeline.admin.costs import Assumptions
from pipeline.attributes import load_attribute_schema
from pipeline.batches.export import export_csv, export_shopify_csv, report_columns
from pipeline.batches.feeds import WOO_ALT_TEXT_NOTICE, google_merchant_rows, woocommerce_rows
from pipeline.batches.review import regenerate_summary, review_item, seo_problems
from pipeline.batches.runner import run_batch
from pipeline.errors import BadInputError
from pipeline.models import (
    AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryRequest, SummaryResult,
)
from pipeline.service import build_stages
from pipeline.store.sqlite_store import SqliteStore
from pipeline.summarizers.offline import OfflineSummarizer, seo_fields
from pipeline.summarizers.openai_summarizer import SEO_PROMPT, SYSTEM_PROMPT, OpenAISummarizer
from pipeline.wordlimit import SEO_LIMITS, cut_to_characters, marketing_words_in, seo_problem, without_marketing
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_attribute_schema()
SEO = {"seo_title": "Red cotton crew-neck tee", "meta_description": "A red cotton tee with a crew neck, short sleeves and a relaxed fit.",
       "alt_text": "Red cotton t-shirt with a crew neck laid flat on a white background"}
LONG = {"seo_title": "Red cotton crew-neck tee with short sleeves and a relaxed fit for every day wear",  # 80
        "meta_description": " ".join(["A red cotton tee with a crew neck."] * 6),  # 203
        "alt_text": " ".join(["A red cotton t-shirt with a crew neck on a white background."] * 3)}  # 182


def answer(**seo) -> dict:
    return {"title": "Red tee", "summary": "A red cotton tee with a crew neck.", "tags": ["tee"],
            "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None}, **(SEO | seo)}


def within_limits(values) -> bool:
    return all(len(getattr(values, name)) <= limit for name, limit in SEO_LIMITS.items())


# --- the rules ------------------------------------------------------------------------------------------------
def test_the_limits_and_the_cut_at_a_word_boundary():
    assert SEO_LIMITS == {"seo_title": 70, "meta_description": 160, "alt_text": 125}
    assert cut_to_characters("Red cotton tee with a crew neck", 14) == "Red cotton tee"  # whole words only
    assert cut_to_characters("Red cotton, tee", 11) == "Red cotton"  # no dangling comma
    assert cut_to_characters("x" * 90, 70) == "x" * 70  # one word longer than the limit: cut at the limit
    assert cut_to_characters("  fits   as is ", 70) == "fits as is"
    for name, limit in SEO_LIMITS.items():
        assert seo_problem(name, "a" * limit) is None
        assert seo_problem(name, "a" * (limit + 1)).endswith(f"characters; the limit is {limit}. Shorten it and save again.")


def test_alt_text_refuses_marketing_prices_and_calls_to_action_but_not_plain_description():
    assert marketing_words_in("Buy now: the best red tee, only $19.99 - shop today") == ["buy", "best", "$19.99", "shop"]
    assert marketing_words_in("Red tee for 20 EUR, add to cart") == ["20 eur", "add to cart"]
    assert without_marketing("Buy: a red tee, on sale.") == "a red tee."
    assert marketing_words_in("A red cotton t-shirt with a crew neck on a wooden hanger") == []
    assert marketing_words_in("A bestowed ornament on a shopfront shelf") == []  # whole words only
    assert seo_problem("alt_text", "Best red tee") == ("The alt text says 'best': alt text describes what the photo shows, "
                                                       "without marketing, prices or calls to action. Rewrite it and save again.")
    assert seo_problem("seo_title", "Best red tee") is None  # the marketing rule is alt text's


# --- offline --------------------------------------------------------------------------------------------------
def test_the_offline_template_fills_each_field_within_its_limit_and_describes_the_photo():
    known = [AttributeValue("color", "red", "red", True), AttributeValue("material", "cotton", "cotton", True)]
    request = SummaryRequest(caption="a red cotton t-shirt on sale, buy now for $20 at the best price " + "on a hanger " * 12,
                             attributes=known, checks=None, hints={"title": "Red tee " + "classic " * 12, "brand": "Acme",
                                                                   "notes": "Soft jersey. " * 20})
    offline = OfflineSummarizer(SCHEMA)
    result = offline.summarize(request)
    assert within_limits(result) and all(getattr(result, name) for name in SEO_LIMITS)
    assert marketing_words_in(result.alt_text) == []
    assert result.alt_text.startswith("A red cotton t-shirt, now for at the price on a hanger")  # the caption, marketing out
    assert result.meta_description == cut_to_characters(result.summary, 160)
    assert offline.summarize(request) == result  # deterministic
    short = offline.summarize(SummaryRequest(caption="", attributes=known, checks=None, hints={"brand": "Acme"}))
    assert (short.seo_title, short.alt_text) == ("Red cotton | Acme", "Photo of a red cotton")


# --- real time, through the real openai client --------------------------------------------------------------------
@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        fake.state.default = Reply(content=answer(), prompt_tokens=300, completion_tokens=120)
        yield fake


def summarizer_for(server, seo_fields_by: str = "model") -> OpenAISummarizer:
    """SEO_FIELDS_BY=model: the model writes the fields (the tests of this section); `template`: see further down."""
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=10)
    return OpenAISummarizer(client, SCHEMA, max_retries=0, deadline_s=30, seo_fields_by=seo_fields_by)


def request() -> SummaryRequest:
    return SummaryRequest(caption="a red t-shirt", attributes=[], checks=None, hints={})


def test_the_structured_output_requires_the_three_fields_with_their_rules(server):
    result = summarizer_for(server).summarize(request())
    assert (result.seo_title, result.meta_description, result.alt_text) == (SEO["seo_title"], SEO["meta_description"], SEO["alt_text"])
    (body,) = server.state.requests
    schema = body["response_format"]["json_schema"]["schema"]
    assert {"seo_title", "meta_description", "alt_text"} <= set(schema["required"])
    assert "At most 125 characters" in schema["properties"]["alt_text"]["description"]
    prompt = body["messages"][0]["content"]
    assert "SEO title: at most 70 characters" in prompt and "Meta description: at most 160 characters" in prompt
    assert 'Alt text: at most 125 characters describing what the photo shows' in prompt and 'no calls to action such as "buy"' in prompt


@pytest.mark.parametrize("name", list(SEO_LIMITS))
def test_an_answer_over_a_limit_gets_the_corrective_request_then_is_cut_at_a_word_boundary(server, name):
    server.state.default = Reply(content=answer(**{name: LONG[name]}))
    result = summarizer_for(server).summarize(request())
    assert len(server.state.requests) == 2  # the corrective request, as for an over-long summary
    asked = server.state.requests[1]["messages"][-1]["content"]
    assert f"The {name} has {len(LONG[name])} characters. Rewrite it in at most {SEO_LIMITS[name]} characters." in asked
    text = getattr(result, name)
    assert text == cut_to_characters(LONG[name], SEO_LIMITS[name]) and len(text) <= SEO_LIMITS[name]
    assert LONG[name].startswith(text) and LONG[name][len(text)] in " ,."  # whole words
    assert within_limits(result)


def test_a_corrected_answer_within_the_limits_is_kept(server):
    server.state.script = [Reply(content=answer(**LONG)), Reply(content=answer())]
    result = summarizer_for(server).summarize(request())
    assert (result.seo_title, result.meta_description, result.alt_text) == (SEO["seo_title"], SEO["meta_description"], SEO["alt_text"])


def test_marketing_in_the_alt_text_is_asked_again_and_taken_out_if_it_stays(server):
    server.state.script = [Reply(content=answer(alt_text="Buy this red tee now")), Reply(content=answer())]
    assert summarizer_for(server).summarize(request()).alt_text == SEO["alt_text"]
    assert "The alt_text must describe what the photo shows, without buy" in server.state.requests[1]["messages"][-1]["content"]
    server.state.requests.clear()
    server.state.default = Reply(content=answer(alt_text="Best red cotton tee, only $19.99, shop now"))
    result = summarizer_for(server).summarize(request())
    assert len(server.state.requests) == 2
    assert marketing_words_in(result.alt_text) == [] and result.alt_text == "red cotton tee, only, now"


# --- a batch: real time and Batch API, stored in SQLite --------------------------------------------------------
def new_batch(store, tmp_path: Path, count: int = 2):
    items = []
    for number in range(count):
        path = tmp_path / f"p{number}.jpg"
        path.write_bytes(jpeg_bytes(size=(200, 160), seed=number + 1))
        items.append(SourceItem(source=path.name, ref=SourceRef("file", str(path)), sku=f"SKU-{number}"))
    return store.create_batch("seo", "ann", IngestReport(items=items))


@pytest.mark.parametrize("cheapest", [False, True], ids=["real-time", "batch-api"])
def test_a_batch_keeps_each_field_within_its_limit_on_both_openai_paths(make_settings, local_captioner, server, tmp_path, cheapest):
    server.state.default = Reply(content=answer(**LONG))
    stages = build_stages(make_settings(summarizer="openai", openai_api_key="sk-test-1", openai_base_url=server.base_url,
                                        openai_batch_min_items=2, openai_max_retries=0, seo_fields_by="model"), captioner=local_captioner)
    stages.batch_summarizer.wait = lambda cancel, seconds: False
    batch = new_batch(stages.store, tmp_path)
    progress = run_batch(stages, batch.id, concurrency=2, cheapest=cheapest)
    assert (progress.ok, progress.failed) == (2, 0)
    if cheapest:
        (create,) = server.state.batch_creates
        lines = [json.loads(line) for line in server.state.files[create["input_file_id"]]["content"].decode().splitlines()]
        assert len(lines) == 2 and all({"seo_title", "meta_description", "alt_text"}
                                       <= set(line["body"]["response_format"]["json_schema"]["schema"]["required"]) for line in lines)
        assert all(line["body"]["messages"][0]["content"] == SYSTEM_PROMPT + "\n" + SEO_PROMPT for line in lines)
    items = stages.store.list_items(batch.id)
    assert [(i.seo_title, i.meta_description, i.alt_text) for i in items] == \
        [tuple(cut_to_characters(LONG[name], limit) for name, limit in SEO_LIMITS.items())] * 2


def test_the_offline_summarizer_fills_the_fields_of_a_batch(stages, tmp_path):
    batch = new_batch(stages.store, tmp_path, count=1)
    assert run_batch(stages, batch.id, concurrency=1).ok == 1
    (item,) = stages.store.list_items(batch.id)
    assert item.seo_title and item.meta_description and item.alt_text and within_limits(item)


# --- SEO_FIELDS_BY=template (the default): the model is not asked, the offline template fills the fields ---------------
PLAIN = {name: value for name, value in answer().items() if name not in SEO_LIMITS}  # an answer to a request without them


def test_by_default_the_model_is_not_asked_and_the_template_fills_the_fields_without_marketing(server):
    server.state.default = Reply(content=PLAIN)
    known = [AttributeValue("color", "red", "red", True), AttributeValue("material", "cotton", "cotton", True)]
    marketing = SummaryRequest(caption="a red cotton t-shirt on sale, buy now for $20 at the best price, on a wooden hanger",
                               attributes=known, checks=None, hints={"brand": "Acme"})
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=10)
    result = OpenAISummarizer(client, SCHEMA, max_retries=0, deadline_s=30).summarize(marketing)  # SEO_FIELDS_BY's default
    (body,) = server.state.requests  # no corrective request: nothing of the SEO rules is the model's to keep
    schema = body["response_format"]["json_schema"]["schema"]
    assert not set(SEO_LIMITS) & (set(schema["properties"]) | set(schema["required"]))
    assert body["messages"][0]["content"] == SYSTEM_PROMPT and "SEO title" not in json.dumps(body)
    assert (result.seo_title, result.meta_description, result.alt_text) == (
        "Red tee | Acme", "A red cotton tee with a crew neck.", "A red cotton t-shirt, now for at the price, on a wooden hanger")
    assert (result.seo_title, result.meta_description, result.alt_text) == tuple(  # the offline summarizer's template
        seo_fields(result.title, result.summary, marketing.caption, {"color": "red", "material": "cotton"}, "Acme").values())
    assert within_limits(result) and marketing_words_in(result.alt_text) == []
    server.state.default = Reply(content=answer(alt_text="Buy the best red tee, $19.99"))  # a server answering them anyway
    assert summarizer_for(server, "template").summarize(marketing).alt_text == result.alt_text  # not used: the template's


@pytest.mark.parametrize("cheapest", [False, True], ids=["real-time", "batch-api"])
def test_by_default_a_batch_on_both_openai_paths_stores_template_fields_within_their_limits(make_settings, local_captioner, server,
                                                                                             tmp_path, cheapest):
    server.state.default = Reply(content=PLAIN)
    stages = build_stages(make_settings(summarizer="openai", openai_api_key="sk-test-1", openai_base_url=server.base_url,
                                        openai_batch_min_items=2, openai_max_retries=0), captioner=local_captioner)
    stages.batch_summarizer.wait = lambda cancel, seconds: False
    batch = new_batch(stages.store, tmp_path)
    assert run_batch(stages, batch.id, concurrency=2, cheapest=cheapest).ok == 2
    bodies = list(server.state.requests)
    if cheapest:
        (create,) = server.state.batch_creates
        bodies = [json.loads(line)["body"] for line in server.state.files[create["input_file_id"]]["content"].decode().splitlines()]
    assert len(bodies) == 2 and all(not set(SEO_LIMITS) & set(body["response_format"]["json_schema"]["schema"]["properties"])
                                    and body["messages"][0]["content"] == SYSTEM_PROMPT for body in bodies)
    for item in stages.store.list_items(batch.id):
        known = {a.name: a.value for a in item.attributes if a.in_vocab and a.value}
        assert (item.seo_title, item.meta_description, item.alt_text) == tuple(seo_fields(item.title, item.summary, item.caption, known).values())
        assert all(getattr(item, name) for name in SEO_LIMITS) and within_limits(item) and marketing_words_in(item.alt_text) == []


def test_regenerate_by_default_fills_the_fields_from_the_template(tmp_path, server):
    store = SqliteStore(tmp_path / "t.db")
    item = tagged(store, tmp_path, seo_title="Old title", meta_description="Old.", alt_text="Old photo")
    server.state.default = Reply(content=PLAIN)
    regenerate_summary(store, summarizer_for(server, "template"), item.id, "rev")
    again = store.get_item(item.id)
    assert (again.seo_title, again.meta_description, again.alt_text) == ("Red tee", "A red cotton tee with a crew neck.", "A tee")
    assert "seo_title" not in server.state.requests[0]["response_format"]["json_schema"]["schema"]["properties"]


def test_what_model_adds_to_each_request_is_what_the_estimator_prices_and_nothing_else_differs(server):
    """The estimator's seo_input/output_tokens_per_image, measured: one request each way through the openai client, the
    characters SEO_FIELDS_BY=model adds to the system prompt and to the response schema as sent (compact JSON), at ~4
    characters a token; the answer's three fields at their limits with their keys (an upper bound)."""
    for by in ("template", "model"):
        summarizer_for(server, by).summarize(request())
    template, model = server.state.requests

    def compact(value) -> str:  # as the openai client serializes a request body
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    prompt = len(model["messages"][0]["content"]) - len(template["messages"][0]["content"])
    schema = len(compact(model["response_format"])) - len(compact(template["response_format"]))
    assert (prompt, schema) == (371, 425)
    assert Assumptions().seo_input_tokens_per_image == round((prompt + schema) / 4) == 199
    fields = len(compact({name: "x" * limit for name, limit in SEO_LIMITS.items()})) - 1  # without {}, with the comma before
    assert Assumptions().seo_output_tokens_per_image == round(fields / 4) == 102
    # nothing else differs: the template request is the model's without SEO_PROMPT and the three schema properties
    assert model["messages"][0]["content"] == template["messages"][0]["content"] + "\n" + SEO_PROMPT
    stripped = copy.deepcopy(model["response_format"])
    properties = stripped["json_schema"]["schema"]
    for name in SEO_LIMITS:
        del properties["properties"][name]
        properties["required"].remove(name)
    assert compact(stripped) == compact(template["response_format"])
    assert compact({**model, "messages": None, "response_format": None}) == compact({**template, "messages": None, "response_format": None})
    assert model["messages"][1:] == template["messages"][1:]


# --- stores, Review, Regenerate -----------------------------------------------------------------------------------
def tagged(store, tmp_path: Path, **seo):
    batch = new_batch(store, tmp_path, count=1)
    (item,) = store.list_items(batch.id)
    assert (item.seo_title, item.meta_description, item.alt_text) == ("", "", "")  # a row without them reads as empty
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    store.save_result(item.id, ItemResult(content_key="k" * 64, image_path="p", caption=CaptionResult("a tee", {}, "m"), attributes=[],
                                          checks=checks, word_count=2,
                                          summary=SummaryResult("A tee.", "Tee", [], {}, "gpt-4o", False, **(SEO | seo))), [])
    return store.get_item(item.id)


def test_both_stores_keep_edit_and_refuse_over_the_limit(store, tmp_path):
    item = tagged(store, tmp_path)
    assert (item.seo_title, item.meta_description, item.alt_text) == (SEO["seo_title"], SEO["meta_description"], SEO["alt_text"])
    report = review_item(store, item.id, {"SEO title": "Red tee | Acme", "Alt text": "A red tee on a hanger"}, None, SCHEMA, "rev",
                         {item.id: item.version})
    assert report.ok and len(report.saved) == 2
    saved = store.get_item(item.id)
    assert (saved.seo_title, saved.alt_text, saved.meta_description) == ("Red tee | Acme", "A red tee on a hanger", SEO["meta_description"])
    assert sorted((e.field, e.old, e.who) for e in store.edits(item.id)) == [
        ("alt_text", SEO["alt_text"], "rev"), ("seo_title", SEO["seo_title"], "rev")]

    too_long = {"SEO title": "t" * 71, "Meta description": "m" * 161, "Alt text": "a" * 126}
    refused = review_item(store, item.id, too_long, "approved", SCHEMA, "rev", {item.id: saved.version})
    assert refused.refused == [
        "#1 SKU-0: The seo title has 71 characters; the limit is 70. Shorten it and save again.",
        "#1 SKU-0: The meta description has 161 characters; the limit is 160. Shorten it and save again.",
        "#1 SKU-0: The alt text has 126 characters; the limit is 125. Shorten it and save again.",
    ]
    assert [k["Your value"] for k in refused.kept] == list(too_long.values())  # the typed text is kept for the person, not cut
    after = store.get_item(item.id)
    assert (after.seo_title, after.meta_description, after.alt_text, after.review_status) == \
        ("Red tee | Acme", SEO["meta_description"], "A red tee on a hanger", "pending")  # nothing approved with a change missing
    marketing = review_item(store, item.id, {"Alt text": "Shop the best red tee"}, None, SCHEMA, "rev", {item.id: after.version})
    assert marketing.refused == ["#1 SKU-0: The alt text says 'shop', 'best': alt text describes what the photo shows, without "
                                 "marketing, prices or calls to action. Rewrite it and save again."]
    with pytest.raises(BadInputError, match="limit is 70"):
        store.edit_item(item.id, "seo_title", "x" * 71, "rev")
    assert seo_problems({item.id: {"SEO title": "x" * 71, "Summary": "ok"}}, {item.id: "#1"}) == [
        "#1: The seo title has 71 characters; the limit is 70. Shorten it and save again."]


def test_an_older_sqlite_file_gains_the_columns_and_reads_them_as_empty(tmp_path):
    path = tmp_path / "old.db"
    batch = new_batch(SqliteStore(path), tmp_path, count=1)
    with sqlite3.connect(path) as db:  # as a file written before issue 19's SEO fields, with an item in it
        for name in SEO_LIMITS:
            db.execute(f"ALTER TABLE items DROP COLUMN {name}")
    store = SqliteStore(path)  # opened by the new release: migrated in place
    with sqlite3.connect(path) as db:
        assert set(SEO_LIMITS) <= {row[1] for row in db.execute("PRAGMA table_info(items)")}
    (item,) = store.list_items(batch.id)
    assert (item.seo_title, item.meta_description, item.alt_text) == ("", "", "")
    edit = store.edit_item(item.id, "alt_text", "A red tee", "rev")
    assert (edit.old, edit.new) == ("", "A red tee") and store.get_item(item.id).alt_text == "A red tee"


def test_regenerate_rewrites_the_fields_within_their_limits(tmp_path, server):
    store = SqliteStore(tmp_path / "t.db")
    item = tagged(store, tmp_path, seo_title="Old title", meta_description="Old.", alt_text="Old photo")
    server.state.default = Reply(content=answer(**LONG))
    regenerate_summary(store, summarizer_for(server), item.id, "rev")
    again = store.get_item(item.id)
    assert (again.seo_title, again.meta_description, again.alt_text) == \
        tuple(cut_to_characters(LONG[name], limit) for name, limit in SEO_LIMITS.items())
    assert {e.field for e in store.edits(item.id)} == {"summary", "seo_title", "meta_description", "alt_text"}
    assert all(e.who == "rev (regenerated)" for e in store.edits(item.id))
    offline = tagged(store, tmp_path, seo_title="", meta_description="", alt_text="")
    regenerate_summary(store, OfflineSummarizer(SCHEMA), offline.id, "rev")
    filled = store.get_item(offline.id)
    assert filled.seo_title and filled.meta_description and filled.alt_text == "A tee" and within_limits(filled)


# --- exports --------------------------------------------------------------------------------------------------
def test_the_report_shopify_and_feeds_carry_the_fields_where_their_format_has_a_place(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    item = tagged(store, tmp_path, seo_title="=HYPERLINK(1)")
    report = list(csv.DictReader(io.StringIO(export_csv([item], SCHEMA).decode("utf-8"))))
    assert list(report[0])[-3:] == ["seo_title", "meta_description", "alt_text"] == report_columns(SCHEMA)[-3:]
    assert (report[0]["seo_title"], report[0]["meta_description"], report[0]["alt_text"]) == \
        ("'=HYPERLINK(1)", SEO["meta_description"], SEO["alt_text"])  # formula-escaped like every cell
    (shopify,) = csv.DictReader(io.StringIO(export_shopify_csv([item]).decode("utf-8")))
    assert (shopify["SEO Title"], shopify["SEO Description"], shopify["Image Alt Text"], shopify["Title"]) == \
        ("'=HYPERLINK(1)", SEO["meta_description"], SEO["alt_text"], "Tee")
    rows, _ = google_merchant_rows([item], SCHEMA)
    assert rows[0]["title"] == "Tee"  # Merchant Center's title stays the product title, not the SEO title
    _, notices = woocommerce_rows([item], SCHEMA)
    assert WOO_ALT_TEXT_NOTICE in notices
    _, notices = woocommerce_rows([tagged(store, tmp_path, alt_text="")], SCHEMA)
    assert WOO_ALT_TEXT_NOTICE not in notices


# --- Review page: the one-item view ------------------------------------------------------------------------------
def test_review_one_item_view_shows_counters_and_refuses_an_over_long_alt_text_with_a_sentence(monkeypatch, tmp_path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.text import shown
    from pipeline.settings import Settings

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    try:
        store = SqliteStore(Settings().db_path)
        item = tagged(store, tmp_path, seo_title="**Red** <b>tee</b>")
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
        app.switch_page("pages/review.py").run()
        assert not app.exception, app.exception
        fields = {t.label: t for t in app.text_input}
        assert fields["SEO title"].value == "**Red** <b>tee</b>"  # as stored, literally
        captions = [shown(c.value) for c in app.caption]
        assert f"{len('**Red** <b>tee</b>')} / 70 characters" in captions and f"{len(SEO['alt_text'])} / 125 characters" in captions
        fields["Alt text"].set_value("a" * 126).run()
        assert "126 / 125 characters — too long, shorten before saving" in [shown(c.value) for c in app.caption]
        fields = {t.label: t for t in app.text_input}
        fields["Meta description"].set_value("A red tee.").run()
        [save] = [b for b in app.button if b.label == "Save"]
        save.click().run()
        assert not app.exception, app.exception
        errors = [shown(e.value) for e in app.error]
        assert "#1 SKU-0: The alt text has 126 characters; the limit is 125. Shorten it and save again." in errors, errors
        saved = store.get_item(item.id)
        assert (saved.alt_text, saved.meta_description) == (SEO["alt_text"], "A red tee.")  # refused, not cut; the other saved
    finally:
        st.cache_resource.clear()


def test_review_grid_shows_the_fields_only_under_all_columns_and_refuses_marketing_alt_text(monkeypatch, tmp_path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.text import shown
    from pipeline.settings import Settings

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    try:
        store = SqliteStore(Settings().db_path)
        item = tagged(store, tmp_path)
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
        app.switch_page("pages/review.py").run()
        assert not app.exception, app.exception
        compact = list(app.data_editor[0].proto.column_order)
        assert not {"SEO title", "Meta description", "Alt text"} & set(compact)  # the 1366 px view is unchanged
        app.toggle(key="grid-all-columns").set_value(True).run()
        editor = app.data_editor[0]
        assert list(editor.proto.column_order)[-3:] == ["SEO title", "Meta description", "Alt text"]
        assert editor.value["Alt text"].iloc[0] == SEO["alt_text"]
        key = app.session_state["grid-shown"]
        app.session_state[key] = {"edited_rows": {0: {"Alt text": "Buy the best red tee"}}, "added_rows": [], "deleted_rows": []}
        app.run()
        sentence = ("#1 SKU-0: The alt text says 'buy', 'best': alt text describes what the photo shows, without marketing, "
                    "prices or calls to action. Rewrite it and save again.")
        assert sentence in [shown(w.value) for w in app.warning]  # said before saving
        [save] = [b for b in app.button if b.label == "Save changes"]
        save.click().run()
        assert not app.exception, app.exception
        assert sentence in [shown(e.value) for e in app.error]
        assert store.get_item(item.id).alt_text == SEO["alt_text"]
    finally:
        st.cache_resource.clear()
