"""Near-duplicates at staging: hash uploaded photos cheaply before anything runs (pipeline/images/perceptual.py
holds the hash and the catalogue index), so the Tag page and `python -m pipeline tag` list look-alikes before Run
(`near_duplicate_notices`, shared by both)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline.errors import BadInputError
from pipeline.images.decode_budget import DecodeBudget, default_budget
from pipeline.images.normalize import exif_orientation, open_image, orient
from pipeline.images.perceptual import HashIndex, distance, phash

STAGING_MAX_PIXELS = 4_000_000  # non-JPEG files larger than this are not decoded at staging (no draft mode)
STAGING_MAX_BYTES = 25 * 1024 * 1024
# A JPEG's draft decode is kept at least this many pixels a side: a 300 px photo read at 1/8 (38 px) hashed 30 bits
# away from the same photo at 400 px (tests/test_transform_near_duplicates.py); at >= 128 px they agree within a few
DRAFT_MIN_SIDE = 128


class NotCheap(Exception):
    """The file cannot be hashed cheaply at staging (it is compared when it is tagged)."""


def staging_hash(data: bytes, *, budget: DecodeBudget | None = None, max_pixels: int = STAGING_MAX_PIXELS) -> str:
    """Hash raw photo bytes cheaply: a JPEG decodes in draft mode (reduced up to 8x, never below DRAFT_MIN_SIDE px a
    side), anything else only when it has at most `max_pixels`; the decode holds the decode budget. Raises NotCheap, or BadInputError /
    OSError for a file that cannot be read (staging then leaves it to the run, which fails its own row)."""
    image = open_image(data, max_pixels=50_000_000)
    orientation = exif_orientation(image, data)
    if image.format in ("JPEG", "MPO"):  # at most 1/8 scale, never under DRAFT_MIN_SIDE px (a small photo's 1/8 hashes far off)
        image.draft("RGB", (max(1, image.width // 8, min(image.width, DRAFT_MIN_SIDE)), max(1, image.height // 8, min(image.height, DRAFT_MIN_SIDE))))
    elif image.width * image.height > max_pixels:
        raise NotCheap
    width, height = image.size
    budget = budget if budget is not None else default_budget()
    with budget.hold(width * height * 4 * 2):
        image.load()
        image.thumbnail((128, 128), Image.Resampling.BILINEAR)
    return phash(orient(image, orientation))


@dataclass
class StagedHashes:
    """What staging found: hash per source name, and the names it did not hash (with why)."""

    hashes: dict[str, str]
    skipped: list[str]


def hash_staged(report, *, budget: DecodeBudget | None = None, max_files: int = 2000) -> StagedHashes:
    """Hash every uploaded photo (files and zip members) of a staged `IngestReport` that is still ready.
    URLs and S3 objects are not downloaded at staging; they are compared as they are tagged."""
    hashes: dict[str, str] = {}
    skipped: list[str] = []
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for item in report.items:
            if item.error or item.ref is None or item.source in hashes:
                continue
            if item.ref.kind not in ("file", "zip") or len(hashes) >= max_files:
                skipped.append(item.source)
                continue
            try:
                if item.ref.kind == "file":
                    path = Path(item.ref.location)
                    if path.stat().st_size > STAGING_MAX_BYTES:
                        raise NotCheap
                    data = path.read_bytes()
                else:
                    archive = archives.get(item.ref.location)
                    if archive is None:
                        archive = archives[item.ref.location] = zipfile.ZipFile(item.ref.location)
                    info = archive.getinfo(item.ref.member or "")
                    if info.file_size > STAGING_MAX_BYTES:
                        raise NotCheap
                    data = archive.read(info)
                hashes[item.source] = staging_hash(data, budget=budget)
            except (NotCheap, BadInputError, OSError, ValueError, SyntaxError, KeyError, zipfile.BadZipFile):
                skipped.append(item.source)
    finally:
        for archive in archives.values():
            archive.close()
    return StagedHashes(hashes, skipped)


def staging_notices(staged: StagedHashes, max_distance: int, catalogue: HashIndex | None = None) -> list[str]:
    """Plain sentences for the Tag page: which staged files look alike, which look like earlier items,
    and how many were not compared."""
    notices: list[str] = []
    names = list(staged.hashes)
    groups: list[list[tuple[str, int]]] = []
    placed: set[str] = set()
    for i, first in enumerate(names):
        if first in placed:
            continue
        group = [(first, 0)]
        for other in names[i + 1:]:
            if other not in placed and (d := distance(staged.hashes[first], staged.hashes[other])) <= max_distance:
                group.append((other, d))
                placed.add(other)
        if len(group) > 1:
            placed.add(first)
            groups.append(group)
    for group in groups:
        rest = ", ".join(f"{name} ({d} bits apart)" for name, d in group[1:])
        notices.append(f"These photos look alike: {group[0][0]} and {rest}.")
    if catalogue is not None and len(catalogue):
        for name in names:
            match = catalogue.nearest(staged.hashes[name], max_distance)
            if match is not None:
                notices.append(f"{name} looks like {match.entry.label}, already tagged ({match.distance} bits apart).")
    if staged.skipped:
        shown = ", ".join(staged.skipped[:5]) + (", …" if len(staged.skipped) > 5 else "")
        notices.append(f"{len(staged.skipped)} photo(s) were not compared for near-duplicates before Run "
                       f"(links, large non-JPEG files or unreadable files: {shown}); they are compared as they are tagged.")
    return notices


def near_duplicate_notices(store, report, *, max_distance: int, catalogue_max: int,
                           budget: DecodeBudget | None = None) -> list[str]:
    """Which staged photos of `report` (an IngestReport) look alike, and which look like photos tagged before, as
    plain sentences (the Tag page and the CLI print the same). Uploaded photos are hashed cheaply (JPEG in draft mode,
    reduced up to 8x but never below 128 px a side; other formats up to 4 MP) under the decode budget; the catalogue is one store read of at most `catalogue_max`
    hashes (NEAR_DUPLICATE_CATALOGUE_MAX; 0: not compared with earlier photos)."""
    catalogue = None
    if catalogue_max > 0 and hasattr(store, "near_duplicate_catalogue"):
        from pipeline.images.perceptual import CatalogueEntry

        catalogue = HashIndex([CatalogueEntry(*row) for row in store.near_duplicate_catalogue(catalogue_max)])
    return staging_notices(hash_staged(report, budget=budget), max_distance, catalogue)
