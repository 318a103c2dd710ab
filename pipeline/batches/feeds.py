"""Product feeds beside the CSV report and the Shopify CSV: a Google Merchant Center feed (TSV) and a
WooCommerce product CSV, and `export_file`, the one entry point the Export page and the CLI share.

Only what we know goes into a feed. Link, price, availability, condition, gender, age group and size
are read from the item's CSV hints when ingest recorded them (and gender / age_group / size from the
attribute schema when it has such attributes); anything a feed requires that we do not have is left
empty and named in a notice, never made up. A row whose identity is unusable (an id over 50
characters, the same id twice) is left out with a notice; the other rows go on. An attribute value is
exported only when it is one of the active taxonomy's values (the captioner's answer or a person's
edit): a value flagged for review (`attributes_to_review`), or edited to something outside the list,
is left out and named in a notice (the CSV hint of the same name, when there is one, is used instead).

Google Merchant Center product data specification: https://support.google.com/merchants/answer/7052112
(text feeds: https://support.google.com/merchants/answer/160588; quoted fields, on by default for
new data sources: https://support.google.com/merchants/answer/14998273). Google product taxonomy
(version 2021-09-21): https://www.google.com/basepages/producttype/taxonomy-with-ids.en-US.txt
WooCommerce product CSV import schema: https://github.com/woocommerce/woocommerce/wiki/Product-CSV-Import-Schema
(column parsing: plugins/woocommerce/includes/import/class-wc-product-csv-importer.php).

The Google feed is not formula-escaped: it is uploaded to Merchant Center, where a leading
apostrophe would be published as part of the title. The CSVs (report, Shopify, WooCommerce) are:
WooCommerce's importer removes the apostrophe again before = + - @ in lists, prices and numbers,
but keeps it in Name and the descriptions (as it does for files its own exporter wrote).
"""

from __future__ import annotations

import csv
import html
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from pipeline.attributes import AttributeSchema
from pipeline.batches.export import escape_formula, export_csv, export_shopify_csv, shopify_image_src
from pipeline.models import ItemRecord

