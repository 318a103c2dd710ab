"""The CSV report: one row per item, edited values, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import html
import io
import re
import unicodedata
from typing import Any, Literal

from pipeline.attributes import AttributeSchema
from pipeline.models import ItemRecord

# A cell is escaped when its first character that a spreadsheet does not skip starts a formula:
# = + - @ and their fullwidth / small-form lookalikes (＝ ＋ － ＠ ﹦ ﹢ ﹣ ﹫, which NFKC folds to
# them) and the minus sign −; what is skipped first: whitespace of any kind (space, tab, CR, LF,
# no-break and ideographic spaces) and invisible format characters (BOM, zero-width, bidi marks).
# A cell starting with a tab, CR or LF is escaped whatever follows (the export's rule before).
FORMULA_STARTS = frozenset("=+-@\u2212")
ALWAYS_ESCAPED_FIRST = ("\t", "\r", "\n")
ExportFilter = Literal["approved", "all", "failed"]
SHOPIFY_COLUMNS = ["Handle", "Title", "Body (HTML)", "Tags", "Image Src", "Image Alt Text", "Variant SKU",
                   "SEO Title", "SEO Description"]  # Shopify's product CSV SEO columns (issue 19)
SEO_REPORT_COLUMNS = ["seo_title", "meta_description", "alt_text"]  # issue 19: the report's last fixed columns


def escape_formula(value: Any) -> Any:
    """Stop spreadsheets from running a cell as a formula (CSV injection): prefix with a quote.

    Only text is escaped: numbers (a negative `brightness`, say) stay numbers."""
    if isinstance(value, str) and _starts_formula(value):
        return "'" + value
    return value


def _starts_formula(text: str) -> bool:
    if text.startswith(ALWAYS_ESCAPED_FIRST):
        return True
    for char in text:
        if char.isspace() or unicodedata.category(char) == "Cf":
            continue  # skipped by spreadsheets (or invisible to the person opening the file)
        return char in FORMULA_STARTS or unicodedata.normalize("NFKC", char)[:1] in FORMULA_STARTS
    return False


def photo_warnings(item: ItemRecord) -> list[str]:
    """Photo-check warnings, then near-duplicate notes (issue 19): both show in Review's notes, its
    "Photo warnings" filter and the report's photo_warnings column."""
    notes = item.checks.warnings() if item.checks else []
    if item.near_duplicate:
        notes.append(f"near-duplicate: {item.near_duplicate}")
    if item.reused_from:
        notes.append(item.reused_from)
    return notes


def report_columns(schema: AttributeSchema) -> list[str]:
    return [
        "batch_id", "item_number", "source", "sku", "status", "error", "review_status", "title", "caption", "summary", "word_count",
        *schema.names(), "attributes_to_review", "tags",
        "photo_width", "photo_height", "photo_warnings", "blur_score", "brightness", "white_background", "dominant_colors",
        "caption_model", "summary_model", "summary_offline", "content_key", "created_at", "processed_at", "updated_at",
        *[f"hint_{name}" for name in ("title", "brand", "category", "notes")],
        "taxonomy_version",  # the attribute taxonomy the item was tagged with (0: the default); blank until tagged
        *SEO_REPORT_COLUMNS,  # added after it: existing spreadsheets keep their column positions
    ]


def report_row(item: ItemRecord, schema: AttributeSchema) -> dict[str, Any]:
    checks = item.checks
    row: dict[str, Any] = {
        "batch_id": item.batch_id,
        "item_number": item.seq + 1,  # the "#N" the Tag and Review pages show
        "source": item.source,
        "sku": item.sku or "",
        "status": "ok" if item.status == "ok" else "error",
        "error": item.error or ("not processed yet" if item.status in ("pending", "running") else ""),
        "review_status": item.review_status,
        "title": item.title or "",
        "caption": item.caption or "",
        "summary": item.summary or "",
        "word_count": item.word_count if item.word_count is not None else "",
        "attributes_to_review": ", ".join(a.name for a in item.attributes if not a.in_vocab),
        "tags": ", ".join(item.tags),
        "photo_width": checks.width if checks else "",
        "photo_height": checks.height if checks else "",
        "photo_warnings": "; ".join(photo_warnings(item)),  # the notes Review shows, near-duplicates included
        "blur_score": checks.blur_score if checks else "",
        "brightness": checks.brightness if checks else "",
        "white_background": checks.white_background if checks else "",
        "dominant_colors": ", ".join(checks.dominant_colors) if checks else "",
        "caption_model": item.caption_model or "",
        "summary_model": item.summary_model or "",
        "summary_offline": item.summary_offline,
        "content_key": item.content_key or "",
        "created_at": item.created_at or "",
        "processed_at": item.processed_at or "",
        "updated_at": item.updated_at or "",
    }
    for name in schema.names():
        attribute = item.attribute(name)
        row[name] = attribute.value if attribute else ""
    for name in ("title", "brand", "category", "notes"):
        row[f"hint_{name}"] = item.hints.get(name, "")
    row["taxonomy_version"] = item.taxonomy_version if item.status == "ok" else ""
    row.update({name: getattr(item, name) or "" for name in SEO_REPORT_COLUMNS})
    return row


