"""Uploaded paths (images, zips, CSVs) -> a list of SourceItems to tag.

Ingest only reads names, headers and CSV text; image bytes are read later, one item at a time,
so a 1,000-image zip never sits in memory. Every problem becomes one error item or a notice.

Zips are described by their central directory, read once. A zip may hold the same name twice:
such members are referred to as `name\\<index in the central directory>` (a backslash never
appears in an accepted name), so each copy is its own item with its own bytes; `zip_entry`
and `read_zip_entry` understand both forms.

`stage_sources` is the staging pass the Tag page runs before anything is recorded: it reads each
photo's header (no pixels) and checks URLs against fetch's address rules, so what would certainly
fail is rejected with its reason up front.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import posixpath
import re
import struct
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from pipeline.errors import BadInputError
from pipeline.models import IngestReport, SourceItem, SourceRef
from pipeline.images.normalize import IMAGE_EXTENSIONS, SUPPORTED_FORMATS
from pipeline.ingest.zips import DUPLICATE_MARK, zip_entry

REQUIRED_COLUMNS = ("sku", "image")
# Hints: kept with the item as the merchant wrote them. title/brand/category/notes describe the product;
# link/price/availability/condition/gender/age_group/size are product-feed facts that the Google Merchant
# and WooCommerce exports carry (pipeline/batches/feeds.py). Which of them a summarizer sees is its own
# choice (SUMMARY_HINTS in pipeline/summarizers/openai_summarizer.py): a price or a link is no summary fact.
HINT_COLUMNS = ("title", "brand", "category", "notes", "link", "price", "availability", "condition", "gender", "age_group", "size")
# The header names each column may have, in priority order: when several columns of a CSV could be
# one of these, the one named earliest here is used (and the ingest notice says so). Names are
# compared case-insensitively, ignoring spaces, '_' and '-' ("Image Src" = "image_src" = "imagesrc").
# A product feed's `link` is the product page, never the photo, so it is not an image alias; `url` is
# the image's last alias and the link's last: a CSV whose only address column is `url` gets its photos
# from it, one with a photo column as well (image, image_link, Image Src, …) gets the product page from it.
# A header cell is read as one column only (see match_columns).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "sku": ("sku", "Variant SKU", "product_sku", "item_sku", "id", "product_id", "item_id", "handle"),
    "image": ("image", "image_url", "image_link", "Image Src", "image_path", "image_file", "Variant Image",
              "photo", "photo_url", "picture", "picture_url", "img", "img_url", "file_name", "url"),
    "title": ("title", "name", "product_name", "product_title"),
    "brand": ("brand", "vendor", "manufacturer"),
    "category": ("category", "product_type", "type", "product_category"),
    "notes": ("notes", "note", "description", "product_description"),
    "link": ("link", "product_url", "product_link", "product_page", "url"),
    "price": ("price", "Variant Price", "regular_price", "list_price"),
    "availability": ("availability", "stock_status"),
    "condition": ("condition", "item_condition", "product_condition", "Google Shopping / Condition"),
    "gender": ("gender", "Google Shopping / Gender"),
    "age_group": ("age_group", "Google Shopping / Age Group"),
    "size": ("size", "product_size"),
}
MANIFEST_NAME = "manifest.csv"
MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_CELL_CHARS = 10_000  # a longer cell fails its row (the csv module's own 128 KB limit failed the batch)
DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class IngestLimits:
    max_images: int = 5000
    max_file_bytes: int = 25 * 1024 * 1024
    zip_max_total_bytes: int = 2 * 1024 * 1024 * 1024
    zip_max_ratio: float = 100.0


@dataclass
class CsvRow:
    line: int
    sku: str
    image: str
    hints: dict[str, str]
    error: str | None = None  # this row's own problem (e.g. an over-long cell); other rows still count


@dataclass
class ZipListing:
    """What a zip holds, from its central directory only."""

    path: Path
    images: list[str] = field(default_factory=list)  # member refs: the name, or name\\index for a repeated name
    labels: dict[str, str] = field(default_factory=dict)  # member ref -> what the summary shows, for repeated names
    by_name: dict[str, str] = field(default_factory=dict)  # name -> first usable member ref (what a CSV row means)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (member, why it cannot be used)
    error_by_name: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    manifest: list[CsvRow] | None = None
    manifest_error: str | None = None


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def collect_sources(paths: list[Path], limits: IngestLimits) -> IngestReport:
    """Every product found in `paths`, in order. CSV rows may point into zips of the same upload and
    at photos uploaded with them: such a photo becomes that CSV row, never an extra item."""
    report = IngestReport()
    zips = {path: list_zip(path, limits) for path in paths if path.suffix.lower() == ".zip"}
    referenced: set[tuple[Path, str]] = set()  # zip members CSV rows took
    referenced_files: set[str] = set()  # uploaded photos CSV rows took (absolute, normalized paths)
    # A CSV's rows past `max_images` can never be added (its items are contiguous): they are counted, not built.
    csv_notices: dict[Path, list[str]] = defaultdict(list)  # which columns each CSV was read from
    csv_items = {
        path: _csv_items(path, zips, referenced, referenced_files, limits.max_images, csv_notices[path])
        for path in paths if path.suffix.lower() == ".csv"
    }
    overflow = sum(extra for _, extra in csv_items.values())
    for path in paths:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            report.notices.extend(f"{path.name}: {notice}" for notice in csv_notices[path])
            report.items.extend(csv_items[path][0])
        elif suffix == ".zip":
            continue  # after the CSVs, so members a CSV names are not tagged twice
        elif is_image_name(path.name):
            if _file_key(path) not in referenced_files:
                report.items.append(SourceItem(source=path.name, ref=SourceRef("file", str(path))))
        else:
            report.items.append(SourceItem(source=path.name, ref=None, error="Not a supported file: upload images, a .zip of images or a .csv."))
    for listing in zips.values():
        _add_zip(listing, referenced, report)
    _warn_duplicate_skus(report)
    _apply_batch_limit(report, limits.max_images, overflow)
    return report


def list_zip(path: Path, limits: IngestLimits) -> ZipListing:
    listing = ZipListing(path=path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        listing.errors.append(("", "This file is not a valid zip archive."))
        return listing
    with archive:
        infos = archive.infolist()  # the central directory, read once
        counts: dict[str, int] = defaultdict(int)
        for info in infos:
            counts[info.filename] += 1
        seen: dict[str, int] = defaultdict(int)
        total = 0
        for index, info in enumerate(infos):
            name = info.filename
            if info.is_dir():
                continue
            if not is_safe_member_name(name):
                _zip_error(listing, name, "Unsafe file path inside the zip (absolute or '..'); skipped for safety.")
                continue
            if _is_hidden(name):
                continue
            if posixpath.basename(name).lower() == MANIFEST_NAME:
                listing.manifest, listing.manifest_error = _read_manifest(archive, info, name, listing.notices)
                continue
            if name.lower().endswith(".zip"):
                _zip_error(listing, name, "A zip inside the zip is not opened; upload that zip (or its photos) on its own.")
                continue
            if not is_image_name(name):
                listing.notices.append(f"{path.name}: skipped {name} (not an image)")
                continue
            repeated = counts[name] > 1
            ref = f"{name}{DUPLICATE_MARK}{index}" if repeated else name
            if repeated:
                seen[name] += 1
                listing.labels[ref] = f"{name} (copy {seen[name]} of {counts[name]})"
            problem = _member_problem(info, limits, total)
            if problem:
                _zip_error(listing, listing.labels.get(ref, name), problem)
                continue
            total += info.file_size
            listing.images.append(ref)
            listing.by_name.setdefault(name, ref)
        repeated_names = sorted(name for name, count in counts.items() if count > 1 and name in listing.by_name)
        if repeated_names:
            listing.notices.append(
                f"{path.name}: {len(repeated_names)} name(s) appear more than once ({', '.join(repeated_names[:3])}"
                f"{', …' if len(repeated_names) > 3 else ''}); each copy is tagged as its own photo."
            )
    return listing


def _zip_error(listing: ZipListing, member: str, error: str) -> None:
    listing.errors.append((member, error))
    listing.error_by_name.setdefault(member, error)


def is_safe_member_name(name: str) -> bool:
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return False
    return ".." not in PurePosixPath(name).parts


def _is_hidden(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(part == "__MACOSX" or part.startswith(".") for part in parts)


def _member_problem(info: zipfile.ZipInfo, limits: IngestLimits, total_so_far: int) -> str | None:
    if info.flag_bits & 0x1:
        return "This zip entry is password-protected."
    if info.file_size > limits.max_file_bytes:
        return f"This image is {info.file_size / 1e6:.1f} MB; the limit is {limits.max_file_bytes / 1e6:.1f} MB."
    if info.compress_size and info.file_size / info.compress_size > limits.zip_max_ratio:
        return "This zip entry expands far beyond its compressed size (possible zip bomb); skipped."
    if total_so_far + info.file_size > limits.zip_max_total_bytes:
        return f"The zip holds more than {limits.zip_max_total_bytes / 1e9:.1f} GB of images; the rest were skipped."
    return None


def _read_manifest(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, notices: list[str],
) -> tuple[list[CsvRow] | None, str | None]:
    if info.file_size > MAX_CSV_BYTES:
        return None, "manifest.csv is too large."
    try:
        described: list[str] = []
        rows = parse_csv(archive.read(info), notices=described)
        notices.extend(f"{posixpath.basename(str(archive.filename))}:{name}: {notice}" for notice in described)
    except BadInputError as exc:
        return None, f"manifest.csv: {exc}"
    base = posixpath.dirname(name)
    for row in rows:
        row.image = posixpath.normpath(posixpath.join(base, row.image)) if base else posixpath.normpath(row.image)
    return rows, None


def _add_zip(listing: ZipListing, referenced: set[tuple[Path, str]], report: IngestReport) -> None:
    label = listing.path.name
    report.notices.extend(listing.notices)
    if listing.manifest_error:
        report.notices.append(f"{label}: {listing.manifest_error} Images were tagged without SKUs.")
    for member, error in listing.errors:
        report.items.append(SourceItem(source=f"{label}:{member}" if member else label, ref=None, error=error))
    by_member: dict[str, CsvRow] = {}
    for row in listing.manifest or []:
        ref = listing.by_name.get(row.image, row.image)
        by_member.setdefault(ref, row)
    for member in listing.images:
        if (listing.path, member) in referenced:
            continue
        row = by_member.get(member)
        report.items.append(
            SourceItem(
                source=f"{label}:{listing.labels.get(member, member)}",
                ref=SourceRef("zip", str(listing.path), member),
                sku=row.sku if row else None,
                hints=row.hints if row else {},
                error=row.error if row else None,
            )
        )
    known = set(listing.images)
    for image, row in by_member.items():
        if image not in known and image not in listing.error_by_name:
            report.items.append(SourceItem(source=f"{label}:{image}", ref=None, sku=row.sku, hints=row.hints, error=f"manifest.csv line {row.line}: {image} is not in the zip."))


def _csv_items(
    path: Path, zips: dict[Path, ZipListing], referenced: set[tuple[Path, str]], referenced_files: set[str], max_rows: int | None = None,
    notices: list[str] | None = None,
) -> tuple[list[SourceItem], int]:
    """The CSV's items (at most `max_rows`) and how many rows were left out past that; which columns
    were used goes to `notices` when the header is not plain."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise BadInputError(f"The CSV is larger than {MAX_CSV_BYTES // 1024 // 1024} MB.")
        counted: list[int] = []
        rows = parse_csv(path.read_bytes(), max_rows=max_rows, skipped=counted, notices=notices)
    except BadInputError as exc:
        return [SourceItem(source=path.name, ref=None, error=str(exc))], 0
    items: list[SourceItem] = []
    base_dir, name = path.parent, path.name
    members = _member_index(zips)
    for row in rows:
        source = f"{name} line {row.line}"
        if row.error:
            items.append(SourceItem(source=source, ref=None, sku=row.sku or None, error=f"Line {row.line}: {row.error}"))
            continue
        if not row.sku:
            items.append(SourceItem(source=source, ref=None, hints=row.hints, error=f"Line {row.line}: the sku is empty."))
            continue
        try:
            ref = resolve_image_reference(row.image, base_dir, zips, members)
        except BadInputError as exc:
            items.append(SourceItem(source=source, ref=None, sku=row.sku, hints=row.hints, error=f"Line {row.line}: {exc}"))
            continue
        if ref.kind == "zip":
            referenced.add((Path(ref.location), ref.member or ""))
        elif ref.kind == "file":
            referenced_files.add(_file_key(Path(ref.location)))
        items.append(SourceItem(source=source, ref=ref, sku=row.sku, hints=row.hints))
    return items, sum(counted)


def _file_key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def _member_index(zips: dict[Path, ZipListing]) -> dict[str, tuple[SourceRef | None, str | None]]:
    """name -> (ref of its first usable copy, or None and why not), first zip wins: one dict lookup per CSV row."""
    index: dict[str, tuple[SourceRef | None, str | None]] = {}
    for listing in zips.values():
        for name, member in listing.by_name.items():
            index.setdefault(name, (SourceRef("zip", str(listing.path), member), None))
        for name, error in listing.error_by_name.items():
            index.setdefault(name, (None, error))
    return index


def resolve_image_reference(
    image: str, base_dir: Path, zips: dict[Path, ZipListing], members: dict[str, tuple[SourceRef | None, str | None]] | None = None,
) -> SourceRef:
    """A CSV's `image` cell -> where to read it. Local paths may not leave the CSV's folder."""
    image = image.strip()
    if not image:
        raise BadInputError("the image column is empty.")
    lowered = image.lower()
    if lowered.startswith(("http://", "https://")):
        return SourceRef("url", image)
    if lowered.startswith("s3://"):
        return SourceRef("s3", image)
    if "://" in image or lowered.startswith(("file:", "data:")):
        raise BadInputError("only http(s):// URLs, s3:// URIs or paths relative to the CSV are allowed.")
    relative = PurePosixPath(image.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise BadInputError(f"{image} points outside the uploaded files; use a path relative to the CSV.")
    member = posixpath.normpath(str(relative))
    found = (members if members is not None else _member_index(zips)).get(member)
    if found is not None:
        ref, error = found
        if ref is not None:
            return ref
        raise BadInputError(f"{image}: {error}")
    candidate = base_dir / relative
    if candidate.is_file():
        return SourceRef("file", str(candidate))
    raise BadInputError(f"image {image} was not found next to the CSV or in an uploaded zip.")


def column_key(name: str) -> str:
    """A header cell as compared with COLUMN_ALIASES: lower case, without spaces, '_' and '-'."""
    return re.sub(r"[\s_\-]+", "", name).lower()


_ALIAS_RANK = {role: {column_key(alias): rank for rank, alias in enumerate(aliases)} for role, aliases in COLUMN_ALIASES.items()}


@dataclass
class CsvColumns:
    """Which header cell each column (sku, image, hints) was read from."""

    header: list[str]  # the header cells as written
    at: dict[str, int] = field(default_factory=dict)  # column -> position used
    others: dict[str, list[int]] = field(default_factory=dict)  # column -> positions that could also have been it

    def missing(self) -> list[str]:
        return [column for column in REQUIRED_COLUMNS if column not in self.at]

    def describe(self) -> str | None:
        """Which columns were used ("photos from column 'Image Src', SKUs from 'Variant SKU'"), or
        None for a plain header (`sku`, `image` and hints under their own names, nothing ambiguous)."""
        if all(column_key(self.header[i]) == column_key(column) for column, i in self.at.items()) and not any(self.others.values()):
            return None
        parts = [f"photos from column {self._named('image')}", f"SKUs from {self._named('sku')}"]
        hints = [f"{column} from {self._named(column)}" for column in HINT_COLUMNS
                 if column in self.at and (column_key(self.header[self.at[column]]) != column_key(column) or self.others.get(column))]
        return ", ".join(parts) + (f"; {', '.join(hints)}" if hints else "")

    def _named(self, column: str) -> str:
        text = f"'{self.header[self.at[column]]}'"
        others = self.others.get(column)
        if others:
            also = ", ".join(f"'{self.header[i]}'" for i in others)
            text += f" (also possible: {also}; the first in this order wins: {', '.join(COLUMN_ALIASES[column])})"
        return text


def match_columns(cells: list[str]) -> CsvColumns:
    """Each column's header cell, by COLUMN_ALIASES: the alias earliest in its list wins, then the leftmost cell.
    Columns are matched in COLUMN_ALIASES order (sku, image, then the hints) and a cell is read as one
    column only: a `url` cell that became the image is not also the link, and one that became the link
    is not named as a possible image column."""
    columns = CsvColumns(header=[cell.strip() for cell in cells])
    taken: set[int] = set()
    for column, ranks in _ALIAS_RANK.items():
        found = sorted((ranks[key], i) for i, cell in enumerate(columns.header)
                       if i not in taken and (key := column_key(cell)) in ranks)
        if found:
            columns.at[column] = found[0][1]
            columns.others[column] = [i for _, i in found[1:]]
            taken.add(found[0][1])
    for column, others in columns.others.items():
        columns.others[column] = [i for i in others if i not in taken]
    return columns


def accepted_names(columns=REQUIRED_COLUMNS) -> str:
    return "; ".join(f"{column}: {', '.join(COLUMN_ALIASES[column])}" for column in columns) + " (any capitalisation; spaces, '_' and '-' ignored)"


def parse_csv(
    data: bytes, *, max_rows: int | None = None, skipped: list[int] | None = None, notices: list[str] | None = None,
) -> list[CsvRow]:
    """CSV bytes -> rows. Reads UTF-8 (with or without BOM), UTF-16 (with BOM) and Windows-1252;
    the delimiter is `,` `;` tab or `|`, whichever makes a header with the required columns;
    quoting and blank lines are handled. Column names may be any alias in COLUMN_ALIASES; when the
    header is not plain `sku`, `image`, which cells were used is appended to `notices`.
    A row with a cell over MAX_CELL_CHARS is that row's error.
    Rows past `max_rows` are only counted (appended to `skipped`)."""
    text = _decode(data)
    if not text.strip():
        raise BadInputError(f"The CSV is empty. Expected columns: {', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(HINT_COLUMNS)}).")
    if csv.field_size_limit() < len(text) + 1:
        csv.field_size_limit(len(text) + 1)  # a cell can never exceed the file: the csv module never fails the batch
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[CsvRow] = []
    hint_positions: list[tuple[str, int]] = []
    sku_at = image_at = extra = 0
    try:
        for cells in reader:
            if not any(cells) or not any(cell.strip() for cell in cells):
                continue  # blank line
            if header is None:
                columns = match_columns(cells)
                header = columns.header
                missing = columns.missing()
                if missing:
                    raise BadInputError(
                        f"The CSV is missing the column(s) {', '.join(missing)}. Expected columns: "
                        f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(HINT_COLUMNS)}); accepted names: {accepted_names(missing)}; "
                        f"found: {', '.join(header) or 'none'}."
                    )
                sku_at, image_at = columns.at["sku"], columns.at["image"]
                hint_positions = [(column, columns.at[column]) for column in HINT_COLUMNS if column in columns.at]
                described = columns.describe()
                if described and notices is not None:
                    notices.append(described)
                continue
            if max_rows is not None and len(rows) >= max_rows:
                extra += 1
                continue
            count = len(cells)
            sku = cells[sku_at].strip() if sku_at < count else ""
            image = cells[image_at].strip() if image_at < count else ""
            longest = max(map(len, cells))
            if longest > MAX_CELL_CHARS:
                column = next((header[i] if i < len(header) else f"column {i + 1}") for i, cell in enumerate(cells) if len(cell) == longest)
                error = f"the {column} cell is {longest:,} characters long; the limit is {MAX_CELL_CHARS:,}."
                rows.append(CsvRow(line=reader.line_num, sku=sku[:100], image="", hints={}, error=error))
                continue
            hints = {column: value for column, i in hint_positions if i < count and (value := cells[i].strip())}
            rows.append(CsvRow(line=reader.line_num, sku=sku, image=image, hints=hints))
    except csv.Error as exc:
        raise BadInputError(f"The CSV could not be read near line {reader.line_num}: {exc}. Save it again as CSV (UTF-8) from your spreadsheet.") from exc
    if header is None:
        raise BadInputError("The CSV has no header row.")
    if skipped is not None:
        skipped.append(extra)
    return rows