ExportFormat = Literal["report", "shopify", "google-merchant", "woocommerce"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
FORMAT_LABELS = {"report": "CSV report", "shopify": "Shopify product CSV", "google-merchant": "Google Merchant Center feed (TSV)",
                 "woocommerce": "WooCommerce product CSV"}
_FILES = {  # file name prefix, extension, media type
    "report": ("tags", "csv", "text/csv"),
    "shopify": ("shopify", "csv", "text/csv"),
    "google-merchant": ("google-merchant", "txt", "text/tab-separated-values"),  # .txt: what Merchant Center's upload help names
    "woocommerce": ("woocommerce", "csv", "text/csv"),
}

# Google Merchant Center -------------------------------------------------------------------------
GOOGLE_COLUMNS = ["id", "title", "description", "link", "image_link", "availability", "price", "brand", "condition",
                  "google_product_category", "product_type", "color", "material", "pattern", "gender", "age_group", "size"]
GOOGLE_LIMITS = {"id": 50, "title": 150, "description": 5000, "link": 2000, "image_link": 2000, "brand": 70,
                 "product_type": 750, "color": 100, "material": 200, "pattern": 100, "size": 100}
AVAILABILITY = ("in_stock", "out_of_stock", "preorder", "backorder")
CONDITIONS = ("new", "refurbished", "used")
GENDERS = ("male", "female", "unisex")
AGE_GROUPS = ("newborn", "infant", "toddler", "kids", "adult")
# Our `category` vocabulary -> Google product category ID (taxonomy 2021-09-21). Only where one category
# fits: "bottle" (water, wine, baby?) and "other" have none, and Google then picks one itself.
GOOGLE_CATEGORY_IDS: dict[str, tuple[int, str]] = {
    **dict.fromkeys(["shoes", "sneakers", "boots", "sandals"], (187, "Apparel & Accessories > Shoes")),
    **dict.fromkeys(["t-shirt", "shirt"], (212, "Apparel & Accessories > Clothing > Shirts & Tops")),
    **dict.fromkeys(["sweater", "hoodie"], (1604, "Apparel & Accessories > Clothing")),
    "dress": (2271, "Apparel & Accessories > Clothing > Dresses"),
    **dict.fromkeys(["jacket", "coat"], (5598, "Apparel & Accessories > Clothing > Outerwear > Coats & Jackets")),
    **dict.fromkeys(["jeans", "trousers"], (204, "Apparel & Accessories > Clothing > Pants")),
    "shorts": (207, "Apparel & Accessories > Clothing > Shorts"),
    "skirt": (1581, "Apparel & Accessories > Clothing > Skirts"),
    "bag": (6551, "Apparel & Accessories > Handbags, Wallets & Cases"),
    "backpack": (100, "Luggage & Bags > Backpacks"),
    "wallet": (2668, "Apparel & Accessories > Handbags, Wallets & Cases > Wallets & Money Clips"),
    "hat": (173, "Apparel & Accessories > Clothing Accessories > Hats"),
    "scarf": (177, "Apparel & Accessories > Clothing Accessories > Scarves & Shawls"),
    "watch": (201, "Apparel & Accessories > Jewelry > Watches"),
    "jewelry": (188, "Apparel & Accessories > Jewelry"),
    "sunglasses": (178, "Apparel & Accessories > Clothing Accessories > Sunglasses"),
    "belt": (169, "Apparel & Accessories > Clothing Accessories > Belts"),
    "mug": (2169, "Home & Garden > Kitchen & Dining > Tableware > Drinkware > Mugs"),
    "lamp": (4636, "Home & Garden > Lighting > Lamps"),
    "chair": (443, "Furniture > Chairs"),
    "table": (6392, "Furniture > Tables"),
    "toy": (1253, "Toys & Games > Toys"),
    "phone case": (2353, "Electronics > Communications > Telephony > Mobile Phone Accessories > Mobile Phone Cases"),
    "headphones": (543626, "Electronics > Audio > Audio Components > Headphones & Headsets > Headphones"),
}
# Values that say nothing to a shopper or that Google refuses ("multi" colours: name up to 3, with "/").
NOT_A_VALUE = {"color": {"multicolour", "multicolor", "other"}, "material": {"other"}, "pattern": {"other"}}
MISSING_WHY = {  # what a person can do about an empty required (or, for brand, nearly required) value
    "title": "Merchant Center requires one; add a title in Review",
    "description": "Merchant Center requires one; add a summary in Review",
    "link": "Merchant Center requires the product page address; add it there (a supplemental feed keyed by id)",
    "image_link": "Merchant Center requires a public photo address; only photos fetched from an http(s) address have one",
    "availability": "Merchant Center requires in_stock, out_of_stock, preorder or backorder; add it there (a supplemental feed keyed by id)",
    "price": "Merchant Center requires it (like 19.99 USD); add it there (a supplemental feed keyed by id)",
    "brand": "Google requires it for most new products; a brand (or vendor) column in the batch CSV fills it",
}
_PRICE = re.compile(r"^(?:(?P<before>[A-Za-z]{3})\s*)?(?P<amount>\d{1,12}(?:[.,]\d{1,2})?)(?:\s*(?P<after>[A-Za-z]{3}))?$")

# WooCommerce ----------------------------------------------------------------------------------
WOO_BASE_COLUMNS = ["SKU", "Name", "Type", "Published", "Short description", "Description", "Regular price", "Categories",
                    "Tags", "Images"]
# WooCommerce's core product importer fetches each Images URL into the media library but has no column for the image's
# alt text (it belongs to the attachment, not the product), and no core SEO column: neither is carried (issue 19).
WOO_ALT_TEXT_NOTICE = ("Alt text, SEO title and meta description are not in this file: WooCommerce's product importer has no "
                       "column for them; the report and the Shopify file carry them.")
WOO_DRAFT = -1  # a number, so never formula-escaped; the importer's Published: 1 published, 0 private, -1 draft; a draft waits for its price and a person


@dataclass(frozen=True)
class ExportFile:
    data: bytes
    file_name: str
    mime: str
    rows: int
    notices: list[str] = field(default_factory=list)


def export_file(fmt: ExportFormat, items: list[ItemRecord], schema: AttributeSchema, *, name: str = "export",
                excel_bom: bool = False) -> ExportFile:
    """The file for `fmt` from `items` (already filtered: approved / all / failed). The report lists every
    item given; the product files list the tagged ones (a failed item has no product data)."""
    if fmt not in _FILES:
        raise ValueError(f"unknown export format {fmt!r}")
    prefix, extension, mime = _FILES[fmt]
    notices: list[str] = []
    if fmt == "report":
        data, rows = export_csv(items, schema, excel_bom=excel_bom), len(items)
    elif fmt == "shopify":
        data, rows = export_shopify_csv(items), sum(item.status == "ok" for item in items)
    elif fmt == "google-merchant":
        data, rows, notices = google_merchant_tsv(items, schema)
    else:
        data, rows, notices = woocommerce_csv(items, schema)
    return ExportFile(data=data, file_name=f"{prefix}-{name}.{extension}", mime=mime, rows=rows, notices=notices)


def products(items: list[ItemRecord]) -> list[ItemRecord]:
    return [item for item in items if item.status == "ok"]


def one_line(value: object) -> str:
    """Text without tabs, line breaks or other control characters (each run becomes one space)."""
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text)
    return re.sub(r"\s+", " ", text).strip()


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when one is in the last third."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space >= limit * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:-")


