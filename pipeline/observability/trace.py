"""One item's way through the stages: a log event and a latency sample per stage, its stage timings
for the store (`ItemRecord.stage_ms`), and a short stable `error_kind` when it fails.

    trace = ItemTrace(batch_id, item_id)
    with trace.stage("fetch"):
        ...
    trace.finish(ok=False)  # items ok / failed (by kind) counters and the item's own event

Stages, in order: fetch, normalize, checks, caption, summarize, save. Outcomes: ok, error, cancelled.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline.observability import metrics
from pipeline.observability.logs import ITEM_LOGGER

STAGES = ("fetch", "normalize", "checks", "caption", "summarize", "save")
# error_kind prefix per stage (the codes read like the problem: bad_image, summary_quota, …)
_PREFIX = {"fetch": "fetch", "normalize": "image", "checks": "image", "caption": "caption", "summarize": "summary", "save": "save"}
ITEM_TIMEOUT = "item_timeout"  # ITEM_DEADLINE_S passed; the runner stopped waiting

_log = logging.getLogger(ITEM_LOGGER)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_timeout(exc: BaseException) -> bool:
    name = type(exc).__name__.lower()
    text = str(exc).lower()
    return (isinstance(exc, (TimeoutError, socket.timeout)) or "timeout" in name or "timed out" in text
            or "in time" in text or "took longer than" in text)


def error_kind(exc: BaseException, stage: str) -> str:
    """A short stable code for why `stage` failed: fetch_timeout, fetch_too_large, fetch_blocked, fetch_failed,
    bad_image, image_too_large, caption_timeout, caption_failed, summary_quota, summary_rate_limited,
    summary_timeout, summary_refused, summary_invalid, summary_failed, save_failed, <stage>_config (a deployment
    problem), <stage>_unexpected (not an error the pipeline knows: a bug to look at)."""
    from pipeline.errors import BadInputError, ConfigError, UserFacingError

    prefix = _PREFIX.get(stage, stage)
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if prefix == "summary" and ("insufficient_quota" in text or "out of credit" in text):
        return "summary_quota"
    if any(isinstance(e, ConfigError) for e in chain):
        return f"{prefix}_config"  # a deployment problem (missing key, no AWS access, …), not the item's
    if any(isinstance(e, MemoryError) for e in chain):
        return "image_too_large" if prefix == "image" else f"{prefix}_out_of_memory"
    if prefix == "summary":
        if "RateLimitError" in names or "rate limit" in text or "rate-limit" in text:
            return "summary_rate_limited"
        if any(_is_timeout(e) for e in chain):
            return "summary_timeout"
        if "declined" in text or "content filter" in text or "refus" in text:
            return "summary_refused"
        if "json" in text or "format" in text or "cut off" in text or "empty" in text:
            return "summary_invalid"
    if any(_is_timeout(e) for e in chain):
        return f"{prefix}_timeout"
    if prefix == "image" and isinstance(exc, BadInputError):
        return "image_too_large" if ("pixels" in text or "too large" in text) else "bad_image"
    if prefix == "fetch" and isinstance(exc, BadInputError):
        if "limit" in text or "larger than" in text or "too large" in text:
            return "fetch_too_large"
        if "private" in text or "internal address" in text or "not allowed" in text or "may read" in text:
            return "fetch_blocked"
    if isinstance(exc, UserFacingError):
        return f"{prefix}_failed"
    return f"{prefix}_unexpected"


@dataclass
class Span:
    """What a stage reports besides its duration (set inside the `with`)."""

    fields: dict[str, Any] = field(default_factory=dict)
    carved: list[tuple[str, float]] = field(default_factory=list)

    def carve(self, stage: str, duration_ms: float) -> None:
        """Part of this stage's time was really `stage` (e.g. the photo checks inside normalize):
        reported as its own stage, right after this one, and taken off this one's duration."""
        self.carved.append((stage, max(0.0, float(duration_ms))))