def result_label(item: ItemRecord) -> str:
    """The one wording pages use for an item's outcome: tagged, failed: <why>, or not processed yet."""
    if item.status == "ok":
        return "tagged"
    if item.status == "error":
        return f"failed: {item.error}" if item.error else "failed"
    return "not processed yet"


def export_csv(items: list[ItemRecord], schema: AttributeSchema, *, excel_bom: bool = False) -> bytes:
    """CSV bytes (UTF-8; with a BOM when `excel_bom` so Excel detects the encoding)."""
    languages = summary_languages(items)  # extra-language summaries (issue 19): columns at the END of the report
    rows = [report_row(item, schema) | {f"summary_{code}": item.summaries.get(code, "") for code in languages} for item in items]
    data = _write_rows(report_columns(schema) + [f"summary_{code}" for code in languages], rows)
    return ("\ufeff".encode() + data) if excel_bom else data


def summary_languages(items: list[ItemRecord]) -> list[str]:
    """The extra summary languages any of `items` has, in the order they first appear (a batch tagged with
    --languages de,ja gives summary_de, summary_ja); none: the report keeps exactly its usual columns."""
    seen: list[str] = []
    for item in items:
        seen += [code for code in item.summaries if code not in seen]
    return seen


def filter_items(items: list[ItemRecord], which: ExportFilter) -> list[ItemRecord]:
    """approved: tagged and approved by a person; failed: could not be tagged; all: everything."""
    if which == "approved":
        return [item for item in items if item.status == "ok" and item.review_status == "approved"]
    if which == "failed":
        return [item for item in items if item.status == "error"]
    return list(items)


def _write_rows(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: escape_formula(row.get(column, "")) for column in columns})
    return buffer.getvalue().encode("utf-8")


def product_handle(item: ItemRecord, taken: set[str]) -> str:
    """Shopify handle: lowercase words joined by hyphens, unique within the file."""
    base = re.sub(r"[^a-z0-9]+", "-", (item.sku or item.title or f"item-{item.id}").lower()).strip("-") or f"item-{item.id}"
    handle, number = base, 2
    while handle in taken:
        handle, number = f"{base}-{number}", number + 1
    taken.add(handle)
    return handle


def shopify_image_src(item: ItemRecord) -> str:
    """Only a public http(s) address is useful to Shopify; local files and s3:// are left blank."""
    if item.ref is not None and item.ref.kind == "url" and item.ref.location.startswith(("http://", "https://")):
        return item.ref.location
    return ""


def export_shopify_csv(items: list[ItemRecord]) -> bytes:
    """A Shopify-style product import CSV for tagged items (failed items have nothing to import)."""
    taken: set[str] = set()
    rows = [
        {
            "Handle": product_handle(item, taken),
            "Title": item.title or item.caption or "",
            "Body (HTML)": f"<p>{html.escape(item.summary or '')}</p>",
            "Tags": ", ".join(item.tags),
            "Image Src": shopify_image_src(item),
            "Image Alt Text": item.alt_text or item.caption or "",  # the caption for items tagged before alt text was kept
            "Variant SKU": item.sku or "",
            "SEO Title": item.seo_title or "",  # blank: Shopify uses the product title
            "SEO Description": item.meta_description or "",  # blank: Shopify uses the description
        }
        for item in items
        if item.status == "ok"
    ]
    return _write_rows(SHOPIFY_COLUMNS, rows)
