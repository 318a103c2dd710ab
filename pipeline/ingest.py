"""Uploaded paths (images, zips, CSVs) -> a list of SourceItems to tag.

Ingest only reads names, headers and CSV text; image bytes are read later, one item at a time,
so a 1,000-image zip never sits in memory. Every problem becomes one error item or a notice.
"""

from __future__ import annotations

import csv
import io
import posixpath
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.errors import BadInputError
from pipeline.models import IngestReport, SourceItem, SourceRef
from pipeline.normalize import IMAGE_EXTENSIONS

REQUIRED_COLUMNS = ("sku", "image")
HINT_COLUMNS = ("title", "brand", "category", "notes")
MANIFEST_NAME = "manifest.csv"
MAX_CSV_BYTES = 20 * 1024 * 1024


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


@dataclass
class ZipListing:
    """What a zip holds, from its central directory only."""

    path: Path
    images: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # member -> why it cannot be used
    notices: list[str] = field(default_factory=list)
    manifest: list[CsvRow] | None = None
    manifest_error: str | None = None


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def collect_sources(paths: list[Path], limits: IngestLimits) -> IngestReport:
    """Every product found in `paths`, in order. CSV rows may point into zips of the same upload."""
    report = IngestReport()
    zips = {path: list_zip(path, limits) for path in paths if path.suffix.lower() == ".zip"}
    referenced: set[tuple[Path, str]] = set()
    for path in paths:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            _add_csv(path, zips, referenced, report)
        elif suffix == ".zip":
            continue  # after the CSVs, so members a CSV names are not tagged twice
        elif is_image_name(path.name):
            report.items.append(SourceItem(source=path.name, ref=SourceRef("file", str(path))))
        else:
            report.items.append(SourceItem(source=path.name, ref=None, error="Not a supported file: upload images, a .zip of images or a .csv."))
    for listing in zips.values():
        _add_zip(listing, referenced, report)
    _warn_duplicate_skus(report)
    _apply_batch_limit(report, limits.max_images)
    return report


def list_zip(path: Path, limits: IngestLimits) -> ZipListing:
    listing = ZipListing(path=path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        listing.errors[""] = "This file is not a valid zip archive."
        return listing
    with archive:
        total = 0
        for info in archive.infolist():
            name = info.filename
            if info.is_dir():
                continue
            if not is_safe_member_name(name):
                listing.errors[name] = "Unsafe file path inside the zip (absolute or '..'); skipped for safety."
                continue
            if _is_hidden(name):
                continue
            if posixpath.basename(name).lower() == MANIFEST_NAME:
                listing.manifest, listing.manifest_error = _read_manifest(archive, info, name)
                continue
            if not is_image_name(name):
                listing.notices.append(f"{path.name}: skipped {name} (not an image)")
                continue
            problem = _member_problem(info, limits, total)
            if problem:
                listing.errors[name] = problem
                continue
            total += info.file_size
            listing.images.append(name)
    return listing


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


def _read_manifest(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> tuple[list[CsvRow] | None, str | None]:
    if info.file_size > MAX_CSV_BYTES:
        return None, "manifest.csv is too large."
    try:
        rows = parse_csv(archive.read(info))
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
    for member, error in listing.errors.items():
        report.items.append(SourceItem(source=f"{label}:{member}" if member else label, ref=None, error=error))
    by_member = {row.image: row for row in listing.manifest or []}
    for member in listing.images:
        if (listing.path, member) in referenced:
            continue
        row = by_member.get(member)
        report.items.append(
            SourceItem(
                source=f"{label}:{member}",
                ref=SourceRef("zip", str(listing.path), member),
                sku=row.sku if row else None,
                hints=row.hints if row else {},
            )
        )
    for image, row in by_member.items():
        if image not in listing.images and image not in listing.errors:
            report.items.append(SourceItem(source=f"{label}:{image}", ref=None, sku=row.sku, hints=row.hints, error=f"manifest.csv line {row.line}: {image} is not in the zip."))


def _add_csv(path: Path, zips: dict[Path, ZipListing], referenced: set[tuple[Path, str]], report: IngestReport) -> None:
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise BadInputError(f"The CSV is larger than {MAX_CSV_BYTES // 1024 // 1024} MB.")
        rows = parse_csv(path.read_bytes())
    except BadInputError as exc:
        report.items.append(SourceItem(source=path.name, ref=None, error=str(exc)))
        return
    for row in rows:
        source = f"{path.name} line {row.line}"
        if not row.sku:
            report.items.append(SourceItem(source=source, ref=None, hints=row.hints, error=f"Line {row.line}: the sku is empty."))
            continue
        try:
            ref = resolve_image_reference(row.image, path.parent, zips)
        except BadInputError as exc:
            report.items.append(SourceItem(source=source, ref=None, sku=row.sku, hints=row.hints, error=f"Line {row.line}: {exc}"))
            continue
        if ref.kind == "zip":
            referenced.add((Path(ref.location), ref.member or ""))
        report.items.append(SourceItem(source=source, ref=ref, sku=row.sku, hints=row.hints))


def resolve_image_reference(image: str, base_dir: Path, zips: dict[Path, ZipListing]) -> SourceRef:
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
    for listing in zips.values():
        if member in listing.images:
            return SourceRef("zip", str(listing.path), member)
        if member in listing.errors:
            raise BadInputError(f"{image}: {listing.errors[member]}")
    candidate = base_dir / relative
    if candidate.is_file():
        return SourceRef("file", str(candidate))
    raise BadInputError(f"image {image} was not found next to the CSV or in an uploaded zip.")


def parse_csv(data: bytes) -> list[CsvRow]:
    """CSV bytes -> rows. Handles a UTF-8 BOM, `;` or `,` delimiters, quoting and blank lines."""
    text = _decode(data)
    if not text.strip():
        raise BadInputError(f"The CSV is empty. Expected columns: {', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(HINT_COLUMNS)}).")
    header_line = text.lstrip("\r\n").splitlines()[0]
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[CsvRow] = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            missing = [column for column in REQUIRED_COLUMNS if column not in header]
            if missing:
                raise BadInputError(
                    f"The CSV is missing the column(s) {', '.join(missing)}. Expected columns: "
                    f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(HINT_COLUMNS)}); found: {', '.join(header) or 'none'}."
                )
            continue
        record = {header[i]: cells[i].strip() for i in range(min(len(header), len(cells)))}
        hints = {column: record[column] for column in HINT_COLUMNS if record.get(column)}
        rows.append(CsvRow(line=reader.line_num, sku=record.get("sku", ""), image=record.get("image", ""), hints=hints))
    if header is None:
        raise BadInputError("The CSV has no header row.")
    return rows


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # Excel's default on Windows


def _warn_duplicate_skus(report: IngestReport) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for item in report.items:
        if item.sku:
            seen[item.sku].append(item.source)
    for sku, sources in seen.items():
        if len(sources) > 1:
            report.notices.append(f"SKU {sku} appears {len(sources)} times ({', '.join(sources[:3])}{', …' if len(sources) > 3 else ''}); each is tagged separately.")


def _apply_batch_limit(report: IngestReport, max_images: int) -> None:
    if len(report.items) > max_images:
        dropped = len(report.items) - max_images
        del report.items[max_images:]
        report.notices.append(f"A batch holds at most {max_images} images; the last {dropped} were not added. Upload them as another batch.")