def _sniff_delimiter(text: str) -> str:
    """The delimiter whose header splits into the required columns; else the one giving most columns."""
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    best, best_count = ",", 0
    for delimiter in DELIMITERS:
        cells = next(csv.reader([header_line], delimiter=delimiter), [])
        if not match_columns(cells).missing():
            return delimiter
        if len(cells) > best_count:
            best, best_count = delimiter, len(cells)
    return best


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return _decode_as(data[len(codecs.BOM_UTF8):], "utf-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode_as(data, "utf-16")  # the BOM says which byte order
    head = data[:4096]
    if head.count(b"\x00") > len(head) // 4:
        # UTF-16 without a BOM: one zero byte per ASCII character, on the odd (LE) or even (BE) side
        odd_zeros = head[1::2].count(b"\x00")
        return _decode_as(data, "utf-16-le" if odd_zeros > head[0::2].count(b"\x00") else "utf-16-be")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # Excel's default on Windows


def _decode_as(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"The CSV is not valid {encoding.upper()} text; save it again as CSV (UTF-8).") from exc


def stage_sources(
    report: IngestReport, *, allow_private_urls: bool, resolve=None, max_hosts: int | None = None, resolve_timeout_s: float | None = None,
) -> IngestReport:
    """Staging checks, so every item that would certainly fail is rejected (with its reason) before
    anything is recorded or run; marks `report`'s items in place and returns it.

    - Photos (uploaded files, zip members, local files a CSV names): the image header is read
      (Pillow's `Image.open`, which parses the header and decodes no pixels; a zip member is streamed
      only as far as its header). Not an image, an unsupported format, a damaged header or an empty
      file is rejected. A photo damaged further in is still found out when it is decoded.
    - URLs: what fetch would refuse from the URL alone (scheme, credentials, an IP-literal host that
      is private, loopback, link-local or metadata), then the first `max_hosts` distinct host names
      are resolved within `resolve_timeout_s` altogether; one resolving to such an address is
      rejected. A name that does not resolve is not rejected here; fetch checks every URL again.
      `allow_private_urls` (ALLOW_PRIVATE_URLS) turns the address checks off, as it does in fetch."""
    from pipeline.ingest import fetch  # fetch reads zip members through this module

    _check_headers(report)
    urls = [item.ref.location for item in report.items if not item.error and item.ref is not None and item.ref.kind == "url"]
    if urls:
        options = {key: value for key, value in (("max_hosts", max_hosts), ("timeout_s", resolve_timeout_s)) if value is not None}
        refused, unchecked = fetch.screen_urls(urls, allow_private_urls, resolve=resolve, **options)
        for item in report.items:
            if not item.error and item.ref is not None and item.ref.kind == "url" and item.ref.location in refused:
                item.error = refused[item.ref.location]
        if unchecked:
            report.notices.append(f"{unchecked} more image host(s) were not looked up yet; their photos are checked as they are downloaded.")
    return report


def _check_headers(report: IngestReport) -> None:
    by_zip: dict[str, list[SourceItem]] = defaultdict(list)
    verdicts: dict[str, str | None] = {}  # a file named twice is read once
    for item in report.items:
        if item.error or item.ref is None:
            continue
        if item.ref.kind == "zip":
            by_zip[item.ref.location].append(item)
        elif item.ref.kind == "file":
            key = _file_key(Path(item.ref.location))
            if key not in verdicts:
                verdicts[key] = _file_header_problem(Path(item.ref.location))
            item.error = verdicts[key]
    for location, items in by_zip.items():
        try:
            archive = zipfile.ZipFile(location)
        except (zipfile.BadZipFile, OSError):
            for item in items:
                item.error = "This file is not a valid zip archive."
            continue
        with archive:
            for item in items:
                item.error = _member_header_problem(archive, item.ref.member or "")


def _file_header_problem(path: Path) -> str | None:
    try:
        if path.stat().st_size == 0:
            return "The file is empty (0 bytes)."
        with path.open("rb") as stream:
            return header_problem(stream)
    except OSError:
        return f"The file {path.name} could not be read."


def _member_header_problem(archive: zipfile.ZipFile, member: str) -> str | None:
    try:
        info = zip_entry(archive, member)
        if info.file_size == 0:
            return "The file is empty (0 bytes)."
        with archive.open(info) as stream:  # decompresses only as far as Pillow reads the header
            return header_problem(stream)
    except KeyError:
        return f"{member.partition(DUPLICATE_MARK)[0]} is missing from the zip."
    except RuntimeError:  # zipfile's way of saying encrypted
        return "This zip entry is password-protected."
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, zlib.error):
        return "This zip entry is damaged or uses an unsupported compression method."


