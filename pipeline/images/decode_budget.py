"""A process-wide cap on the bytes of decoded pixels in flight, shared by every worker thread.

Why: a 208 KB PNG can declare 7000x7000 RGBA pixels, which decode to 196 MB. Bounding the
*number* of workers does not bound memory (each may hold such an image); bounding the *pixels*
does. Every full decode asks the budget first (`with budget.hold(nbytes): image.load()`), and
waits while other decodes hold too much of it.

Rules:
- Requests are granted in arrival order (FIFO): a large image is not starved by a stream of small
  ones, and a small one never overtakes a waiting large one.
- One image larger than the whole budget is *not refused*: it waits until nothing else is being
  decoded, then decodes alone with the whole budget held. Refusing would reject photos that pass
  `MAX_PIXELS` (50 MP x 4 bytes = 200 MB at most, the largest decode the pipeline accepts), and
  "alone" already keeps the peak at one image.
- `limit_bytes <= 0` turns the budget off (every request granted at once), for comparisons.

Counting bytes is not enough on glibc: with many threads, freed 16 MB Pillow blocks stay in
per-thread malloc arenas (the dynamic mmap threshold rises to 32 MB after the first large free),
and a 256 MB budget still ended at 1.8 GB of RSS. So an enabled budget also makes freed pixels
leave the process (`return_freed_memory`): Pillow allocates images in 64 MB blocks (above glibc's
largest mmap threshold, so they are mapped and unmapped), and glibc keeps at most 2 arenas.
Measured in bench/memory.py.

The same class is also the *raw bytes* budget (`default_raw_budget`, RAW_BYTES_BUDGET_MB): the
runner's `prepare_image` holds the bytes of the file it reads under it until the normalized JPEG
exists. Order, so the two can never wait for each other in a cycle: a worker takes the raw budget
first and the decode budget (inside `normalize_image`) second; nothing waits for the raw budget
while holding the decode budget, and decode holders wait for nothing. `resize` (the read's true
size known) never waits. A waiting `acquire(..., cancel=event)` ends with BudgetWaitCancelled as
soon as the run is stopped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

MB = 1024 * 1024
CANCEL_POLL_S = 0.05  # how often a waiting acquire looks at its cancel event


class BudgetWaitCancelled(Exception):
    """An `acquire` given a cancel event stopped waiting because the event was set; nothing is held."""


class _HasIsSet(Protocol):  # a threading.Event, or anything with is_set()
    def is_set(self) -> bool: ...


class DecodeBudget:
    """Counting gate on bytes of decoded pixels; thread-safe, FIFO, reentrancy is *not* supported
    (a thread must not ask again while it holds a grant: it could wait for itself)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = int(limit_bytes)
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._in_use = 0
        self._peak = 0
        if self.enabled:
            return_freed_memory()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._in_use

    @property
    def peak(self) -> int:
        """Most bytes ever granted at once (for tests and benchmarks)."""
        with self._cond:
            return self._peak

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def grant_for(self, nbytes: int) -> int:
        """What a request of `nbytes` actually takes: at most the whole budget."""
        nbytes = max(0, int(nbytes))
        return min(nbytes, self.limit) if self.enabled else nbytes

    def acquire(self, nbytes: int, cancel: _HasIsSet | None = None) -> int:
        """Wait until `nbytes` (capped at the whole budget) fit, take them; returns the grant to release.
        With `cancel`, stop waiting (BudgetWaitCancelled, nothing taken) once it is set."""
        grant = self.grant_for(nbytes)
        with self._cond:
            if cancel is not None and cancel.is_set():
                raise BudgetWaitCancelled
            if not self.enabled:
                self._take(grant)
                return grant
            ticket = object()
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._in_use + grant > self.limit:
                    if cancel is None:
                        self._cond.wait()
                        continue
                    self._cond.wait(CANCEL_POLL_S)
                    if cancel.is_set():
                        raise BudgetWaitCancelled
            except BaseException:
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._take(grant)
            self._cond.notify_all()  # the next in line may fit too
            return grant

    def release(self, grant: int) -> None:
        with self._cond:
            if self._in_use - grant < 0:  # refused before counting: the count stays right for the others
                raise RuntimeError("DecodeBudget released more than was acquired.")
            self._in_use -= grant
            self._cond.notify_all()

    def resize(self, grant: int, nbytes: int) -> int:
        """Turn a held `grant` into one for `nbytes` (capped at the whole budget) *without waiting*:
        less gives the rest back, more is taken even past the limit (later requests wait for it).
        Returns the new grant, the one to release."""
        new = self.grant_for(nbytes)
        with self._cond:
            if self._in_use + new - grant < 0:
                raise RuntimeError("DecodeBudget resized a grant it did not hold.")
            self._take(new - grant)
            if new < grant:
                self._cond.notify_all()
        return new

    @contextmanager
    def hold(self, nbytes: int, cancel: _HasIsSet | None = None) -> Iterator[int]:
        grant = self.acquire(nbytes) if cancel is None else self.acquire(nbytes, cancel)
        try:
            yield grant
        finally:
            self.release(grant)

    def _take(self, grant: int) -> None:
        self._in_use += grant
        self._peak = max(self._peak, self._in_use)