class _Notes:
    """Per-problem lists of items, written out as one sentence each."""

    def __init__(self, items: list[ItemRecord]) -> None:
        self.several_batches = len({item.batch_id for item in items}) > 1
        self.found: dict[str, list[str]] = {}
        self.not_exported: dict[str, list[str]] = {}  # attribute name -> one sentence per value left out

    def label(self, item: ItemRecord) -> str:
        return f"batch {item.batch_id} #{item.seq + 1}" if self.several_batches else f"#{item.seq + 1}"

    def add(self, sentence: str, item: ItemRecord) -> None:
        self.found.setdefault(sentence, []).append(self.label(item))

    def sentences(self) -> list[str]:
        out = []
        for sentence, labels in self.found.items():
            shown = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
            out.append(f"{len(labels)} product{'s' * (len(labels) != 1)} ({shown}): {sentence}")
        for name, sentences in self.not_exported.items():  # ten named per attribute, the rest counted
            out += sentences[:10]
            if len(sentences) > 10:
                more = len(sentences) - 10
                out.append(f"{name} of {more} more product{'s' * (more != 1)} not exported: not one of the allowed values; "
                           "fix them in Review.")
        return out

    def left_out(self, name: str, value: str, item: ItemRecord) -> None:
        shown = value if len(value) <= 40 else value[:40].rstrip() + "…"
        self.not_exported.setdefault(name, []).append(
            f"{name} of {self.label(item)} not exported: {shown!r} is not one of the allowed values; fix it in Review.")


def _vocabulary_value(item: ItemRecord, name: str, schema: AttributeSchema, notes: _Notes) -> str:
    """The item's `name` attribute when it is one of the active taxonomy's values (as the vocabulary spells it), else
    "": a value the pipeline flagged as outside the vocabulary, or a person's edit to such a value, is named in a
    notice and not exported."""
    attribute = item.attribute(name)
    value = one_line(attribute.value) if attribute is not None else ""
    if not value:
        return ""
    vocabulary = schema.spec(name).vocabulary if name in schema.names() else []
    allowed = next((word for word in vocabulary if word.lower() == value.lower()), None)
    if allowed is None:
        notes.left_out(name, value, item)
        return ""
    return allowed


def _hint_or_attribute(item: ItemRecord, name: str, schema: AttributeSchema, notes: _Notes) -> str:
    return _vocabulary_value(item, name, schema, notes) or one_line(item.hints.get(name, ""))


def _choice(item: ItemRecord, name: str, allowed: tuple[str, ...], notes: _Notes, schema: AttributeSchema,
            aliases: dict[str, str] | None = None) -> str:
    raw = _hint_or_attribute(item, name, schema, notes)
    if not raw:
        return ""
    key = re.sub(r"[\s\-]+", "_", raw.lower())
    key = (aliases or {}).get(key, key)
    if key in allowed:
        return key
    notes.add(f"{name} {raw[:40]!r} is not one of {', '.join(allowed)}; left empty.", item)
    return ""


def _http_url(value: str) -> bool:
    return bool(re.fullmatch(r"https?://[^\s/?#]+\S*", value, re.IGNORECASE))


def parse_price(raw: str) -> tuple[str, str] | None:
    """'19.99 USD', 'USD 19.99', '19,99 EUR' -> ('19.99', 'EUR'); None without exactly one currency code."""
    match = _PRICE.match(raw.strip())
    if not match or bool(match["before"]) == bool(match["after"]):
        return None
    return match["amount"].replace(",", "."), (match["before"] or match["after"]).upper()


