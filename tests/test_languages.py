"""Summaries in several languages (issue 19): the limit per language (words; characters for Japanese and Chinese),
one summary per language through the real `openai` client against tests/support/servers.py (real time and Batch
API), stored in both stores, edited in Review with the version check, exported, refused by the offline summarizer,
and priced by the estimator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import openai
import pytest
from moto import mock_aws

from pipeline.admin.brand import check_languages_supported, parse_languages
from pipeline.admin.costs import Assumptions, PriceTable, summary_costs
from pipeline.attributes import load_attribute_schema
from pipeline.batches.export import export_csv, report_columns
from pipeline.batches.review import review_item
from pipeline.batches.runner import run_batch
from pipeline.errors import BadInputError, ConfigError
from pipeline.models import CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryRequest, SummaryResult
from pipeline.service import build_stages
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore
from pipeline.summarizers.offline import OfflineSummarizer
from pipeline.summarizers.openai_summarizer import OpenAISummarizer
from pipeline.wordlimit import character_budget, count_characters, count_words, limit_text, trim_to_language_limit, within_limit
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_attribute_schema()
JA = "赤い綿のTシャツです。丸首で柔らかく、毎日着られます。"  # 26 characters
JA_LONG = "赤い綿のTシャツです。" * 14  # 154 characters > 125
DE = "Ein rotes T-Shirt aus Baumwolle mit Rundhalsausschnitt."
DE_LONG = " ".join(["Ein"] + ["rotes"] * 60 + ["Shirt."])


def answer(de: str = DE, ja: str = JA) -> dict:
    return {"title": "Red tee", "summary": "A red cotton tee with a crew neck.", "tags": ["tee"],
            "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None},
            "summaries": {"de": de, "ja": ja}}


# --- the rule ------------------------------------------------------------------------------------------------
def test_japanese_and_chinese_are_held_to_a_character_budget_from_the_published_ratios():
    assert (character_budget("ja"), character_budget("zh"), character_budget("de"), character_budget("ko")) == (125, 75, None, None)
    assert (limit_text("ja"), limit_text("zh"), limit_text("de")) == ("125 characters", "75 characters", "50 words")
    assert count_words(JA_LONG) == 1  # why words cannot be the unit: no spaces
    assert count_characters("赤い シャツ。") == 6  # spaces are not characters of the text
    assert within_limit("あ" * 125, "ja") and not within_limit("あ" * 126, "ja")
    assert within_limit("中" * 75, "zh") and not within_limit("中" * 76, "zh")
    assert within_limit(" ".join(["wort"] * 50), "de") and not within_limit(" ".join(["wort"] * 51), "de")
    assert within_limit(" ".join(["단어"] * 50), "ko") and not within_limit(" ".join(["단어"] * 51), "ko")  # Korean has spaces


def test_trimming_keeps_whole_sentences_within_the_budget():
    trimmed = trim_to_language_limit(JA_LONG, "ja")
    assert trimmed == "赤い綿のTシャツです。" * 11 and count_characters(trimmed) == 121  # 12 sentences would be 132
    one_long = "あ" * 300
    cut = trim_to_language_limit(one_long, "ja")
    assert cut == "あ" * 124 + "。" and count_characters(cut) == 125
    assert trim_to_language_limit(JA, "ja") == JA
    assert count_words(trim_to_language_limit(DE_LONG, "de")) <= 50


def test_languages_are_parsed_with_one_sentence_for_an_unknown_code():
    assert parse_languages("en, de,JA,de") == ("de", "ja")  # English is always written; order kept; no repeats
    assert parse_languages("") == ()
    with pytest.raises(BadInputError, match="^'th' is not a summary language offered here; use one of en, de,"):
        parse_languages("de,th")


# --- the summarizer ------------------------------------------------------------------------------------------
@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        fake.state.default = Reply(content=answer(), prompt_tokens=300, completion_tokens=120)
        yield fake


def summarizer_for(server) -> OpenAISummarizer:
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=10)
    return OpenAISummarizer(client, SCHEMA, max_retries=0, deadline_s=30)


def request(languages=("de", "ja")) -> SummaryRequest:
    return SummaryRequest(caption="a red t-shirt", attributes=[], checks=None, hints={}, languages=tuple(languages))


def test_one_summary_per_language_is_asked_for_and_returned_within_the_limit(server):
    result = summarizer_for(server).summarize(request())
    assert result.summaries == {"de": DE, "ja": JA} and result.summary == "A red cotton tee with a crew neck."
    (body,) = server.state.requests
    schema = body["response_format"]["json_schema"]["schema"]
    languages = schema["$defs"]["LanguageSummaries"]
    assert languages["required"] == ["de", "ja"] and "summaries" in schema["required"]
    assert "125 characters" in languages["properties"]["ja"]["description"]
    assert "Also write the summary in: German (de, at most 50 words), Japanese (ja, at most 125 characters)." in body["messages"][0]["content"]


def test_an_over_long_japanese_summary_gets_the_corrective_request_then_is_trimmed_at_a_sentence(server):
    server.state.default = Reply(content=answer(ja=JA_LONG))
    result = summarizer_for(server).summarize(request())
    assert len(server.state.requests) == 2
    assert "The ja summary is longer than 125 characters; shorten it." in server.state.requests[1]["messages"][-1]["content"]
    assert result.summaries["ja"] == "赤い綿のTシャツです。" * 11 and count_characters(result.summaries["ja"]) <= 125
    assert result.summaries["de"] == DE


def test_a_corrected_answer_within_the_limits_is_kept(server):
    server.state.script = [Reply(content=answer(de=DE_LONG)), Reply(content=answer())]
    result = summarizer_for(server).summarize(request())
    assert result.summaries == {"de": DE, "ja": JA} and len(server.state.requests) == 2


def test_without_languages_the_request_is_unchanged(server):
    server.state.default = Reply(content={k: v for k, v in answer().items() if k != "summaries"})
    result = summarizer_for(server).summarize(request(()))
    assert result.summaries == {}
    assert "summaries" not in server.state.requests[0]["response_format"]["json_schema"]["schema"]["properties"]
    assert "Also write" not in server.state.requests[0]["messages"][0]["content"]


def test_the_offline_summarizer_writes_english_only_and_is_refused_languages_up_front():
    offline = OfflineSummarizer(SCHEMA)
    assert offline.summarize(request()).summaries == {}  # no fake translation
    with pytest.raises(ConfigError) as refused:
        check_languages_supported(offline, ("de", "ja"))
    assert str(refused.value) == ("The offline summarizer writes English only; summaries in de, ja need SUMMARIZER=openai "
                                  "(or tag without --languages).")
    check_languages_supported(offline, ())  # English only: fine


def test_cli_tag_with_languages_and_the_offline_summarizer_is_one_sentence(tmp_path, tiny_model):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes(size=(64, 64), seed=1))
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
           "HF_HUB_OFFLINE": "1", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-m", "pipeline", "tag", str(photo), "--out", str(tmp_path / "r.csv"), "--languages", "en,de"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert (done.returncode, done.stderr.strip()) == (2, "error: The offline summarizer writes English only; summaries in de need "
                                                          "SUMMARIZER=openai (or tag without --languages).")
    assert not (tmp_path / "r.csv").exists()


# --- a batch: run, store, review, export ----------------------------------------------------------------------
def new_batch(store, tmp_path: Path, count: int = 2):
    items = []
    for number in range(count):
        path = tmp_path / f"p{number}.jpg"
        path.write_bytes(jpeg_bytes(size=(200, 160), seed=number + 1))
        items.append(SourceItem(source=path.name, ref=SourceRef("file", str(path)), sku=f"SKU-{number}"))
    return store.create_batch("langs", "ann", IngestReport(items=items))


@pytest.mark.parametrize("cheapest", [False, True], ids=["real-time", "batch-api"])
def test_a_batch_with_languages_stores_reviews_and_exports_each_summary(make_settings, local_captioner, server, tmp_path, cheapest):
    stages = build_stages(make_settings(summarizer="openai", openai_api_key="sk-test-1", openai_base_url=server.base_url,
                                        openai_batch_min_items=2, openai_max_retries=0), captioner=local_captioner)
    stages.batch_summarizer.wait = lambda cancel, seconds: False
    batch = new_batch(stages.store, tmp_path)
    stages.store.set_batch_languages(batch.id, parse_languages("en,de,ja"))
    progress = run_batch(stages, batch.id, concurrency=2, cheapest=cheapest)
    assert (progress.ok, progress.failed) == (2, 0)
    if cheapest:
        (create,) = server.state.batch_creates
        lines = [json.loads(line) for line in server.state.files[create["input_file_id"]]["content"].decode().splitlines()]
        bodies = [line["body"] for line in lines]
    else:
        bodies = server.state.requests
    assert len(bodies) == 2
    assert all(b["response_format"]["json_schema"]["schema"]["$defs"]["LanguageSummaries"]["required"] == ["de", "ja"] for b in bodies)
    items = stages.store.list_items(batch.id)
    assert [i.summaries for i in items] == [{"de": DE, "ja": JA}] * 2

    first, second = items
    ok = review_item(stages.store, first.id, {"Summary (ja)": "青いシャツ。"}, None, SCHEMA, "rev@example.com", {first.id: first.version})
    assert ok.ok and stages.store.get_item(first.id).summaries == {"de": DE, "ja": "青いシャツ。"}
    stale = review_item(stages.store, first.id, {"Summary (de)": "Alt."}, None, SCHEMA, "bob@example.com", {first.id: first.version})
    assert not stale.ok and "Not saved: changed by rev@example.com" in stale.refused[0]
    too_long = review_item(stages.store, second.id, {"Summary (ja)": "あ" * 126}, None, SCHEMA, "rev@example.com", {second.id: second.version})
    assert too_long.refused == ["#2 SKU-1: The ja summary has 126 characters; the limit is 125 characters. Shorten it and save again."]
    assert stages.store.get_item(second.id).summaries["ja"] == JA

    header = export_csv(stages.store.list_items(batch.id), SCHEMA).decode("utf-8").splitlines()[0].split(",")
    assert header == report_columns(SCHEMA) + ["summary_de", "summary_ja"]


def test_review_refuses_a_summary_in_a_language_the_batch_was_not_tagged_with(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    checks = PhotoChecks(10, 10, False, 1.0, False, 100.0, False, False, True, True, ["red"])
    tagged = {}
    for languages in (("de",), ()):
        batch = new_batch(store, tmp_path, count=1)
        store.set_batch_languages(batch.id, languages)
        (stored,) = store.list_items(batch.id)
        result = ItemResult(content_key=f"k{batch.id}", image_path="p", caption=CaptionResult("a tee", {}, "m"), attributes=[],
                            summary=SummaryResult("A tee.", "Tee", [], {}, "gpt-4o", False, summaries={c: DE for c in languages}),
                            checks=checks, word_count=2)
        assert store.save_result(stored.id, result, [])
        tagged[languages] = store.get_item(stored.id)

    german = tagged[("de",)]
    report = review_item(store, german.id, {"Summary (zh)": "一件红色T恤。"}, "approved", SCHEMA, "rev@example.com", {german.id: german.version})
    assert report.refused == [f"#1 SKU-0: Summary (zh): Not saved: batch {german.batch_id} was not tagged with zh summaries "
                              "(its summary languages are English, de)."]
    assert report.kept == [{"Item": "#1 SKU-0", "Field": "Summary (zh)", "Your value": "一件红色T恤。"}]
    after = store.get_item(german.id)
    assert after.summaries == {"de": DE} and after.review_status == "pending"  # nothing added, not approved with a change missing
    header = export_csv(store.list_items(german.batch_id), SCHEMA).decode("utf-8").splitlines()[0].split(",")
    assert "summary_zh" not in header and "summary_de" in header
    assert review_item(store, german.id, {"Summary (de)": "Kurz."}, None, SCHEMA, "rev@example.com").ok  # its own language saves

    english = tagged[()]
    report = review_item(store, english.id, {"Summary (ja)": "赤いTシャツ。"}, None, SCHEMA, "rev@example.com")
    assert report.refused == [f"#1 SKU-0: Summary (ja): Not saved: batch {english.batch_id} was not tagged with ja summaries "
                              "(it has English summaries only)."]
    assert store.get_item(english.id).summaries == {}


def test_dynamodb_keeps_and_edits_summaries_per_language(tmp_path):
    with mock_aws():
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "tagging-test")
        store.create_table()
        batch = new_batch(store, tmp_path, count=1)
        store.set_batch_languages(batch.id, ("de", "ja"))
        assert store.batch_languages(batch.id) == ["de", "ja"] and store.batch_languages(batch.id + 1) == []
        (item,) = store.list_items(batch.id)
        assert item.summaries == {}
        checks = PhotoChecks(10, 10, False, 1.0, False, 100.0, False, False, True, True, ["red"])
        result = ItemResult(content_key="k", image_path="p", caption=CaptionResult("a tee", {}, "m"), attributes=[],
                            summary=SummaryResult("A tee.", "Tee", [], {}, "gpt-4o", False, summaries={"de": DE, "ja": JA}),
                            checks=checks, word_count=2)
        assert store.save_result(item.id, result, [])
        saved = store.get_item(item.id)
        assert saved.summaries == {"de": DE, "ja": JA}
        edit = store.edit_item(item.id, "summary:de", "Kurz.", "rev", expected_version=saved.version)
        assert (edit.old, edit.new) == (DE, "Kurz.")
        assert store.get_item(item.id).summaries == {"de": "Kurz.", "ja": JA}
        with pytest.raises(BadInputError, match="The ja summary has 126 characters"):
            store.edit_item(item.id, "summary:ja", "あ" * 126, "rev")


def test_an_older_sqlite_file_gains_the_summaries_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    SqliteStore(path)
    with sqlite3.connect(path) as db:  # as a file written before issue 19
        db.execute("ALTER TABLE items DROP COLUMN summaries")
    store = SqliteStore(path)
    batch = new_batch(store, tmp_path, count=1)
    assert store.list_items(batch.id)[0].summaries == {}


# --- cost -----------------------------------------------------------------------------------------------------
def test_the_estimate_adds_tokens_per_extra_summary(tmp_path):
    prices = PriceTable.load()
    base = summary_costs(Assumptions(images_per_month=10_000), prices, batch=False)["openai"]
    two = summary_costs(Assumptions(images_per_month=10_000, extra_languages=2), prices, batch=False)["openai"]
    per_in = prices.usd("openai_input_per_million:gpt-4o")
    per_out = prices.usd("openai_output_per_million:gpt-4o")
    assert two - base == pytest.approx(10_000 * 2 * (80 * per_in + 100 * per_out) / 1e6)
    done = subprocess.run([sys.executable, "-m", "pipeline", "estimate", "--images-per-month", "10000", "--languages", "2", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    data = json.loads(done.stdout)
    assert data["assumptions"]["extra_languages"] == 2
    assert any(s["breakdown"].get("openai") == pytest.approx(round(two, 2), abs=0.01) for s in data["scenarios"])


# --- Review page: the one-item view shows and saves each language ------------------------------------------
def test_review_one_item_view_shows_and_saves_each_language_with_the_version_check(monkeypatch, tmp_path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.text import shown
    from pipeline.settings import Settings

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    store = SqliteStore(Settings().db_path)
    batch = new_batch(store, tmp_path, count=1)
    (item,) = store.list_items(batch.id)
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    store.save_result(item.id, ItemResult(content_key="k" * 64, image_path=str(tmp_path / "p0.jpg"), caption=CaptionResult("a tee", {}, "m"),
                                          attributes=[], checks=checks, word_count=2,
                                          summary=SummaryResult("A tee.", "Tee", [], {}, "gpt-4o", False,
                                                                summaries={"de": "**Ein** <b>Shirt</b>.", "ja": JA})), [])
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    app.switch_page("pages/review.py").run()
    assert not app.exception, app.exception
    fields = {t.label: t for t in app.text_area}
    assert fields["Summary (de)"].value == "**Ein** <b>Shirt</b>." and fields["Summary (ja)"].value == JA  # as stored, literally
    assert f"{len(JA)} / 125 characters" in [shown(c.value) for c in app.caption]
    store.edit_item(item.id, "summary:de", "Von jemand anderem.", "bob@example.com")  # someone else, meanwhile
    fields["Summary (ja)"].set_value("青いシャツ。").run()
    [save] = [b for b in app.button if b.label == "Save"]
    save.click().run()
    assert not app.exception, app.exception
    saved = store.get_item(item.id)
    # the item changed since the view showed it: nothing typed is written over bob's change blind (his text stays,
    # the typed ja is kept on screen, not saved); the refusal names him
    assert saved.summaries == {"de": "Von jemand anderem.", "ja": JA}
    errors = [shown(e.value) for e in app.error]
    assert any(e.startswith("#1 SKU-0: Summary (de): Not saved: changed by bob@example.com at ") for e in errors), errors
    assert any("Summary (ja): Not saved: this item changed meanwhile" in e for e in errors), errors
    save.click().run()  # saving again is a knowing choice: both typed fields replace the other change
    assert store.get_item(item.id).summaries == {"de": "**Ein** <b>Shirt</b>.", "ja": "青いシャツ。"}
    st.cache_resource.clear()


# --- the CLI and the Tag page ask for languages ----------------------------------------------------------------
def test_cli_tag_languages_writes_one_summary_per_language_into_the_report(monkeypatch, tmp_path, tiny_model, server, capsys):
    import csv

    from pipeline.cli import main

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "openai",
                       "OPENAI_API_KEY": "sk-test-1234", "OPENAI_BASE_URL": server.base_url, "MAX_NEW_TOKENS": "8",
                       "CONCURRENCY": "2"}.items():
        monkeypatch.setenv(key, value)
    photos = []
    for number in range(2):
        photos.append(tmp_path / f"c{number}.jpg")
        photos[-1].write_bytes(jpeg_bytes(size=(200, 160), seed=number + 1))
    assert main(["tag", *map(str, photos), "--languages", "en,de,ja", "--out", str(tmp_path / "report.csv")]) == 0
    assert "2 tagged, 0 failed" in capsys.readouterr().out
    with open(tmp_path / "report.csv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames[-2:] == ["summary_de", "summary_ja"]
    assert [(r["summary_de"], r["summary_ja"]) for r in rows] == [(DE, JA)] * 2


def test_tag_page_languages_are_kept_with_the_batch_and_each_summary_is_written(monkeypatch, tmp_path, tiny_model, server):
    import io
    import zipfile

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.runtime import get_runtime

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "openai",
                       "OPENAI_API_KEY": "sk-test-1234", "OPENAI_BASE_URL": server.base_url, "MAX_NEW_TOKENS": "8",
                       "CONCURRENCY": "2", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(2):
            archive.writestr(f"shirt-{index}.jpg", jpeg_bytes(seed=index))
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
        assert not app.exception, app.exception
        app.file_uploader[0].set_value([("photos.zip", buffer.getvalue(), "application/zip")]).run()
        languages = app.multiselect(key="languages")
        assert "English (en)" not in languages.options  # always written
        assert {"German (de)", "Japanese (ja)", "Chinese (Simplified) (zh)"} <= set(languages.options)
        languages.set_value(["de", "ja"]).run()
        [run] = [b for b in app.button if b.label == "Run"]
        run.click().run()
        assert not app.exception, app.exception
        assert get_runtime().worker.wait_idle(120)
        batch_id = app.session_state["batch_id"]
        store = get_runtime().stages.store
        assert store.batch_languages(batch_id) == ["de", "ja"]
        assert [i.summaries for i in store.list_items(batch_id)] == [{"de": DE, "ja": JA}] * 2
    finally:
        st.cache_resource.clear()


def test_tag_page_with_the_offline_summarizer_offers_no_languages_and_says_why(monkeypatch, tmp_path, tiny_model):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
        app.file_uploader[0].set_value([("p.jpg", jpeg_bytes(seed=1), "image/jpeg")]).run()
        assert not app.exception, app.exception
        assert not [m for m in app.multiselect if m.key == "languages"]
        assert "Summaries in English only: the offline summarizer does not translate (SUMMARIZER=openai writes other languages)." \
            in [c.value for c in app.caption]
    finally:
        st.cache_resource.clear()


def test_regenerate_in_review_rewrites_every_language_with_the_current_style_guide(tmp_path, server):
    from pipeline.admin.brand import clean_style_guide
    from pipeline.batches.review import regenerate_summary

    store = SqliteStore(tmp_path / "t.db")
    batch = new_batch(store, tmp_path, count=1)
    store.set_batch_languages(batch.id, ("de", "ja"))
    (item,) = store.list_items(batch.id)
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    store.save_result(item.id, ItemResult(content_key="k" * 64, image_path="p", caption=CaptionResult("a tee", {}, "m"), attributes=[],
                                          checks=checks, word_count=2, summary=SummaryResult("Old.", "Tee", [], {}, "gpt-4o", False,
                                                                                             summaries={"de": "Alt.", "ja": "古い。"})), [])
    store.save_style_guide(clean_style_guide("plain", ["cheap"], []), "ann", expected_version=0)
    regenerate_summary(store, summarizer_for(server), item.id, "rev")
    (body,) = server.state.requests
    assert 'Never use these words or phrases: ["cheap"]' in body["messages"][0]["content"]
    assert body["response_format"]["json_schema"]["schema"]["$defs"]["LanguageSummaries"]["required"] == ["de", "ja"]
    again = store.get_item(item.id)
    assert (again.summary, again.summaries) == ("A red cotton tee with a crew neck.", {"de": DE, "ja": JA})
    fields = sorted(e.field for e in store.edits(item.id))  # every language rewritten; the SEO fields follow the new summary
    assert [f for f in fields if f.startswith("summary")] == ["summary", "summary:de", "summary:ja"]
    assert set(fields) - {"summary", "summary:de", "summary:ja"} <= {"seo_title", "meta_description", "alt_text"}
    assert all(e.who == "rev (regenerated)" for e in store.edits(item.id))
    assert len(store.usage(batch.id)) == 1  # one paid call for all three
