"""The CSV report and the Shopify file, cell by cell: what a person opening the export relies on.

Written from the mutants that survived tests/test_export_escaping.py (docs/mutation.md): a dropped
column, a value from the wrong field, a lost BOM or line ending, a handle that is not unique."""

from __future__ import annotations

import csv
import io

import pytest

from pipeline.attributes import load_attribute_schema
from pipeline.batches.export import export_csv, export_shopify_csv, filter_items, product_handle, report_columns, result_label, shopify_image_src
from pipeline.models import AttributeValue, ItemRecord, PhotoChecks, SourceRef

SCHEMA = load_attribute_schema()


def read(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def checks(**overrides) -> PhotoChecks:
    values = dict(width=320, height=240, too_small=True, blur_score=12.5, blurry=True, brightness=30.25, too_dark=True,
                  too_bright=False, plain_background=False, white_background=False, dominant_colors=["navy", "white"])
    values.update(overrides)
    return PhotoChecks(**values)


def tagged_item(**overrides) -> ItemRecord:
    values = dict(
        id=7, batch_id=3, seq=4, source="shirt.jpg", ref=SourceRef(kind="url", location="https://cdn.example.com/shirt.jpg"),
        sku="SKU-9", hints={"title": "Hint title", "brand": "Acme", "category": "tops", "notes": "Cold wash"},
        status="ok", content_key="abc123", caption="a blue shirt", title="Blue shirt", summary="A blue cotton shirt.",
        word_count=4, tags=["blue", "cotton"], review_status="approved", caption_model="blip2", summary_model="gpt-4o",
        summary_offline=False, created_at="2026-01-01T00:00:00Z", processed_at="2026-01-01T00:01:00Z", updated_at="2026-01-01T00:02:00Z",
        attributes=[AttributeValue("color", "blue-ish", "blue", True), AttributeValue("material", "cotton", "cotton", True),
                    AttributeValue("pattern", "zigzags", "zigzags", False)],
        checks=checks(), taxonomy_version=2,
    )
    values.update(overrides)
    return ItemRecord(**values)


def test_every_column_of_a_tagged_item_carries_its_own_value():
    header, rows = read(export_csv([tagged_item()], SCHEMA))
    assert header == report_columns(SCHEMA)
    assert header[:2] == ["batch_id", "item_number"]  # the Tag and Review pages' "#N" comes second
    (row,) = rows
    assert row == {
        "batch_id": "3", "item_number": "5", "source": "shirt.jpg", "sku": "SKU-9", "status": "ok", "error": "", "review_status": "approved",
        "title": "Blue shirt", "caption": "a blue shirt", "summary": "A blue cotton shirt.", "word_count": "4",
        "category": "", "color": "blue", "material": "cotton", "pattern": "zigzags", "style": "",
        "attributes_to_review": "pattern", "tags": "blue, cotton",
        "photo_width": "320", "photo_height": "240", "photo_warnings": "small photo (320x240); looks blurry; too dark; busy background",
        "blur_score": "12.5", "brightness": "30.25", "white_background": "False", "dominant_colors": "navy, white",
        "caption_model": "blip2", "summary_model": "gpt-4o", "summary_offline": "False", "content_key": "abc123",
        "created_at": "2026-01-01T00:00:00Z", "processed_at": "2026-01-01T00:01:00Z", "updated_at": "2026-01-01T00:02:00Z",
        "hint_title": "Hint title", "hint_brand": "Acme", "hint_category": "tops", "hint_notes": "Cold wash",
        "taxonomy_version": "2", "seo_title": "", "meta_description": "", "alt_text": "",
    }
    # added last (taxonomy_version, then the SEO fields of issue 19): existing spreadsheets keep their column positions
    assert header[-4:] == ["taxonomy_version", "seo_title", "meta_description", "alt_text"]


def test_a_pending_item_says_not_processed_and_leaves_missing_values_blank():
    item = ItemRecord(id=1, batch_id=2, seq=0, source="a.jpg", ref=None, sku=None, hints={})
    _, (row,) = read(export_csv([item], SCHEMA))
    assert row["status"] == "error" and row["error"] == "not processed yet" and row["item_number"] == "1"
    blank = [name for name, value in row.items() if value == ""]
    assert set(blank) == set(report_columns(SCHEMA)) - {"batch_id", "item_number", "source", "status", "error", "review_status", "summary_offline"}
    running = ItemRecord(id=1, batch_id=2, seq=0, source="a.jpg", ref=None, sku=None, hints={}, status="running")
    failed = ItemRecord(id=1, batch_id=2, seq=0, source="a.jpg", ref=None, sku=None, hints={}, status="error", error="HTTP 404")
    failed_silently = ItemRecord(id=1, batch_id=2, seq=0, source="a.jpg", ref=None, sku=None, hints={}, status="error")
    assert [read(export_csv([i], SCHEMA))[1][0]["error"] for i in (running, failed, failed_silently)] == ["not processed yet", "HTTP 404", ""]


def test_zero_values_are_written_as_numbers_not_blanks():
    item = tagged_item(word_count=0, checks=checks(width=0, height=0, blur_score=0.0, brightness=0.0, white_background=True, dominant_colors=[]))
    _, (row,) = read(export_csv([item], SCHEMA))
    assert (row["word_count"], row["photo_width"], row["blur_score"], row["brightness"], row["white_background"]) == ("0", "0", "0.0", "0.0", "True")


def test_excel_gets_a_byte_order_mark_and_crlf_lines_others_get_plain_utf8():
    plain = export_csv([tagged_item(summary="Ünïcode ✓")], SCHEMA)
    excel = export_csv([tagged_item(summary="Ünïcode ✓")], SCHEMA, excel_bom=True)
    assert excel == b"\xef\xbb\xbf" + plain
    assert not plain.startswith(b"\xef\xbb\xbf")
    assert "Ünïcode ✓".encode("utf-8") in plain
    lines = plain.split(b"\r\n")
    assert len(lines) == 3 and lines[-1] == b""  # header, one row, and CRLF after each


def test_export_filters():
    ok_approved = tagged_item(id=1)
    ok_pending = tagged_item(id=2, review_status="pending")
    ok_rejected = tagged_item(id=3, review_status="rejected")
    failed = tagged_item(id=4, status="error", error="bad photo", review_status="approved")
    pending = ItemRecord(id=5, batch_id=3, seq=5, source="x", ref=None, sku=None, hints={})
    items = [ok_approved, ok_pending, ok_rejected, failed, pending]
    assert [i.id for i in filter_items(items, "approved")] == [1]
    assert [i.id for i in filter_items(items, "failed")] == [4]
    assert [i.id for i in filter_items(items, "all")] == [1, 2, 3, 4, 5]
    assert filter_items(items, "all") is not items  # a copy: the caller may sort it


def test_result_labels():
    assert result_label(tagged_item()) == "tagged"
    assert result_label(tagged_item(status="error", error="HTTP 404")) == "failed: HTTP 404"
    assert result_label(tagged_item(status="error", error=None)) == "failed"
    assert result_label(tagged_item(status="pending")) == "not processed yet"
    assert result_label(tagged_item(status="running")) == "not processed yet"


def test_the_shopify_file_has_one_row_per_tagged_item_with_its_fields():
    items = [
        tagged_item(id=1, summary="Soft & <warm>"),
        tagged_item(id=2, status="error", error="bad photo"),  # nothing to import
        tagged_item(id=3, sku=None, title=None, caption="a red hat", summary=None, tags=[], ref=SourceRef(kind="s3", location="s3://b/k.jpg")),
    ]
    header, rows = read(export_shopify_csv(items))
    assert header == ["Handle", "Title", "Body (HTML)", "Tags", "Image Src", "Image Alt Text", "Variant SKU", "SEO Title", "SEO Description"]
    assert rows == [
        {"Handle": "sku-9", "Title": "Blue shirt", "Body (HTML)": "<p>Soft &amp; &lt;warm&gt;</p>", "Tags": "blue, cotton",
         "Image Src": "https://cdn.example.com/shirt.jpg", "Image Alt Text": "a blue shirt", "Variant SKU": "SKU-9",
         "SEO Title": "", "SEO Description": ""},
        {"Handle": "item-3", "Title": "a red hat", "Body (HTML)": "<p></p>", "Tags": "", "Image Src": "", "Image Alt Text": "a red hat",
         "Variant SKU": "", "SEO Title": "", "SEO Description": ""},
    ]
    assert export_shopify_csv([]).split(b"\r\n") == [
        b"Handle,Title,Body (HTML),Tags,Image Src,Image Alt Text,Variant SKU,SEO Title,SEO Description", b""]


def test_shopify_handles_are_lowercase_words_and_unique_within_the_file():
    taken: set[str] = set()
    handles = [product_handle(tagged_item(sku=sku), taken) for sku in ("Blue Shirt!", "blue-shirt", "BLUE  shirt", "--", "Ünï")]
    assert handles == ["blue-shirt", "blue-shirt-2", "blue-shirt-3", "item-7", "n"]
    assert taken == set(handles)
    assert product_handle(tagged_item(id=9, sku=None, title="Wool Hat"), set()) == "wool-hat"
    assert product_handle(tagged_item(id=9, sku=None, title=None), set()) == "item-9"


@pytest.mark.parametrize("ref, expected", [
    (SourceRef(kind="url", location="https://cdn.example.com/a.jpg"), "https://cdn.example.com/a.jpg"),
    (SourceRef(kind="url", location="http://cdn.example.com/a.jpg"), "http://cdn.example.com/a.jpg"),
    (SourceRef(kind="url", location="ftp://cdn.example.com/a.jpg"), ""),
    (SourceRef(kind="file", location="https://looks-like-a-url.jpg"), ""),  # a local file named like a URL
    (SourceRef(kind="s3", location="s3://bucket/a.jpg"), ""),
    (SourceRef(kind="zip", location="/tmp/u.zip", member="a.jpg"), ""),
    (None, ""),
])
def test_only_public_web_addresses_become_the_shopify_image(ref, expected):
    assert shopify_image_src(tagged_item(ref=ref)) == expected


def test_a_character_whose_compatibility_form_begins_a_formula_is_quoted():
    # U+2A75 "⩵" folds (NFKC) to "==": the first character of the folded form decides, as for "＝".
    from pipeline.batches.export import escape_formula

    assert escape_formula("\u2a751+1") == "'\u2a751+1"


def test_extra_language_summaries_are_columns_at_the_end_of_the_report():
    """Issue 19: one summary_<lang> column per extra language any item has, after every usual column, in the order
    they first appear; an item without that language gets a blank; a batch without languages keeps its columns."""
    german = tagged_item(summaries={"de": "Ein blaues Hemd.", "ja": "青いシャツ。"})
    english_only = tagged_item(id=8, seq=5, summaries={})
    columns, rows = read(export_csv([german, english_only], SCHEMA))
    assert columns == report_columns(SCHEMA) + ["summary_de", "summary_ja"]
    assert [(r["summary_de"], r["summary_ja"]) for r in rows] == [("Ein blaues Hemd.", "青いシャツ。"), ("", "")]
    assert read(export_csv([english_only], SCHEMA))[0] == report_columns(SCHEMA)
    hostile = tagged_item(summaries={"de": "=HYPERLINK(\"http://evil\")"})  # escaped like every other cell
    assert read(export_csv([hostile], SCHEMA))[1][0]["summary_de"].startswith("'=")


def test_every_flagged_attribute_is_listed_for_review_and_blank_shopify_fields_stay_blank():
    flagged = tagged_item(attributes=[AttributeValue("pattern", "zigzags", "zigzags", False), AttributeValue("style", "zany", "zany", False),
                                      AttributeValue("color", "blue", "blue", True)])
    _, (row,) = read(export_csv([flagged], SCHEMA))
    assert row["attributes_to_review"] == "pattern, style"
    _, (shopify,) = read(export_shopify_csv([tagged_item(title=None, caption=None)]))
    assert shopify["Title"] == "" and shopify["Image Alt Text"] == ""


def test_a_tagged_items_seo_fields_and_near_duplicate_notes_reach_both_files():
    item = tagged_item(seo_title="Blue cotton shirt | Acme", meta_description="A blue cotton shirt, cold wash.",
                       alt_text="Blue shirt on a hanger", near_duplicate="looks like batch 1 item 2 (3 bits apart)",
                       reused_from="caption reused from batch 1 item 2", checks=None)
    _, (row,) = read(export_csv([item], SCHEMA))
    assert (row["seo_title"], row["meta_description"], row["alt_text"]) == (
        "Blue cotton shirt | Acme", "A blue cotton shirt, cold wash.", "Blue shirt on a hanger")
    assert row["photo_warnings"] == ("near-duplicate: looks like batch 1 item 2 (3 bits apart); "
                                     "caption reused from batch 1 item 2")
    _, (shopify,) = read(export_shopify_csv([item]))
    assert (shopify["SEO Title"], shopify["SEO Description"], shopify["Image Alt Text"]) == (
        "Blue cotton shirt | Acme", "A blue cotton shirt, cold wash.", "Blue shirt on a hanger")