def google_merchant_rows(items: list[ItemRecord], schema: AttributeSchema) -> tuple[list[dict[str, str]], list[str]]:
    """One row per tagged item, every value one line and within its limit, plus notices."""
    notes = _Notes(items)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in products(items):
        if item.sku and one_line(item.sku):
            product_id = one_line(item.sku)
        else:
            product_id = f"item-{item.id}"
            notes.add("no SKU: the id is item-<our item number>, which changes if the photo is tagged again.", item)
        if len(product_id) > GOOGLE_LIMITS["id"]:
            notes.add(f"left out: the SKU is longer than Google's {GOOGLE_LIMITS['id']}-character id.", item)
            continue
        if product_id in seen:
            notes.add(f"left out: SKU {product_id[:50]!r} is already in the feed (ids must be unique).", item)
            continue
        seen.add(product_id)
        row = {column: "" for column in GOOGLE_COLUMNS}
        row["id"] = product_id
        row["title"] = _limited(one_line(item.title or item.caption), "title", item, notes)
        row["description"] = _limited(one_line(item.summary or item.caption), "description", item, notes)
        link = one_line(item.hints.get("link", ""))
        if link and not (_http_url(link) and len(link) <= GOOGLE_LIMITS["link"]):
            notes.add("the link is not an http(s) address of at most 2,000 characters; left empty.", item)
            link = ""
        row["link"] = link
        image = shopify_image_src(item)
        row["image_link"] = image if len(image) <= GOOGLE_LIMITS["image_link"] else ""
        row["availability"] = _choice(item, "availability", AVAILABILITY, notes, schema,
                                      {"instock": "in_stock", "outofstock": "out_of_stock", "pre_order": "preorder", "back_order": "backorder"})
        price = one_line(item.hints.get("price", ""))
        if price:
            parsed = parse_price(price)
            if parsed is None:
                notes.add(f"price {price[:40]!r} is not an amount with a currency code (like 19.99 USD); left empty.", item)
            else:
                row["price"] = f"{parsed[0]} {parsed[1]}"
        row["brand"] = _limited(one_line(item.hints.get("brand", "")), "brand", item, notes)
        row["condition"] = _choice(item, "condition", CONDITIONS, notes, schema)
        category = _vocabulary_value(item, "category", schema, notes)
        if category in GOOGLE_CATEGORY_IDS:
            row["google_product_category"] = str(GOOGLE_CATEGORY_IDS[category][0])
        row["product_type"] = _limited(one_line(item.hints.get("category", "")), "product_type", item, notes)
        for name in ("color", "material", "pattern"):
            value = _hint_or_attribute(item, name, schema, notes)
            if value.lower() in NOT_A_VALUE.get(name, set()):
                if name == "color":
                    notes.add(f"colour {value!r} is not one Google accepts (name up to three, like red/white/blue); left empty.", item)
                value = ""
            row[name] = _limited(value, name, item, notes)
        row["gender"] = _choice(item, "gender", GENDERS, notes, schema, {"men": "male", "mens": "male", "women": "female", "womens": "female"})
        row["age_group"] = _choice(item, "age_group", AGE_GROUPS, notes, schema, {"kid": "kids", "adults": "adult"})
        row["size"] = _limited(_hint_or_attribute(item, "size", schema, notes), "size", item, notes)
        for name, why in MISSING_WHY.items():
            if not row[name]:
                notes.add(f"{name} is empty: {why}.", item)
        rows.append(row)
    return rows, notes.sentences()


def _limited(value: str, name: str, item: ItemRecord, notes: _Notes) -> str:
    limit = GOOGLE_LIMITS.get(name)
    if limit is None or len(value) <= limit:
        return value
    notes.add(f"{name} shortened to Google's {limit:,} characters.", item)
    return shorten(value, limit)


def google_merchant_tsv(items: list[ItemRecord], schema: AttributeSchema) -> tuple[bytes, int, list[str]]:
    """Tab-separated, UTF-8, header row of attribute names; quoted only where a value holds a quote."""
    rows, notices = google_merchant_rows(items, schema)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=GOOGLE_COLUMNS, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8"), len(rows), notices


# WooCommerce ----------------------------------------------------------------------------------
def woo_list(values: list[str]) -> str:
    """A WooCommerce list cell: comma-separated, a comma inside a value written as `\\,`."""
    return ", ".join(value.replace(",", "\\,") for value in values if value)


