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
(`staging_hash` in pipeline/images/staging_hashes.py) reads uploaded files cheaply (JPEG draft mode at 1/8 scale but at least 128 px a side, other formats only up to
`STAGING_MAX_PIXELS`) under the decode budget, and says which it skipped.

Catalogue lookup (`HashIndex`): hashes loaded once per run into a numpy uint64 array (at most
NEAR_DUPLICATE_CATALOGUE_MAX, newest first) and compared with one vectorised XOR + popcount per photo.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image


HASH_BITS = 64
DEFAULT_MAX_DISTANCE = 10
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
