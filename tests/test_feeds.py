"""Google Merchant Center feed and WooCommerce CSV: held to the published column rules (tests/support/feed_rules.py)
with hostile text, what is missing said rather than made up, and the Export page serving all four files."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.text import shown
from pipeline.attributes import load_attribute_schema
from pipeline.batches.export import escape_formula, filter_items
from pipeline.batches.feeds import GOOGLE_CATEGORY_IDS, export_file, google_merchant_tsv, woocommerce_csv
from pipeline.models import AttributeValue, ItemRecord, SourceRef
from support.feed_rules import (
    GOOGLE_TAXONOMY, google_feed_problems, google_missing, read_google_tsv, read_woo_csv, woo_explode, woocommerce_problems,
)

SCHEMA = load_attribute_schema()
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
LONG_CAPTION = "a very long caption about a shirt " * 40  # 1,360 characters
LONG_SUMMARY = ("Soft cotton shirt with a relaxed fit. " * 200).strip()  # 7,599 characters
HOSTILE = "=HYPERLINK(\"http://evil\")\tcol2\nline2\r\nline3 é 日本語 🙂"


def item(number: int, *, sku: str | None = None, status: str = "ok", review: str = "approved", title: str | None = None,
         caption: str = "a red shirt", summary: str = "A red cotton shirt.", url: str | None = "https://shop.example/p.jpg",
         hints: dict[str, str] | None = None, attributes: dict[str, str] | None = None, tags: list[str] | None = None,
         batch_id: int = 1) -> ItemRecord:
    values = {"category": "shirt", "color": "red", "material": "cotton", "pattern": "solid", "style": "casual", **(attributes or {})}
    return ItemRecord(
        id=100 + number, batch_id=batch_id, seq=number - 1, source=f"p{number}.jpg",
        ref=SourceRef("url", url) if url else SourceRef("file", f"/photos/p{number}.jpg"),
        sku=sku if sku is not None else f"SKU-{number}", hints=hints or {}, status=status, title=title if title is not None else f"Shirt {number}",
        caption=caption, summary=summary, tags=tags if tags is not None else ["shirt", "red"], review_status=review,
        attributes=[AttributeValue(name, value, value, True) for name, value in values.items()],
    )


COMPLETE = {"link": "https://shop.example/shirt", "price": "19.99 USD", "availability": "in stock", "brand": "Acme", "condition": "new"}


def hostile_items() -> list[ItemRecord]:
    return [
        item(1, title=HOSTILE, summary=HOSTILE, hints={**COMPLETE, "brand": "\tAcme\nCo"}, tags=["=cmd", "red, white", "日本語"]),
        item(2, title="", caption=LONG_CAPTION, summary=LONG_SUMMARY, hints={"price": "12,50 EUR", "link": "ftp://x/y"}),
        item(3, sku="x" * 60),  # over Google's 50-character id: left out of the Google feed
        item(4, sku="SKU-1"),  # the same SKU as item 1: left out
        item(5, sku="", url=None, title='"Quoted" 12" pan', hints={"price": "cheap", "availability": "soon"},
             attributes={"color": "multicolour", "category": "bottle"}),
        item(6, status="error", summary="", caption=""),  # failed: no product data
        item(8, title="", caption=" \t\n"),  # nothing to name it by: left out of the WooCommerce file, title empty in Google's
        item(7, title="+SUM(A1)", summary="-1+2 @x", hints={"availability": "OUT OF STOCK", "gender": "Women", "age_group": "adult"},
             attributes={"category": "sneakers", "material": "other"}),
    ]


def test_google_feed_follows_the_published_rules_on_hostile_text():
    data, rows, notices = google_merchant_tsv(hostile_items(), SCHEMA)
    assert google_feed_problems(data) == []
    header, products = read_google_tsv(data)
    assert header[:9] == ["id", "title", "description", "link", "image_link", "availability", "price", "brand", "condition"]
    by_id = {row["id"]: row for row in products}
    assert rows == len(products) == 5 and set(by_id) == {"SKU-1", "SKU-2", "item-105", "SKU-7", "SKU-8"}  # 3, 4 left out; 6 failed

    first = by_id["SKU-1"]
    # tabs and line breaks become single spaces; nothing else changes: no formula escaping in a feed Google publishes
    assert first["title"] == first["description"] == '=HYPERLINK("http://evil") col2 line2 line3 é 日本語 🙂'
    assert (first["link"], first["price"], first["availability"], first["brand"], first["condition"]) == (
        "https://shop.example/shirt", "19.99 USD", "in_stock", "Acme Co", "new")
    assert (first["color"], first["material"], first["pattern"], first["google_product_category"]) == ("red", "cotton", "solid", "212")

    second = by_id["SKU-2"]  # no title: the caption, cut at a word boundary; the summary within 5,000 characters
    assert len(second["title"]) <= 150 and LONG_CAPTION.startswith(second["title"]) and not second["title"].endswith(" ")
    assert len(second["description"]) <= 5000 and LONG_SUMMARY.startswith(second["description"])
    assert LONG_SUMMARY[len(second["description"])] == " "  # whole words only
    assert second["price"] == "12.50 EUR" and second["link"] == ""  # ftp:// is no product page

    fifth = by_id["item-105"]
    assert fifth["title"] == '"Quoted" 12" pan' and fifth["image_link"] == ""  # a quote survives the quoted-field round trip
    assert fifth["color"] == "" and fifth["google_product_category"] == ""  # "multicolour" is refused by Google; "bottle" has no one category
    seventh = by_id["SKU-7"]
    assert (seventh["title"], seventh["description"]) == ("+SUM(A1)", "-1+2 @x")
    assert (seventh["availability"], seventh["gender"], seventh["age_group"], seventh["material"]) == ("out_of_stock", "female", "adult", "")
    assert seventh["google_product_category"] == "187"

    said = "\n".join(notices)
    assert "1 product (#3): left out: the SKU is longer than Google's 50-character id." in notices
    assert "1 product (#4): left out: SKU 'SKU-1' is already in the feed (ids must be unique)." in notices
    assert "(#2): title shortened to Google's 150 characters." in said and "(#2): description shortened to Google's 5,000 characters." in said
    assert "price 'cheap' is not an amount with a currency code" in said and "availability 'soon' is not one of" in said
    assert "(#5): no SKU: the id is item-<our item number>" in said and "(#5): colour 'multicolour' is not one Google accepts" in said
    assert "(#2): the link is not an http(s) address" in said
    assert by_id["SKU-8"]["title"] == "" and "(#8): title is empty: Merchant Center requires one; add a title in Review." in said
    assert "#6" not in said  # a failed item is no product and no problem of the feed


def test_every_required_value_left_empty_is_named_in_a_notice():
    """The validator finds what Merchant Center would disapprove; each of those is in the notices, with the items."""
    items = [item(1, hints=COMPLETE), item(2, url=None, hints={"link": "https://shop.example/2"}), item(3, summary="", caption="")]
    data, _, notices = google_merchant_tsv(items, SCHEMA)
    assert google_feed_problems(data) == []
    missing = google_missing(data)
    assert missing == {"link": {"SKU-3"}, "image_link": {"SKU-2"}, "availability": {"SKU-2", "SKU-3"}, "price": {"SKU-2", "SKU-3"},
                       "description": {"SKU-3"}}
    number = {"SKU-1": "#1", "SKU-2": "#2", "SKU-3": "#3"}
    for name, ids in missing.items():
        [notice] = [n for n in notices if f": {name} is empty:" in n]
        assert notice.startswith(f"{len(ids)} product{'s' * (len(ids) != 1)} ({', '.join(sorted(number[i] for i in ids))}):"), notice
    assert not any("SKU-1" in n or "(#1)" in n for n in notices)  # the complete item is not mentioned
    assert any(n.startswith("2 products (#2, #3): brand is empty") for n in notices)


def test_category_mapping_uses_real_taxonomy_ids_for_the_shipped_vocabulary():
    for value, (number, path) in GOOGLE_CATEGORY_IDS.items():
        assert GOOGLE_TAXONOMY.get(number) == path, value
    vocabulary = set(SCHEMA.spec("category").vocabulary)
    assert set(GOOGLE_CATEGORY_IDS) <= vocabulary
    assert vocabulary - set(GOOGLE_CATEGORY_IDS) == {"bottle", "other"}  # no single Google category fits these


def test_woocommerce_csv_follows_the_importer_rules_and_is_formula_safe():
    data, rows, notices = woocommerce_csv(hostile_items(), SCHEMA)
    assert woocommerce_problems(data) == []
    header, products = read_woo_csv(data)
    assert header[:10] == ["SKU", "Name", "Type", "Published", "Short description", "Description", "Regular price", "Categories", "Tags", "Images"]
    assert header[10:14] == ["Attribute 1 name", "Attribute 1 value(s)", "Attribute 1 visible", "Attribute 1 global"]
    assert rows == len(products) == 5  # the repeated SKU-1 is left out; the failed item has no product
    for row in products:  # nothing a spreadsheet would run as a formula (a number such as Published -1 is a number)
        assert all(escape_formula(cell) == cell for cell in row.values() if not re.fullmatch(r"-?\d+(\.\d+)?", cell)), row
    by_sku = {row["SKU"]: row for row in products}
    first = by_sku["SKU-1"]
    assert first["Name"].startswith("'=HYPERLINK") and "\t" not in first["Name"] and "\n" not in first["Name"]
    assert first["Description"].startswith("<p>=HYPERLINK(&quot;http://evil&quot;)")  # HTML-escaped text in an HTML field
    assert "日本語 🙂" in first["Description"] and "\n" in first["Description"]  # line breaks are fine inside a quoted CSV cell
    # Tags: the importer removes the escaping quote, then splits on commas; "red, white" stays one tag
    tags = first["Tags"]
    assert tags.startswith("'=cmd") and woo_explode(tags[1:]) == ["=cmd", "red, white", "日本語"]
    assert (first["Regular price"], first["Published"], first["Type"], first["Images"]) == ("19.99", "-1", "simple", "https://shop.example/p.jpg")
    attributes = {first[f"Attribute {n} name"]: first[f"Attribute {n} value(s)"] for n in range(1, 6)}
    assert attributes == {"Category": "shirt", "Color": "red", "Material": "cotton", "Pattern": "solid", "Style": "casual"}
    assert by_sku["SKU-7"]["Name"] == "'+SUM(A1)" and by_sku["SKU-7"]["Categories"] == "Sneakers"
    assert by_sku["SKU-7"]["Attribute 3 name"] == by_sku["SKU-7"]["Attribute 3 value(s)"] == ""  # material "other" says nothing
    assert by_sku["SKU-2"]["Regular price"] == "12.50" and len(by_sku["SKU-2"]["Name"]) == len(LONG_CAPTION.strip())  # no Google limits here
    assert by_sku[""]["Images"] == ""  # a photo uploaded as a file has no address WooCommerce could download
    said = "\n".join(notices)
    assert "1 product (#4): left out: SKU 'SKU-1' is already in the file" in said
    assert "1 product (#8): left out: no title or caption to name the product (add a title in Review)." in notices
    assert "price 'cheap' is not a number" in said and "imported as drafts" in said and "(EUR, USD)" in said


def flagged(record: ItemRecord, name: str, value: str, in_vocab: bool) -> ItemRecord:
    """`record` with attribute `name` set to `value`: in_vocab=False as the pipeline flags an answer outside the
    vocabulary (attributes_to_review), in_vocab=True as after a person's edit in Review."""
    record.attributes = [a for a in record.attributes if a.name != name] + [AttributeValue(name, value, value, in_vocab)]
    return record


