"""The published column rules of the two product feeds, written down independently of pipeline/batches/feeds.py,
so a test can hold a file we export against them. Each function returns a list of problems (empty: valid).

Google Merchant Center product data specification: https://support.google.com/merchants/answer/7052112
  text feeds: https://support.google.com/merchants/answer/160588 (header row of attribute names, one product
  per line, no tabs or line breaks inside a value); quoted fields: https://support.google.com/merchants/answer/14998273
  taxonomy: https://www.google.com/basepages/producttype/taxonomy-with-ids.en-US.txt
WooCommerce product CSV import schema: https://github.com/woocommerce/woocommerce/wiki/Product-CSV-Import-Schema
  and the importer that applies it: plugins/woocommerce/includes/import/class-wc-product-csv-importer.php
"""

from __future__ import annotations

import csv
import io
import re

# Google ----------------------------------------------------------------------------------------
GOOGLE_REQUIRED = ("id", "title", "description", "link", "image_link", "availability", "price")
GOOGLE_KNOWN = {
    *GOOGLE_REQUIRED, "additional_image_link", "mobile_link", "sale_price", "brand", "gtin", "mpn", "identifier_exists",
    "condition", "adult", "google_product_category", "product_type", "color", "material", "pattern", "gender", "age_group",
    "size", "size_type", "size_system", "item_group_id", "shipping", "tax", "custom_label_0",
}
GOOGLE_MAX = {"id": 50, "title": 150, "description": 5000, "link": 2000, "image_link": 2000, "brand": 70, "product_type": 750,
              "color": 100, "material": 200, "pattern": 100, "size": 100}
GOOGLE_ENUMS = {
    "availability": {"in_stock", "out_of_stock", "preorder", "backorder"},
    "condition": {"new", "refurbished", "used"},
    "gender": {"male", "female", "unisex"},
    "age_group": {"newborn", "infant", "toddler", "kids", "adult"},
}
# IDs that exist in taxonomy-with-ids.en-US.txt (2021-09-21), with their paths, for the mapping the export uses.
GOOGLE_TAXONOMY = {
    100: "Luggage & Bags > Backpacks", 169: "Apparel & Accessories > Clothing Accessories > Belts",
    173: "Apparel & Accessories > Clothing Accessories > Hats", 177: "Apparel & Accessories > Clothing Accessories > Scarves & Shawls",
    178: "Apparel & Accessories > Clothing Accessories > Sunglasses", 187: "Apparel & Accessories > Shoes",
    188: "Apparel & Accessories > Jewelry", 201: "Apparel & Accessories > Jewelry > Watches",
    204: "Apparel & Accessories > Clothing > Pants", 207: "Apparel & Accessories > Clothing > Shorts",
    212: "Apparel & Accessories > Clothing > Shirts & Tops", 443: "Furniture > Chairs",
    1253: "Toys & Games > Toys", 1581: "Apparel & Accessories > Clothing > Skirts", 1604: "Apparel & Accessories > Clothing",
    2169: "Home & Garden > Kitchen & Dining > Tableware > Drinkware > Mugs", 2271: "Apparel & Accessories > Clothing > Dresses",
    2353: "Electronics > Communications > Telephony > Mobile Phone Accessories > Mobile Phone Cases",
    2668: "Apparel & Accessories > Handbags, Wallets & Cases > Wallets & Money Clips", 4636: "Home & Garden > Lighting > Lamps",
    5598: "Apparel & Accessories > Clothing > Outerwear > Coats & Jackets", 6392: "Furniture > Tables",
    6551: "Apparel & Accessories > Handbags, Wallets & Cases",
    543626: "Electronics > Audio > Audio Components > Headphones & Headsets > Headphones",
}
PRICE = re.compile(r"\d+(\.\d{1,2})? [A-Z]{3}")
URL = re.compile(r"https?://[^\s/?#]+\S*")