PILLOW_BLOCK_BYTES = 64 * MB
M_ARENA_MAX = -8  # glibc mallopt parameter
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter: a fixed value also stops the dynamic threshold rising
MMAP_THRESHOLD_BYTES = 4 * MB  # raw image bytes (up to 25 MB each) are mapped and unmapped, not left in an arena
_allocator_done = False


def return_freed_memory() -> None:
    """Once per process: big Pillow images in mmapped blocks, at most 2 glibc malloc arenas."""
    global _allocator_done
    if _allocator_done:
        return
    _allocator_done = True
    from PIL import Image

    Image.core.set_block_size(max(PILLOW_BLOCK_BYTES, Image.core.get_block_size()))
    if platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt(M_ARENA_MAX, 2)
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        except (OSError, AttributeError):
            pass


_default: DecodeBudget | None = None
_default_lock = threading.Lock()


def default_budget() -> DecodeBudget:
    """The budget every `normalize_image` call shares unless given its own; made on first use from
    `Settings().decode_budget_mb` (or `configure_default_budget`)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DecodeBudget(_budget_mb_from_settings() * MB)
        return _default


def configure_default_budget(megabytes: float) -> DecodeBudget:
    """Replace the process-wide budget (the service calls this with `settings.decode_budget_mb`).
    Decodes already holding the old budget finish under it."""
    global _default
    with _default_lock:
        if _default is None or _default.limit != int(megabytes * MB):  # same size: keep the one in use
            _default = DecodeBudget(int(megabytes * MB))
        return _default


def _budget_mb_from_settings(field: str = "decode_budget_mb") -> float:
    from pipeline.settings import Settings

    try:
        return getattr(Settings(), field)
    except Exception:  # an unrelated invalid setting must not stop photos: use the field's default
        return Settings.model_fields[field].default


_raw: DecodeBudget | None = None


def default_raw_budget() -> DecodeBudget:
    """The budget of raw (still encoded) image bytes every worker's `prepare_image` shares; made on
    first use from `Settings().raw_bytes_budget_mb` (or `configure_raw_budget`)."""
    global _raw
    with _default_lock:
        if _raw is None:
            _raw = DecodeBudget(int(_budget_mb_from_settings("raw_bytes_budget_mb") * MB))
        return _raw


def configure_raw_budget(megabytes: float) -> DecodeBudget:
    """Replace the process-wide raw bytes budget (the service calls this with
    `settings.raw_bytes_budget_mb`); reads already holding the old one finish under it."""
    global _raw
    with _default_lock:
        if _raw is None or _raw.limit != int(megabytes * MB):
            _raw = DecodeBudget(int(megabytes * MB))
        return _raw