class ItemTrace:
    def __init__(self, batch_id: int, item_id: int, *, cancelled: tuple[type[BaseException], ...] = (),
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.batch_id, self.item_id, self.cancelled, self.clock = batch_id, item_id, cancelled, clock
        self.stage_ms: dict[str, float] = {}
        self.error_kind: str | None = None
        self.failed_stage: str | None = None
        self._started = clock()
        self._held: dict[str, tuple[float, Span]] = {}  # a stage's first part, waiting for its last

    def _ids(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "item_id": self.item_id}

    def event(self, stage: str, duration_ms: float, outcome: str, error_kind: str | None = None, **fields: Any) -> None:
        """Record one stage: its timing (kept for the store), a log event and a latency sample."""
        duration_ms = round(float(duration_ms), 1)
        self.stage_ms[stage] = round(self.stage_ms.get(stage, 0.0) + duration_ms, 1)
        # INFO (LOG_LEVEL=INFO shows them); a failure nobody planned for is a WARNING a developer should read
        level = logging.WARNING if (error_kind or "").endswith("_unexpected") else logging.INFO
        _log.log(level, "%s %s", stage, outcome, extra={**self._ids(), "stage": stage, "duration_ms": duration_ms,
                                                          "outcome": outcome, "error_kind": error_kind, **fields})
        metrics.observe(metrics.STAGE_LATENCY, duration_ms, dimensions={"Stage": stage},
                        properties={**self._ids(), "outcome": outcome})

    def log_only(self, stage: str, duration_ms: float, outcome: str, error_kind: str | None = None, **fields: Any) -> None:
        """A stage's log event with no latency sample and nothing kept for the store: for a time that is not this
        item's alone (a summary that waited on OpenAI's whole batch), which would skew the stage's p50 / p95."""
        level = logging.WARNING if (error_kind or "").endswith("_unexpected") else logging.INFO
        _log.log(level, "%s %s", stage, outcome, extra={**self._ids(), "stage": stage, "duration_ms": round(float(duration_ms), 1),
                                                          "outcome": outcome, "error_kind": error_kind, **fields})

    @contextmanager
    def stage(self, name: str, *, more_to_come: bool = False) -> Iterator[Span]:
        """Time the block as stage `name`. An exception is recorded (outcome error + its error_kind, or
        cancelled) and re-raised. `more_to_come`: this block is a first part of the stage; when it ends
        well its time waits, and the stage's next block (same name) adds its own and reports it once."""
        held_ms, span = self._held.pop(name, (0.0, Span()))
        start = self.clock()
        outcome, kind, extra = "ok", None, {}
        try:
            yield span
        except BaseException as exc:
            if isinstance(exc, self.cancelled) or not isinstance(exc, Exception):
                outcome = "cancelled"
            else:
                outcome, kind = "error", error_kind(exc, name)
                extra = {"error_type": type(exc).__name__}
                if self.error_kind is None:
                    self.error_kind, self.failed_stage = kind, name
            raise
        finally:
            total = held_ms + (self.clock() - start) * 1000.0
            if more_to_come and outcome == "ok":
                self._held[name] = (total, span)
            else:
                carved = sum(ms for _, ms in span.carved)
                self.event(name, max(0.0, total - carved), outcome, kind, **span.fields, **extra)
                for stage, ms in span.carved:
                    self.event(stage, ms, "ok")

    def fail(self, kind: str) -> None:
        """The item failed outside any stage (e.g. ITEM_DEADLINE_S passed)."""
        self.error_kind = kind

    def count_usage(self, usage: list[Any]) -> None:
        """Billable calls as counters: endpoint invocations and OpenAI tokens."""
        invocations = sum(u.invocations for u in usage if u.kind in ("endpoint", "transform"))
        tokens_in = sum(u.input_tokens for u in usage if u.kind in ("llm", "llm_batch", "vision"))
        tokens_out = sum(u.output_tokens for u in usage if u.kind in ("llm", "llm_batch", "vision"))
        for name, value in ((metrics.ENDPOINT_INVOCATIONS, invocations), (metrics.OPENAI_INPUT_TOKENS, tokens_in),
                            (metrics.OPENAI_OUTPUT_TOKENS, tokens_out)):
            if value:
                metrics.count(name, value, properties=self._ids())

    def cache(self, hit: bool) -> None:
        metrics.count(metrics.CAPTION_CACHE_HITS if hit else metrics.CAPTION_CACHE_MISSES, properties=self._ids())

    def finish(self, ok: bool) -> None:
        """The item's outcome is saved: its own event (stage "item", all stages' time) and the counters."""
        duration_ms = round((self.clock() - self._started) * 1000.0, 1)
        kind = None if ok else (self.error_kind or "unknown")
        outcome = "ok" if ok else "error"
        _log.log(logging.WARNING if (kind or "").endswith("_unexpected") else logging.INFO, "item %s", outcome,
                 extra={**self._ids(), "stage": "item", "duration_ms": duration_ms, "outcome": outcome, "error_kind": kind,
                        "stage_ms": dict(self.stage_ms)})
        metrics.observe(metrics.ITEM_LATENCY, duration_ms, properties={**self._ids(), "outcome": outcome})
        if ok:
            metrics.count(metrics.ITEMS_OK, properties=self._ids())
        else:
            metrics.count(metrics.ITEMS_FAILED, dimensions={"ErrorKind": kind}, dimension_sets=((), ("ErrorKind",)),
                          properties=self._ids())


class SaveTimes:
    """The `save` entry of the stage timings a run stores. A write cannot hold its own duration, and a second write per
    item only for it would be paid for (DynamoDB: one more write request per photo); so each save stores the duration
    of the run's save before it, measured whole (the store's read, its transaction or commit, conflict retries) and
    logged with its own item. Over a period's items that is the same distribution of save times the Health page's
    p50 / p95 want, less one sample per run (the last save's time is only logged; the first save stores none)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._previous_ms: float | None = None

    def stamped(self, stage_ms: dict[str, float]) -> dict[str, float]:
        """The item's stage timings to store: its own up to `summarize`, `save` from the run's previous save."""
        timings = dict(stage_ms)  # one step: the deadline path copies while the item's thread may still add stages
        timings.pop("save", None)
        with self._lock:
            if self._previous_ms is not None:
                timings["save"] = self._previous_ms
        return timings

    def saved(self, trace: ItemTrace) -> None:
        """After a save: its duration (the trace's `save` stage) is what the run's next save stores."""
        if "save" in trace.stage_ms:
            with self._lock:
                self._previous_ms = trace.stage_ms["save"]


class NoTrace(ItemTrace):
    """For callers without a batch context (batch transform ingest, tools): times nothing, logs nothing."""

    def __init__(self) -> None:
        super().__init__(0, 0)

    @contextmanager
    def stage(self, name: str, *, more_to_come: bool = False) -> Iterator[Span]:
        yield Span()

    def event(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_usage(self, usage: list[Any]) -> None:
        return None

    def cache(self, hit: bool) -> None:
        return None

    def log_only(self, *args: Any, **kwargs: Any) -> None:
        return None

    def finish(self, ok: bool) -> None:
        return None
