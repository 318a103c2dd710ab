"""Admin → Health and Admin → Quality through Streamlit's AppTest on a seeded store: the real app
script, navigation, store and analytics; charts present, numbers shown, non-admins refused, and
hostile text (a CSV category, an error message, an edit, a model id) shown as the literal text."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.text import shown
from pipeline.models import (
    AttributeValue,
    CaptionResult,
    IngestReport,
    ItemResult,
    PhotoChecks,
    SourceItem,
    SourceRef,
    SummaryResult,
    Usage,
)
from pipeline.store.sqlite_store import SqliteStore

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
HOSTILE = '**bold** <script>alert(1)</script> [x](http://evil.example) <a href="http://evil.example/phish">click</a> <b>b</b>'
REFUSED = "This page is for admins. Ask an admin if you need access."


@pytest.fixture
def seeded(monkeypatch, tmp_path, tiny_model) -> SqliteStore:
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "AUTH_MODE": "dev", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    st.cache_resource.clear()
    store = SqliteStore(tmp_path / "data" / "pipeline.sqlite3")
    seed(store)
    yield store
    st.cache_resource.clear()


def tagged(key: str, model: str, *, cached: bool = False) -> ItemResult:
    checks = PhotoChecks(width=400, height=300, too_small=False, blur_score=120.5, blurry=False, brightness=130.0,
                         too_dark=False, too_bright=False, plain_background=True, white_background=True, dominant_colors=["red"])
    return ItemResult(
        content_key=key, image_path=f"/images/{key}.jpg",
        caption=CaptionResult(caption="a red shoe", answers={"color": "red"}, model_id=model, cached=cached),
        attributes=[AttributeValue(name="color", raw="red", value="red", in_vocab=True)],
        summary=SummaryResult(summary="A red shoe.", title="Red shoe", tags=["shoe"], attributes={"color": "red"},
                              model="gpt-4o", offline=False),
        checks=checks, word_count=3,
    )


def seed(store: SqliteStore) -> None:
    """Four tagged items (two captions paid, two from the cache), one failed with a hostile message;
    reviews: one approved as is, one caption edited to hostile text, one rejected, one pending."""
    categories = ["shoes", HOSTILE, "shoes", None, None]
    items = [SourceItem(source=f"p{i}.jpg", ref=SourceRef("file", f"/photos/p{i}.jpg"), sku=f"SKU-{i}",
                        hints={"category": c} if c else {}) for i, c in enumerate(categories)]
    batch = store.create_batch("seeded", "ann", IngestReport(items=items))
    a, b, c, d, e = store.list_items(batch.id)
    store.save_result(a.id, tagged("k0", "blip2@rev1"), [Usage(kind="local", model="blip2@rev1")],
                      stage_ms={"fetch": 10.0, "caption": 300.0, "summarize": 900.0})
    store.save_result(b.id, tagged("k1", f"blip2 {HOSTILE}"), [Usage(kind="local", model="blip2")],
                      stage_ms={"fetch": 30.0, "caption": 100.0, "summarize": 700.0})
    store.save_result(c.id, tagged("k0", "blip2@rev1", cached=True), [])
    store.save_result(d.id, tagged("k1", "blip2@rev1", cached=True), [])
    store.save_error(e.id, f"The photo could not be read: {HOSTILE}", [], error_kind="bad_image", stage_ms={"fetch": 20.0})
    store.edit_item(a.id, "review_status", "approved", "ann")
    store.edit_item(b.id, "caption", HOSTILE, "ann")
    store.edit_item(b.id, "review_status", "approved", "ann")
    store.edit_item(c.id, "review_status", "rejected", "bob")
    store.add_audit("ann", "start", "started", "Starting ml.g5.xlarge")
    store.add_audit("autostop", "autostop", "stopped", f"Endpoint deleted {HOSTILE}")


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception, app.exception
    app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


def decoded(value):
    """Plotly's typed arrays ({"dtype", "bdata"} in base64) as lists."""
    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {k: decoded(v) for k, v in value.items()}
    return [decoded(v) for v in value] if isinstance(value, list) else value