def woo_attribute_label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def woocommerce_columns(schema: AttributeSchema) -> list[str]:
    columns = list(WOO_BASE_COLUMNS)
    for number, _ in enumerate(schema.names(), start=1):
        columns += [f"Attribute {number} name", f"Attribute {number} value(s)", f"Attribute {number} visible", f"Attribute {number} global"]
    return columns


def _first_sentence(text: str) -> str:
    match = re.match(r"^(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def woocommerce_rows(items: list[ItemRecord], schema: AttributeSchema) -> tuple[list[dict[str, str | int]], list[str]]:
    notes = _Notes(items)
    rows: list[dict[str, str | int]] = []
    seen: set[str] = set()
    currencies: set[str] = set()
    no_price = no_image = 0
    for item in products(items):
        sku = one_line(item.sku)
        if sku and sku in seen:
            notes.add(f"left out: SKU {sku[:50]!r} is already in the file (WooCommerce would skip or overwrite it).", item)
            continue
        if not one_line(item.title or item.caption):
            notes.add("left out: no title or caption to name the product (add a title in Review).", item)
            continue
        if sku:
            seen.add(sku)
        summary = (item.summary or "").strip()
        row: dict[str, str | int] = {
            "SKU": sku,
            "Name": one_line(item.title or item.caption),
            "Type": "simple",
            "Published": WOO_DRAFT,
            "Short description": f"<p>{html.escape(_first_sentence(one_line(summary)))}</p>" if summary else "",
            "Description": f"<p>{html.escape(summary)}</p>" if summary else "",
            "Regular price": "",
            "Categories": "",
            "Tags": woo_list([one_line(tag) for tag in item.tags]),
            "Images": woo_list([shopify_image_src(item)]),
        }
        price = one_line(item.hints.get("price", ""))
        parsed = parse_price(price) if price else None
        if price and parsed is None and re.fullmatch(r"\d{1,12}(?:[.,]\d{1,2})?", price):
            parsed = (price.replace(",", "."), "")
        if parsed:
            row["Regular price"] = parsed[0]
            if parsed[1]:
                currencies.add(parsed[1])
        elif price:
            notes.add(f"price {price[:40]!r} is not a number; left empty.", item)
        no_price += not row["Regular price"]
        no_image += not row["Images"]
        merchant_category = one_line(item.hints.get("category", ""))
        values = {name: _vocabulary_value(item, name, schema, notes) for name in schema.names()}  # once per item: one notice each
        category = values.get("category", "")
        if merchant_category:
            row["Categories"] = woo_list([merchant_category])
        elif category and category != "other":
            row["Categories"] = woo_list([category.capitalize()])
        for number, name in enumerate(schema.names(), start=1):
            value = values[name]
            value = "" if value.lower() == "other" else value
            row[f"Attribute {number} name"] = woo_attribute_label(name) if value else ""
            row[f"Attribute {number} value(s)"] = woo_list([value])
            row[f"Attribute {number} visible"] = "1" if value else ""
            row[f"Attribute {number} global"] = "0" if value else ""  # a product attribute: the import adds nothing store-wide
        rows.append(row)
    notices = notes.sentences()
    if rows:
        notices.append(f"Products are imported as drafts (Published = {WOO_DRAFT}): publish them in WooCommerce once checked.")
    if no_price:
        notices.append(f"Regular price is empty for {no_price} of {len(rows)} products: WooCommerce cannot sell them until a price is set.")
    if no_image:
        notices.append(f"Images is empty for {no_image} of {len(rows)} products: only photos fetched from an http(s) address have one.")
    if currencies:
        notices.append(f"Regular price is the amount without its currency ({', '.join(sorted(currencies))}): WooCommerce uses the store's currency.")
    with_alt = sum(1 for item in products(items) if (item.alt_text or "").strip())  # issue 19
    if rows and with_alt:
        notices.append(WOO_ALT_TEXT_NOTICE)
    return rows, notices


def woocommerce_csv(items: list[ItemRecord], schema: AttributeSchema) -> tuple[bytes, int, list[str]]:
    """The core importer's columns, UTF-8, every text cell formula-escaped."""
    rows, notices = woocommerce_rows(items, schema)
    columns = woocommerce_columns(schema)
    return _csv(columns, rows, escape_formula), len(rows), notices


def _csv(columns: list[str], rows: list[dict[str, str | int]], cell: Callable[[object], object]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: cell(row.get(column, "")) for column in columns})
    return buffer.getvalue().encode("utf-8")