def read_google_tsv(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    text = data.decode("utf-8")  # UTF-8 is required; a decoding error fails the test
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"')
    header, *rows = list(reader)
    return header, [dict(zip(header, row)) for row in rows]


def google_feed_problems(data: bytes) -> list[str]:
    """Everything in the file that breaks the specification (missing required values are not listed here:
    see `google_missing`)."""
    problems: list[str] = []
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        problems.append("starts with a byte order mark")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    if len(set(header)) != len(header):
        problems.append("a header name appears twice")
    problems += [f"unknown attribute {name!r}" for name in header if name not in GOOGLE_KNOWN]
    problems += [f"required attribute {name!r} has no column" for name in GOOGLE_REQUIRED if name not in header]
    for number, line in enumerate(lines[1:], start=2):
        if "\r" in line:
            problems.append(f"line {number}: a carriage return")
        # quoted fields may not hide tabs or line breaks either: one product, one physical line, N-1 tabs
        cells = next(csv.reader([line], delimiter="\t", quotechar='"'))
        if len(cells) != len(header) or line.count("\t") != len(header) - 1:
            problems.append(f"line {number}: {len(cells)} values for {len(header)} columns")
    header, rows = read_google_tsv(data)
    ids: set[str] = set()
    for number, row in enumerate(rows, start=2):
        for name, value in row.items():
            if value != value.strip():
                problems.append(f"line {number}: {name} has leading or trailing whitespace")
            if any(ord(char) < 32 for char in value):
                problems.append(f"line {number}: {name} holds a control character")
            if name in GOOGLE_MAX and len(value) > GOOGLE_MAX[name]:
                problems.append(f"line {number}: {name} is {len(value)} characters (max {GOOGLE_MAX[name]})")
            if value and name in GOOGLE_ENUMS and value not in GOOGLE_ENUMS[name]:
                problems.append(f"line {number}: {name} {value!r} is not an allowed value")
        if not row["id"]:
            problems.append(f"line {number}: empty id")
        if row["id"] in ids:
            problems.append(f"line {number}: id {row['id']!r} repeated")
        ids.add(row["id"])
        for name in ("link", "image_link"):
            if row.get(name) and not URL.fullmatch(row[name]):
                problems.append(f"line {number}: {name} is not an http(s) URL")
        if row.get("price") and not PRICE.fullmatch(row["price"]):
            problems.append(f"line {number}: price {row['price']!r} is not 'amount ISO-4217-code'")
        category = row.get("google_product_category", "")
        if category and not (category.isdigit() and int(category) in GOOGLE_TAXONOMY):
            problems.append(f"line {number}: google_product_category {category!r} is not a known taxonomy ID")
        colors = row.get("color", "")
        if colors:
            parts = colors.split("/")
            if len(parts) > 3 or any(not 1 <= len(part) <= 40 for part in parts) or "," in colors:
                problems.append(f"line {number}: color {colors!r} is not up to 3 names of 1-40 characters joined by /")
            if colors.lower().replace("-", "").replace(" ", "") in {"multi", "multicolor", "multicolour", "various", "seeimage"}:
                problems.append(f"line {number}: color {colors!r} is not a colour")
    return problems


def google_missing(data: bytes) -> dict[str, set[str]]:
    """Required attribute -> ids of products where it is empty (Merchant Center would disapprove them)."""
    _, rows = read_google_tsv(data)
    return {name: {row["id"] for row in rows if not row.get(name)} for name in GOOGLE_REQUIRED if any(not row.get(name) for row in rows)}


# WooCommerce ------------------------------------------------------------------------------------
WOO_COLUMNS = {  # the importer's default English column names (WC_Product_CSV_Importer_Controller)
    "ID", "Type", "SKU", "Name", "Published", "Is featured?", "Visibility in catalog", "Short description", "Description",
    "Date sale price starts", "Date sale price ends", "Tax status", "Tax class", "In stock?", "Stock", "Low stock amount",
    "Backorders allowed?", "Sold individually?", "Weight (kg)", "Length (cm)", "Width (cm)", "Height (cm)",
    "Allow customer reviews?", "Purchase note", "Sale price", "Regular price", "Categories", "Tags", "Shipping class", "Images",
    "Download limit", "Download expiry days", "Parent", "Grouped products", "Upsells", "Cross-sells", "External URL",
    "Button text", "Position", "Brands",
}
WOO_ATTRIBUTE = re.compile(r"Attribute (\d+) (name|value\(s\)|visible|global|default)")
WOO_TYPES = {"simple", "variable", "grouped", "external", "variation"}


def woo_explode(value: str) -> list[str]:
    """The importer's explode_values: split on commas, `\\,` is a comma inside a value, each value trimmed."""
    return [part.strip().replace("::separator::", ",") for part in value.replace("\\,", "::separator::").split(",")]


def read_woo_csv(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header, *rows = list(reader)
    return header, [dict(zip(header, row)) for row in rows]


def woocommerce_problems(data: bytes) -> list[str]:
    problems: list[str] = []
    header, rows = read_woo_csv(data)
    if len(set(header)) != len(header):
        problems.append("a header name appears twice")
    numbers: dict[str, set[str]] = {}
    for name in header:
        match = WOO_ATTRIBUTE.fullmatch(name)
        if match:
            numbers.setdefault(match[1], set()).add(match[2])
        elif name not in WOO_COLUMNS:
            problems.append(f"column {name!r} is not one the importer maps")
    for number, parts in numbers.items():
        if not {"name", "value(s)"} <= parts:
            problems.append(f"attribute {number} lacks its name or value(s) column")
    skus: set[str] = set()
    reader_rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    for number, (raw, row) in enumerate(zip(reader_rows[1:], rows), start=2):
        if len(raw) != len(header):
            problems.append(f"row {number}: {len(raw)} values for {len(header)} columns")
        kinds = {kind.strip().lower() for kind in row.get("Type", "simple").split(",")} - {"virtual", "downloadable"}
        if len(kinds) != 1 or not kinds <= WOO_TYPES:
            problems.append(f"row {number}: Type {row.get('Type')!r}")
        if row.get("Published", "") not in ("", "1", "0", "-1"):
            problems.append(f"row {number}: Published {row['Published']!r} is not 1, 0 or -1")
        if not row.get("Name"):
            problems.append(f"row {number}: no Name")
        sku = row.get("SKU", "")
        if sku and sku in skus:
            problems.append(f"row {number}: SKU {sku!r} repeated")
        skus.add(sku)
        if row.get("Regular price") and not re.fullmatch(r"\d+(\.\d+)?", row["Regular price"]):
            problems.append(f"row {number}: Regular price {row['Regular price']!r} is not a number")
        if row.get("Images"):
            for url in woo_explode(row["Images"]):
                if not URL.fullmatch(url):
                    problems.append(f"row {number}: image {url!r} is not an absolute http(s) URL")
        for attribute in numbers:
            name, value = row.get(f"Attribute {attribute} name", ""), row.get(f"Attribute {attribute} value(s)", "")
            if value and not name:
                problems.append(f"row {number}: attribute {attribute} has values but no name")
            for flag in ("visible", "global"):
                if row.get(f"Attribute {attribute} {flag}", "") not in ("", "0", "1"):
                    problems.append(f"row {number}: Attribute {attribute} {flag} is not 0 or 1")
    return problems