def header_problem(stream) -> str | None:
    """Why the image in `stream` (a seekable binary file) cannot be used, from its header alone; None if it looks fine.
    The same sentences as pipeline.images.normalize.open_image."""
    try:
        with Image.open(stream) as image:
            if image.format not in SUPPORTED_FORMATS:
                return f"Image format {image.format} is not supported (use JPEG, PNG, WebP, GIF, TIFF, BMP or HEIC)."
            width, height = image.size
            if width < 1 or height < 1:
                return "The image has no pixels."
    except Image.DecompressionBombError:
        return "The image is too large to process safely."
    except UnidentifiedImageError:
        return "This file is not a readable image (supported: JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC)."
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError):
        return "This zip entry is damaged or uses an unsupported compression method."
    except (OSError, ValueError, SyntaxError, struct.error, IndexError, TypeError):
        return "The image file is damaged or incomplete and cannot be read."
    return None


def _warn_duplicate_skus(report: IngestReport) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for item in report.items:
        if item.sku:
            seen[item.sku].append(item.source)
    for sku, sources in seen.items():
        if len(sources) > 1:
            report.notices.append(f"SKU {sku} appears {len(sources)} times ({', '.join(sources[:3])}{', …' if len(sources) > 3 else ''}); each is tagged separately.")


def _apply_batch_limit(report: IngestReport, max_images: int, already_dropped: int = 0) -> None:
    if len(report.items) + already_dropped > max_images:
        dropped = max(0, len(report.items) - max_images) + already_dropped
        del report.items[max_images:]
        report.notices.append(f"A batch holds at most {max_images} images; the last {dropped} were not added. Upload them as another batch.")