def test_attribute_values_outside_the_vocabulary_are_left_out_of_both_feeds_and_named():
    checked = "checked checked checked checked checked checked"  # the captioner's answer, flagged for review
    items = [
        flagged(item(1), "color", "<b>red</b>", True),  # a person typed a value that is not in the list: not exported
        flagged(item(2), "pattern", "Striped", True),  # a person chose a listed value (any case): exported as listed
        flagged(item(3), "material", checked, False),
        flagged(item(4, hints={"material": "Merino wool"}), "material", "merino", False),  # the CSV's own value instead
        flagged(item(5), "category", "kaftan", False),
    ]
    header, google = read_google_tsv(google_merchant_tsv(items, SCHEMA)[0])
    notices = google_merchant_tsv(items, SCHEMA)[2]
    by_id = {row["id"]: row for row in google}
    assert by_id["SKU-1"]["color"] == "" and by_id["SKU-2"]["pattern"] == "striped"
    assert by_id["SKU-3"]["material"] == "" and by_id["SKU-4"]["material"] == "Merino wool"
    assert by_id["SKU-5"]["google_product_category"] == "" and by_id["SKU-1"]["google_product_category"] == "212"
    expected = ["color of #1 not exported: '<b>red</b>' is not one of the allowed values; fix it in Review.",
                "material of #3 not exported: 'checked checked checked checked checked…' is not one of the allowed values; "
                "fix it in Review.",
                "material of #4 not exported: 'merino' is not one of the allowed values; fix it in Review.",
                "category of #5 not exported: 'kaftan' is not one of the allowed values; fix it in Review."]
    assert sorted(n for n in notices if "not exported" in n) == sorted(expected)

    data, _, woo_notices = woocommerce_csv(items, SCHEMA)
    assert woocommerce_problems(data) == []
    by_sku = {row["SKU"]: row for row in read_woo_csv(data)[1]}
    assert SCHEMA.names() == ["category", "color", "material", "pattern", "style"]  # Attribute 1 .. 5
    assert by_sku["SKU-1"]["Attribute 2 name"] == by_sku["SKU-1"]["Attribute 2 value(s)"] == ""  # no value, no attribute
    assert (by_sku["SKU-2"]["Attribute 4 name"], by_sku["SKU-2"]["Attribute 4 value(s)"]) == ("Pattern", "striped")
    assert by_sku["SKU-3"]["Attribute 3 value(s)"] == "" and "checked" not in "".join(by_sku["SKU-3"].values())
    assert by_sku["SKU-5"]["Categories"] == "" and by_sku["SKU-1"]["Categories"] == "Shirt"
    assert sorted(n for n in woo_notices if "not exported" in n) == sorted(expected)

    many = [flagged(item(number), "color", "reddish", False) for number in range(1, 13)]
    said = [n for n in google_merchant_tsv(many, SCHEMA)[2] if "not exported" in n]
    assert len(said) == 11 and said[-1] == "color of 2 more products not exported: not one of the allowed values; fix them in Review."


