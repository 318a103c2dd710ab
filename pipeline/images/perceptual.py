"""Perceptual hashes of photos: near-duplicates inside a batch and against the catalogue (issue 19).

Which hash, and why: a 64-bit **pHash** (the DCT hash of imagehash / pHash.org): the photo as 32x32
grey, its 2-D DCT, the 8x8 lowest frequencies, one bit per coefficient above their median. It keeps
the coarse shape of the picture, so a re-encoded, resized, slightly re-cropped or brightened copy
stays within a few bits, and because every hash has about half its bits set (median split), two
different products on the same white background still differ in many bits. dHash (adjacent-pixel
gradients) was the cheaper choice, but on a white studio background most of its bits are "no
gradient" for every photo, which pulls different products together. Numpy + Pillow only: the DCT is
one 32x32 matrix product each way.

Distance: Hamming distance of two hashes (XOR, count the ones). The threshold is the setting
NEAR_DUPLICATE_MAX_DISTANCE (default 10 of 64 bits; measured in tests/test_near_duplicates.py: copies
0-6 bits, different products on white 22 or more).

Where: `normalize_image` hashes the small RGB image it makes anyway (`NormalizedImage.phash`); staging
(`staging_hash`) reads uploaded files cheaply (JPEG draft mode at 1/8 scale, other formats only up to
`STAGING_MAX_PIXELS`) under the decode budget, and says which it skipped.

Catalogue lookup (`HashIndex`): hashes loaded once per run into a numpy uint64 array (at most
NEAR_DUPLICATE_CATALOGUE_MAX, newest first) and compared with one vectorised XOR + popcount per photo.
"""

from __future__ import annotations

import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.images.decode_budget import DecodeBudget, default_budget

HASH_BITS = 64
DEFAULT_MAX_DISTANCE = 10
STAGING_MAX_PIXELS = 4_000_000  # non-JPEG files larger than this are not decoded at staging (no draft mode)
STAGING_MAX_BYTES = 25 * 1024 * 1024
_SIDE = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0, :] = np.sqrt(1.0 / n)
    return matrix


_DCT = _dct_matrix(_SIDE)


def phash(image: Image.Image) -> str:
    """64-bit DCT hash of a (loaded) image as 16 hex digits. Transparency counts as white."""
    if image.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        image = white
    grey = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:8, :8].flatten()
    bits = low > np.median(low)
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def distance(a: str, b: str) -> int:
    """Hamming distance of two hex hashes (0 = same, 64 = every bit differs)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class CatalogueEntry:
    """One tagged item's hash as the store keeps it (for the catalogue lookup)."""

    phash: str
    batch_id: int
    item_id: int
    seq: int

    @property
    def label(self) -> str:
        return f"batch {self.batch_id} item {self.seq + 1}"


@dataclass(frozen=True)
class Match:
    entry: CatalogueEntry
    distance: int


class HashIndex:
    """Hashes in a numpy uint64 array; `nearest` is one XOR + popcount over all of them. Thread-safe;
    `add` appends (amortised: the array grows by doubling)."""

    def __init__(self, entries: list[CatalogueEntry] | tuple[CatalogueEntry, ...] = ()) -> None:
        self._lock = threading.RLock()  # nearest_then_add holds it around nearest + add
        self._entries: list[CatalogueEntry] = list(entries)
        size = max(16, len(self._entries))
        self._hashes = np.zeros(size, dtype=np.uint64)
        self._ids = np.full(size, -1, dtype=np.int64)
        if self._entries:
            n = len(self._entries)
            self._hashes[:n] = np.array([int(e.phash, 16) for e in self._entries], dtype=np.uint64)
            self._ids[:n] = [e.item_id for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: CatalogueEntry) -> None:
        with self._lock:
            n = len(self._entries)
            if n >= len(self._hashes):
                grown, ids = np.zeros(2 * len(self._hashes), dtype=np.uint64), np.full(2 * len(self._hashes), -1, dtype=np.int64)
                grown[:n], ids[:n] = self._hashes[:n], self._ids[:n]
                self._hashes, self._ids = grown, ids
            self._hashes[n], self._ids[n] = np.uint64(int(entry.phash, 16)), entry.item_id
            self._entries.append(entry)

    def nearest(self, phash_hex: str, max_distance: int, *, exclude_item: int | None = None) -> Match | None:
        """The closest entry within `max_distance` bits (ties: the earliest added), or None."""
        with self._lock:
            n = len(self._entries)
            hashes, entries = self._hashes[:n], self._entries
            if not n:
                return None
            distances = np.bitwise_count(np.bitwise_xor(hashes, np.uint64(int(phash_hex, 16))))
            if exclude_item is not None:
                distances[self._ids[:n] == exclude_item] = HASH_BITS + 1
            best = int(np.argmin(distances))
            if int(distances[best]) > max_distance:
                return None
            return Match(entries[best], int(distances[best]))

    def nearest_then_add(self, phash_hex: str, max_distance: int, entry: CatalogueEntry) -> Match | None:
        """`nearest` (the entry's own item excluded), then `add`, as one step: of two look-alikes looked up
        at the same time, the second always finds the first."""
        with self._lock:
            match = self.nearest(phash_hex, max_distance, exclude_item=entry.item_id)
            self.add(entry)
            return match


# Staging ------------------------------------------------------------------------------------------

class NotCheap(Exception):
    """The file cannot be hashed cheaply at staging (it is compared when it is tagged)."""


def staging_hash(data: bytes, *, budget: DecodeBudget | None = None, max_pixels: int = STAGING_MAX_PIXELS) -> str:
    """Hash raw photo bytes cheaply: a JPEG decodes at 1/8 scale (draft mode), anything else only when it
    has at most `max_pixels`; the decode holds the decode budget. Raises NotCheap, or BadInputError /
    OSError for a file that cannot be read (staging then leaves it to the run, which fails its own row)."""
    from pipeline.images.normalize import exif_orientation, open_image, orient

    image = open_image(data, max_pixels=50_000_000)
    orientation = exif_orientation(image, data)
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
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
    from pipeline.errors import BadInputError

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