def charts(app: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by title."""
    figures = [decoded(json.loads(element.proto.spec)) for element in app.get("plotly_chart")]
    return {f["layout"]["title"]["text"]: f for f in figures}


def markdown_bodies(app: AppTest) -> list[str]:
    return [e.value for kind in ("error", "warning", "info", "success", "caption", "markdown") for e in getattr(app, kind)]


def assert_hostile_text_is_inert(app: AppTest) -> None:
    """Markdown bodies carry no live emphasis, HTML or link; chart labels carry no tag plotly would read."""
    for body in markdown_bodies(app):
        assert "<script>" not in body and "**bold**" not in body and not re.search(r"(?<!\\)\]\(", body), body
    for title, figure in charts(app).items():
        assert "<script>" not in json.dumps(figure["data"]), title


def cells(app: AppTest) -> list[str]:
    return [str(value) for frame in app.dataframe for value in frame.value.to_numpy().ravel()]


def test_health_page_shows_throughput_latency_failures_cache_and_endpoint(seeded):
    app = open_page("pages/health.py")
    assert app.title[0].value == "Health"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Items processed"] == "5"
    assert metrics["Failed"] == "20.0 %"
    assert metrics["Caption cache hit rate"] == "50.0 %"  # 4 captions, 2 paid calls
    assert set(charts(app)) >= {"Items per day (UTC)", "Failed items by reason",  # the default period: 7 days
                                "Endpoint running (1) or stopped (0), from the audit log"}
    throughput = charts(app)["Items per day (UTC)"]
    assert sum(sum(trace["y"]) for trace in throughput["data"]) == 5
    # p50 / p95 per stage (nearest rank over fetch 10, 20, 30 ms; caption 100, 300 ms), chart and table.
    assert "p50 / p95 per stage (ms)" in charts(app)
    [stages] = [f.value for f in app.dataframe if "p95 (ms)" in f.value.columns]
    assert stages.values.tolist() == [["fetch", 3, 20.0, 30.0], ["caption", 2, 100.0, 300.0], ["summarize", 2, 700.0, 900.0]]
    [reasons] = [f.value for f in app.dataframe if "Reason" in f.value.columns]
    assert reasons[["Reason", "Items"]].values.tolist() == [["bad_image", 1]]
    # The failure's message and the audit entry's detail are table cells: plain text, shown literally.
    assert f"The photo could not be read: {HOSTILE}" in cells(app)
    assert f"Endpoint deleted {HOSTILE}" in cells(app)
    [events] = [f.value for f in app.dataframe if "Endpoint after" in f.value.columns]
    assert events[["Who", "Result", "Endpoint after"]].values.tolist() == [["autostop", "stopped", "stopped"],
                                                                          ["ann", "started", "running"]]  # newest first
    assert_hostile_text_is_inert(app)

    assert "Nothing measured in this process yet." in [i.value for i in app.info]
    from pipeline.observability import metrics  # what the runner records in this process (the page's expander)
    metrics.count("CaptionCacheHits", 3)
    metrics.observe("StageLatency", 42.0, dimensions={"Stage": "caption"})
    app.selectbox(key="health-period").set_value("Last 24 hours").run()
    [counters] = [f.value for f in app.dataframe if "Counter" in f.value.columns]
    assert counters[["Counter", "Value"]].values.tolist() == [["CaptionCacheHits", 3.0]]
    [latency] = [f.value for f in app.dataframe if "Latency" in f.value.columns]
    assert latency[["Latency", "Dimensions", "Samples", "p50 (ms)"]].values.tolist() == [["StageLatency", "Stage=caption", 1, 42.0]]
    assert not app.exception, app.exception
    assert {m.label: m.value for m in app.metric}["Items processed"] == "5"
    assert sum(sum(trace["y"]) for trace in charts(app)["Items per hour (UTC)"]["data"]) == 5


def test_quality_page_shows_shares_models_categories_and_common_edits(seeded):
    app = open_page("pages/quality.py")
    assert app.title[0].value == "Quality"
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["Items tagged"], metrics["Reviewed"]) == ("4", "3")
    assert metrics["Caption accepted unchanged"] == "33.3 %"  # a kept, b edited, c rejected; d awaits review
    assert "Accepted, edited, rejected per field" in charts(app)
    [by_field, *_] = app.dataframe
    caption = by_field.value.set_index("Field").loc["caption"]
    assert (caption["Reviewed"], caption["Accepted unchanged %"], caption["Edited %"], caption["Rejected %"], caption["Awaiting review"]) \
        == (3, 33.3, 33.3, 33.3, 1)
    # The most common edits and the hostile category / model id are shown literally, in tables and charts.
    assert HOSTILE in cells(app) and HOSTILE in cells(app)  # the edit's new caption; the category
    assert f"blip2 {HOSTILE}" in cells(app)
    figures = json.dumps([charts(app)[t]["data"] for t in charts(app)])
    assert "&lt;script&gt;" in figures
    assert_hostile_text_is_inert(app)

    app.selectbox(key="quality-field").set_value("attribute:color").run()
    assert not app.exception, app.exception
    assert "attribute:color by model" in charts(app)

    # A review made meanwhile shows after Refresh (the figures are kept while only the view changes).
    waiting = seeded.list_items(seeded.list_batches()[0].id)[3]
    seeded.edit_item(waiting.id, "review_status", "approved", "carl")
    app.run()
    assert {m.label: m.value for m in app.metric}["Reviewed"] == "3"
    app.button(key="quality-refresh").click().run()
    assert not app.exception, app.exception
    assert {m.label: m.value for m in app.metric}["Reviewed"] == "4"
    assert {m.label: m.value for m in app.metric}["Caption accepted unchanged"] == "50.0 %"


def test_pages_refuse_non_admins_and_stay_out_of_their_menu(seeded, monkeypatch):
    import streamlit.commands.navigation as navigation

    menus: list[dict[str, bool]] = []
    original = navigation._navigation

    def recording(pages, **options):
        if any(page.title == "Tag" for page in pages):  # app.py's menu (AppTest also replays the pages/ folder's own)
            menus.append({page.title: page._visibility == "hidden" for page in pages})
        return original(pages, **options)

    monkeypatch.setattr(navigation, "_navigation", recording)
    admin = open_page("pages/health.py")
    assert menus[-1]["Health"] is False and menus[-1]["Quality"] is False  # in an admin's sidebar
    assert admin.title[0].value == "Health"

    monkeypatch.setenv("DEV_USER_IS_ADMIN", "false")
    st.cache_resource.clear()
    for page in ("pages/health.py", "pages/quality.py"):
        user = open_page(page)
        assert menus[-1]["Health"] is True and menus[-1]["Quality"] is True  # hidden from a non-admin's menu
        assert [e.value for e in user.error] == [REFUSED]
        assert not user.title and not user.metric and not user.dataframe and not user.get("plotly_chart")
        # The page's own script refuses too, as a crafted request running it directly would find.
        direct = AppTest.from_file(str(Path(APP).parent / page), default_timeout=60).run()
        assert not direct.exception and [e.value for e in direct.error] == [REFUSED] and not direct.metric


def test_empty_store_says_so_without_errors(monkeypatch, tmp_path, tiny_model):
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    try:
        health = open_page("pages/health.py")
        assert {m.label: m.value for m in health.metric}["Caption cache hit rate"] == "—"
        assert "No items were processed in this period." in [i.value for i in health.info]
        quality = open_page("pages/quality.py")
        assert "No items were tagged in this period." in [i.value for i in quality.info]
        assert shown(quality.caption[0].value).startswith("Items tagged ")
    finally:
        st.cache_resource.clear()


def test_pages_in_chromium_draw_charts_and_show_hostile_labels_literally(tiny_model, tmp_path):
    """The real frontend: plotly draws the charts, and a CSV category / model id holding Markdown, a
    script tag and a link is drawn as that text (no link, no script, no dialog)."""
    from playwright.sync_api import expect, sync_playwright

    from test_browser import CHROMIUM, CHROMIUM_FLAGS, serve

    seed(SqliteStore(tmp_path / "data" / "pipeline.sqlite3"))
    dialogs: list[str] = []
    with serve(tmp_path / "data", tiny_model) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(f"{url}/health")
            expect(page.get_by_role("heading", name="Health", exact=True)).to_be_visible(timeout=60_000)
            expect(page.get_by_test_id("stSidebarNavLink").filter(has_text="Quality")).to_have_count(1)
            for title in ("Items per day (UTC)", "p50 / p95 per stage (ms)", "Failed items by reason"):
                expect(page.locator("svg text.gtitle", has_text=title)).to_have_count(1, timeout=30_000)
            expect(page.get_by_test_id("stMetricValue").first).to_have_text("5")

            page.goto(f"{url}/quality")
            expect(page.get_by_role("heading", name="Quality", exact=True)).to_be_visible(timeout=60_000)
            expect(page.locator("svg text.gtitle", has_text="caption by category")).to_have_count(1, timeout=30_000)
            literal = page.locator("svg text", has_text='<a href="http://evil.example/phish">click</a> <b>b</b>')
            expect(literal.first).to_be_attached(timeout=30_000)  # the category and the model id, as text
            assert page.locator("a[href*='evil.example']").count() == 0
            assert page.locator("svg script, svg b").count() == 0
            assert dialogs == []
        finally:
            browser.close()


def test_an_unreadable_store_is_one_sentence_not_a_traceback(seeded, tmp_path):
    import sqlite3

    health = open_page("pages/health.py")
    quality = open_page("pages/quality.py")
    with sqlite3.connect(tmp_path / "data" / "pipeline.sqlite3") as db:  # the database broken under the running app
        db.execute("DROP TABLE usage")
        db.execute("DROP TABLE edits")
    for app, refresh in ((health, "health-refresh"), (quality, "quality-refresh")):
        app.button(key=refresh).click().run()
        assert not app.exception, app.exception
        [error] = app.error
        assert shown(error.value).startswith("Could not read the store: OperationalError: no such table: ")
        assert shown(error.value).endswith("Try again; if it persists, check the STORE settings.")
        assert not app.dataframe and "Traceback" not in error.value


@pytest.mark.parametrize("seo_fields_by, writer", [("template", "template"), ("model", "gpt-4o")])
def test_quality_page_judges_seo_fields_under_who_writes_them(seeded, monkeypatch, seo_fields_by, writer):
    """The SEO fields are judged like every other field a reviewer can edit, grouped under the offline template or
    the summary model as SEO_FIELDS_BY says (the page passes the setting it runs with)."""
    monkeypatch.setenv("SEO_FIELDS_BY", seo_fields_by)
    first = seeded.list_items(seeded.list_batches()[0].id)[0]  # approved as tagged
    seeded.edit_item(first.id, "seo_title", "Red leather shoe | Shop", "ann")
    app = open_page("pages/quality.py")
    assert "seo_title" in app.dataframe[0].value["Field"].tolist()
    app.selectbox(key="quality-field").set_value("seo_title").run()
    assert not app.exception, app.exception
    by_model = app.dataframe[1].value.set_index("Model")
    assert by_model.index.tolist() == [writer] and by_model.loc[writer, "Edited %"] == 100.0
    assert any(f"by {'the summary model' if seo_fields_by == 'model' else 'the offline template'}" in shown(c.value)
               for c in app.caption)