def test_filters_match_the_report_and_failed_items_never_reach_a_product_file():
    items = [item(1), item(2, review="pending"), item(3, review="rejected"), item(4, status="error", summary="", caption="")]
    for which, expected in (("approved", {"SKU-1"}), ("all", {"SKU-1", "SKU-2", "SKU-3"}), ("failed", set())):
        chosen = filter_items(items, which)
        google = export_file("google-merchant", chosen, SCHEMA, name=f"batch-1-{which}")
        woo = export_file("woocommerce", chosen, SCHEMA, name=f"batch-1-{which}")
        assert {row["id"] for row in read_google_tsv(google.data)[1]} == expected
        assert {row["SKU"] for row in read_woo_csv(woo.data)[1]} == expected
        assert google.rows == woo.rows == len(expected)
        assert (google.file_name, google.mime) == (f"google-merchant-batch-1-{which}.txt", "text/tab-separated-values")
        assert woo.file_name == f"woocommerce-batch-1-{which}.csv"
    report = export_file("report", filter_items(items, "failed"), SCHEMA, name="batch-1-failed")
    assert [row["sku"] for row in csv.DictReader(io.StringIO(report.data.decode()))] == ["SKU-4"] and report.rows == 1


# The Export page through AppTest --------------------------------------------------------------------
@pytest.fixture
def export_env(monkeypatch, tmp_path):
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """The bytes each download button serves, by file name (AppTest drops its media store after a run)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if filename:
            served[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return served


def seed_batch(hints: list[dict[str, str]]) -> int:
    """A batch of finished items in the store the dashboard opens (no model run); all approved but the last, which failed."""
    from pipeline.models import CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SummaryResult
    from pipeline.settings import Settings
    from pipeline.store.sqlite_store import SqliteStore

    store = SqliteStore(Settings().db_path)
    sources = [SourceItem(source=f"shirt-{i}.jpg", ref=SourceRef("url", f"https://cdn.example/shirt-{i}.jpg"), sku=f"SKU-{i}", hints=hint)
               for i, hint in enumerate(hints)]
    record = store.create_batch("feeds", "test", IngestReport(items=sources))
    items = store.list_items(record.id)
    for index, stored in enumerate(items[:-1]):
        attributes = [AttributeValue("category", "dress", "dress", True), AttributeValue("color", "navy", "navy", True)]
        store.save_result(stored.id, ItemResult(
            content_key=f"{index:064x}", image_path="/nowhere.jpg", word_count=5, attributes=attributes,
            checks=PhotoChecks(800, 600, False, 400.0, False, 180.0, False, False, True, True, ["navy"]),
            caption=CaptionResult(caption=f"a navy dress {index}", answers={}, model_id="test"),
            summary=SummaryResult(summary=f"=cmd A navy dress, number {index}.\tTabbed.", title=f"Navy dress {index}", tags=["dress", "navy, dark"],
                                  attributes={}, model="offline", offline=True)), [])
        store.edit_item(stored.id, "review_status", "approved", "someone")
    store.save_error(items[-1].id, "Could not read the image.", [])
    return record.id


def test_export_page_offers_the_four_formats_and_each_download_parses(export_env, downloads):
    complete = {"brand": "Acme", "price": "25.00 GBP", "link": "https://shop.example/dress-0", "availability": "in_stock", "condition": "new"}
    batch_id = seed_batch([complete, {"brand": "[link](http://x)", "category": "Women > Dresses"}, {}])
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("pages/export.py").run()
    assert not app.exception, app.exception
    assert [b.label for b in app.get("download_button")] == [
        "Download CSV report", "Download Shopify product CSV", "Download Google Merchant Center feed (TSV)", "Download WooCommerce product CSV"]
    google = downloads[f"google-merchant-batch-{batch_id}-approved.txt"]
    assert google_feed_problems(google) == []
    rows = read_google_tsv(google)[1]
    assert [(r["id"], r["brand"], r["color"], r["google_product_category"], r["image_link"]) for r in rows] == [
        ("SKU-0", "Acme", "navy", "2271", "https://cdn.example/shirt-0.jpg"),
        ("SKU-1", "[link](http://x)", "navy", "2271", "https://cdn.example/shirt-1.jpg")]
    assert rows[0]["description"] == "=cmd A navy dress, number 0. Tabbed." and rows[1]["product_type"] == "Women > Dresses"
    assert (rows[0]["price"], rows[0]["link"], rows[0]["availability"], rows[0]["condition"]) == (  # hints kept by the store reach the feed
        "25.00 GBP", "https://shop.example/dress-0", "in_stock", "new")
    woo = downloads[f"woocommerce-batch-{batch_id}-approved.csv"]
    assert woocommerce_problems(woo) == []
    products = read_woo_csv(woo)[1]
    assert [p["SKU"] for p in products] == ["SKU-0", "SKU-1"] and products[1]["Categories"] == "Women > Dresses"
    assert woo_explode(products[0]["Tags"]) == ["dress", "navy, dark"]
    assert len(read_woo_csv(downloads[f"tags-batch-{batch_id}-approved.csv"])[1]) == 2  # the report and Shopify files as before
    assert len(read_woo_csv(downloads[f"shopify-batch-{batch_id}-approved.csv"])[1]) == 2
    # what the feeds lack is listed, as literal text (a brand that looks like a Markdown link stays text)
    lack = [shown(c.value) for c in app.caption if "is empty" in shown(c.value) or "drafts" in shown(c.value)]
    assert "1 product (#2): link is empty: Merchant Center requires the product page address; add it there (a supplemental feed keyed by id)." in lack
    assert any("imported as drafts" in line for line in lack)

    app.radio[0].set_value("failed").run()  # failed only: the report lists it; the product files have nothing to offer
    buttons = {b.label: b.disabled for b in app.get("download_button")}
    assert buttons == {"Download CSV report": False, "Download Shopify product CSV": True,
                       "Download Google Merchant Center feed (TSV)": True, "Download WooCommerce product CSV": True}


# Ingest -> run -> feed (issue 19): a shop's CSV with feed columns; the feed carries them, the summary prompt does not
def test_csv_feed_columns_reach_the_google_feed_and_stay_out_of_the_summary_prompt(tmp_path, make_settings, local_captioner):
    import json

    import openai

    from pipeline.batches.runner import run_batch
    from pipeline.service import build_stages, create_batch
    from pipeline.summarizers.openai_summarizer import OpenAISummarizer
    from support.images import jpeg_bytes
    from support.servers import FakeOpenAI, Reply

    (tmp_path / "tee.jpg").write_bytes(jpeg_bytes(seed=1))
    (tmp_path / "cap.jpg").write_bytes(jpeg_bytes(seed=2))
    (tmp_path / "products.csv").write_text(
        "Handle,Variant SKU,Image Src,Title,Vendor,Variant Price,Availability,Condition,Google Shopping / Gender,Google Shopping / Age Group,Size,URL\n"
        "tee,TEE-1,tee.jpg,Striped tee,Acme,19.99 USD,in stock,new,Women,Adult,M,https://shop.example/tee\n"
        "cap,CAP-1,cap.jpg,Cap,Acme,9.50 USD,out_of_stock,refurbished,unisex,kids,,https://shop.example/cap\n")
    settings = make_settings(summarizer="openai")
    answer = {"title": "Striped tee", "summary": "A striped cotton tee.", "tags": ["tee"], "attributes": {n: None for n in SCHEMA.names()}}
    with FakeOpenAI() as server:
        server.state.default = Reply(answer)
        summarizer = OpenAISummarizer(openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=0), SCHEMA)
        stages = build_stages(settings, captioner=local_captioner, summarizer=summarizer)
        batch = create_batch(stages.store, settings, [tmp_path / "products.csv", tmp_path / "tee.jpg", tmp_path / "cap.jpg"],
                             name="shop", created_by="test")
        progress = run_batch(stages, batch.id, concurrency=1)
        prompts = [json.loads(r["messages"][1]["content"]) for r in server.state.requests]
    assert progress.failed == 0 and len(prompts) == 2
    hints_sent = sorted((p["sku"], sorted(p["merchant_hints"].items())) for p in prompts)
    assert hints_sent == [  # what helps writing copy; no price, stock state, link or one variant's size
        ("CAP-1", [("age_group", "kids"), ("brand", "Acme"), ("condition", "refurbished"), ("gender", "unisex"), ("title", "Cap")]),
        ("TEE-1", [("age_group", "Adult"), ("brand", "Acme"), ("condition", "new"), ("gender", "Women"), ("title", "Striped tee")])]

    items = stages.store.list_items(batch.id)
    assert [i.status for i in items] == ["ok", "ok"]
    exported = export_file("google-merchant", items, SCHEMA, name="shop")
    assert google_feed_problems(exported.data) == []
    rows = {row["id"]: row for row in read_google_tsv(exported.data)[1]}
    assert [(rows[s]["link"], rows[s]["price"], rows[s]["availability"], rows[s]["condition"], rows[s]["gender"],
             rows[s]["age_group"], rows[s]["size"], rows[s]["brand"]) for s in ("TEE-1", "CAP-1")] == [
        ("https://shop.example/tee", "19.99 USD", "in_stock", "new", "female", "adult", "M", "Acme"),
        ("https://shop.example/cap", "9.50 USD", "out_of_stock", "refurbished", "unisex", "kids", "", "Acme")]
    said = "\n".join(exported.notices)
    for name in ("link", "price", "availability", "condition", "brand"):
        assert f": {name} is empty" not in said, said
