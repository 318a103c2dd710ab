"""Runs a batch: bounded concurrency, per-item isolation, progress, cancel and resume.

Every item's outcome is written to the store as soon as it is known, so a killed process loses
nothing already done, and re-running a batch only processes items that are not done.

Leases (see docs/operations.md "Scale"): a run first claims the batch (one runner per batch; a second one is
refused with who runs it and since when), then claims each item before any paid call, and renews
both by heartbeat. An item another runner holds is skipped; a runner that crashed loses its leases
when they expire (at once when it was a process on this host that no longer exists). Only the
lease holder can save an item's outcome. The heartbeat also reads the batch's stop request, so Stop
pressed on any task stops the runner that holds that batch. Each item has a deadline over all its
stages; past it the item fails with a retryable message and the runner stops waiting for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zipfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from pipeline.attributes import AttributeSchema, map_answers, with_summary_guesses
from pipeline.captioners import Captioner
from pipeline.errors import describe_error, usage_of
from pipeline.images.decode_budget import BudgetWaitCancelled, DecodeBudget, default_raw_budget
from pipeline.ingest.fetch import DownloadCancelled, FetchLimits, read_source
from pipeline.ingest.zips import OPEN_ZIPS, zip_entry
from pipeline.models import CaptionResult, ItemRecord, ItemResult, NormalizedImage, PhotoChecks, SourceRef, SummaryRequest, Usage
from pipeline.images.normalize import normalize_image
from pipeline.images.perceptual import CatalogueEntry, HashIndex, Match
from pipeline.observability import ItemTrace, NoTrace, error_kind
from pipeline.observability.trace import ITEM_TIMEOUT, SaveTimes
from pipeline.store import BatchBusyError, ImageStore, Store, new_runner_id, runner_is_dead_here
from pipeline.admin.brand import request_options
from pipeline.batches import batch_summaries
from pipeline.batches.batch_summaries import Captioned
from pipeline.summarizers import Summarizer
from pipeline.wordlimit import count_words

_batch_log = logging.getLogger("pipeline.batches")  # batch-level events (item stages: pipeline.items)


@dataclass(frozen=True)
class NormalizeOptions:
    max_side: int = 768
    max_pixels: int = 50_000_000
    quality: int = 85


@dataclass(frozen=True)
class LeaseOptions:
    """How runners share work (settings LEASE_S, ITEM_DEADLINE_S, STOP_GRACE_S)."""

    lease_s: float = 120.0  # a claim lasts this long unless renewed (renewed every lease_s / 3)
    item_deadline_s: float = 600.0  # one item, all stages; then it fails (retryable) and is not waited for
    stop_grace_s: float = 5.0  # after Stop, how long items already in a paid call are waited for
    poll_s: float = 1.0  # how often stop requests and deadlines are looked at
    enabled: bool = True  # False: no claims at all (the behaviour before leases; bench comparison only)


@dataclass(frozen=True)
class NearDuplicateOptions:
    """Near-duplicate photos (issue 19; settings NEAR_DUPLICATE_MAX_DISTANCE, NEAR_DUPLICATE_CATALOGUE_MAX)."""

    max_distance: int = 10  # bits of the 64-bit perceptual hash (pipeline/images/perceptual.py)
    catalogue_max: int = 100_000  # newest tagged photos loaded once per run (0: this batch's run only)


@dataclass
class Stages:
    """Everything processing one item needs, assembled once (see `pipeline.service.build_stages`)."""

    store: Store
    images: ImageStore
    captioner: Captioner
    summarizer: Summarizer
    schema: AttributeSchema
    fetch_limits: FetchLimits
    normalize: NormalizeOptions
    use_cache: bool = True
    s3_client_factory: Callable[[], Any] | None = None
    leases: LeaseOptions = field(default_factory=LeaseOptions)
    batch_summarizer: Any = None  # OpenAIBatchSummarizer: summaries through OpenAI's Batch API (None: never)
    taxonomy_version: int = 0  # the attribute taxonomy `schema` is (0: the configured default); see run_batch
    base_schema: AttributeSchema | None = None  # version 0 once another version was followed
    near_duplicates: NearDuplicateOptions = field(default_factory=NearDuplicateOptions)  # issue 19


@dataclass
class BatchProgress:
    total: int  # items this run set out to process
    ok: int = 0
    failed: int = 0
    cancelled: bool = False
    skipped: int = 0  # items another runner held (or finished) when this run reached them
    timed_out: int = 0  # items failed for passing ITEM_DEADLINE_S
    stopped_by: str | None = None  # who asked this batch to stop (a stop request stored on the batch)

    @property
    def done(self) -> int:
        return self.ok + self.failed


ProgressCallback = Callable[[BatchProgress], None]


class Cancelled(Exception):
    """Raised inside a worker when the run was cancelled before its paid call: the item stays pending."""


@dataclass
class RunContext:
    """What the workers of one run share: call slots, the cancel flag, and captions made in this run."""

    caption_slots: threading.Semaphore
    summary_slots: threading.Semaphore
    cancel: threading.Event
    captions: dict[tuple[str, str], CaptionResult] = field(default_factory=dict)
    near: HashIndex | None = None  # near-duplicates (issue 19): catalogue + this run's photos (None: not looked up)
    reuse: bool = False  # the batch's "reuse near-duplicates" option
    _key_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, concurrency: int = 1, cancel: threading.Event | None = None, caption_concurrency: int | None = None) -> "RunContext":
        return cls(threading.BoundedSemaphore(caption_concurrency or concurrency), threading.BoundedSemaphore(concurrency),
                   cancel or threading.Event())

    def key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())


@contextmanager
def _slot(lock: Any, cancel: threading.Event, poll_s: float = 0.05) -> Iterator[None]:
    """Hold `lock`, but stop waiting for it (Cancelled) as soon as the run is stopped."""
    while not lock.acquire(timeout=poll_s):
        if cancel.is_set():
            raise Cancelled
    try:
        yield
    finally:
        lock.release()


def caption_once(stages: Stages, image: NormalizedImage, usage: list[Usage], run: RunContext) -> CaptionResult:
    """Cached caption, or one captioner call. Identical photos in flight together wait for the first
    one's answer instead of paying twice."""
    key = (image.content_key, stages.captioner.model_id)
    with _slot(run.key_lock(key), run.cancel):
        if stages.use_cache:
            known = run.captions.get(key) or stages.store.cached_caption(*key)
            if known is not None and set(stages.schema.names()) <= set(known.answers):  # a newer taxonomy asks more
                return replace(known, cached=True)
        with _slot(run.caption_slots, run.cancel):
            if run.cancel.is_set():
                raise Cancelled
            try:
                caption, call = stages.captioner.caption(image, stages.schema.attributes)
            except Exception as exc:
                usage.extend(usage_of(exc))  # a paid but unusable answer (vision captioner): saved with the error
                raise
        usage.append(call)
        run.captions[key] = caption
        return caption


def prepare_image(stages: Stages, item: ItemRecord, cancel: threading.Event | None = None,
                  trace: ItemTrace | None = None) -> tuple[NormalizedImage, str]:
    """Read, normalize and store one item's photo: (normalized image, stored location). A Stop (`cancel`)
    ends a download in progress, or a wait for the raw bytes budget; the item stays pending.
    `trace` times the fetch, normalize (storing the normalized copy included) and checks stages."""
    assert item.ref is not None
    trace = trace or NoTrace()
    if item.ref.kind in ("file", "zip"):
        with trace.stage("fetch", more_to_come=True):  # the read below ends the fetch stage
            stages.images.ensure_upload(Path(item.ref.location))  # resumed on another task: fetch the upload
    image = read_and_normalize(stages, item.ref, cancel, trace=trace)
    with trace.stage("normalize"):  # storing the normalized copy ends the normalize stage
        location = stages.images.save(image.content_key, image.jpeg)
    return image, location


def read_and_normalize(stages: Stages, ref: SourceRef, cancel: threading.Event | None = None,
                       budget: DecodeBudget | None = None, trace: ItemTrace | None = None) -> NormalizedImage:
    """The photo's raw bytes are held under the raw bytes budget (default: the process-wide one from
    RAW_BYTES_BUDGET_MB) from before the read until the normalized JPEG exists.

    No deadlock: this takes the raw budget first and `normalize_image` the decode budget second;
    nothing waits for the raw budget while holding the decode budget, decode holders wait for
    nothing, and `resize` never waits. The wait for the raw budget ends on Stop (Cancelled)."""
    budget = budget if budget is not None else default_raw_budget()
    try:
        grant = budget.acquire(raw_read_cost(stages, ref), cancel=cancel)
    except BudgetWaitCancelled as exc:
        raise Cancelled from exc
    data: bytes | None = None
    trace = trace or NoTrace()
    try:
        try:
            with trace.stage("fetch"):
                data = read_source(ref, stages.fetch_limits, stages.s3_client_factory, should_stop=cancel)
        except DownloadCancelled as exc:
            raise Cancelled from exc
        grant = budget.resize(grant, len(data))  # the true size (a URL or S3 object counted the most allowed)
        options = stages.normalize
        with trace.stage("normalize", more_to_come=True) as span:
            image = normalize_image(data, max_side=options.max_side, max_pixels=options.max_pixels, quality=options.quality)
            span.carve("checks", image.checks_ms)  # the photo checks run inside normalize_image: their own stage
        return image
    finally:
        data = None  # the bytes go before their grant does
        budget.release(grant)


def raw_read_cost(stages: Stages, ref: SourceRef) -> int:
    """Raw bytes reading `ref` may hold at once, known before reading: a file's size (stat); a zip
    member's size from the zip's directory (zipfile never returns more), twice (the streamed chunks
    and their join); a URL or S3 object the most allowed (MAX_FILE_BYTES), as its size is only known
    once downloaded. Anything unreadable counts the most allowed; the read then reports the problem."""
    limit = stages.fetch_limits.max_bytes
    try:
        if ref.kind == "file":
            size = Path(ref.location).stat().st_size
            return size if size <= limit else 0  # refused from its size, never read
        if ref.kind == "zip":
            info = zip_entry(OPEN_ZIPS.get(Path(ref.location)), ref.member or "")
            return 2 * min(info.file_size, limit)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    return limit


def complete_item(
    stages: Stages, item: ItemRecord, *, content_key: str, image_path: str, checks: PhotoChecks,
    caption: CaptionResult, usage: list[Usage], summary_slots: threading.Semaphore | None = None,
) -> ItemResult:
    """From a caption to the item's result: attributes, then the summary (a billable call)."""
    attributes = map_answers(stages.schema, caption.answers)
    request = SummaryRequest(caption=caption.caption, attributes=attributes, checks=checks, hints=item.hints, sku=item.sku,
                             **request_options(stages.store, item.batch_id))  # style guide + the batch's languages (issue 19)
    with summary_slots or nullcontext():
        try:
            summary = stages.summarizer.summarize(request)
        except Exception as exc:
            usage.extend(usage_of(exc))  # calls paid for before the summary failed: saved with the error
            raise
    usage.extend(summary.usage)
    attributes = with_summary_guesses(stages.schema, attributes, summary)
    return ItemResult(
        content_key=content_key, image_path=image_path, caption=caption, attributes=attributes,
        summary=summary, checks=checks, word_count=count_words(summary.summary), taxonomy_version=stages.taxonomy_version,
    )


def process_item(stages: Stages, item: ItemRecord, usage: list[Usage], run: RunContext | None = None,
                 trace: ItemTrace | None = None) -> ItemResult:
    """One item through every stage. Billable calls are appended to `usage` as they happen, so a
    failure after a paid call still records it. Raises on failure; the caller records the error.
    `trace` times each stage (log event, latency metric, the item's stage_ms)."""
    run = run or RunContext.create()
    trace = trace or NoTrace()
    image, image_path = prepare_image(stages, item, run.cancel, trace)
    match = near_duplicate_of(stages, item, image, run)
    reused = reused_caption(stages, match) if match is not None and run.reuse else None
    with trace.stage("caption") as span:
        caption = reused or caption_once(stages, image, usage, run)
        span.fields["cached"] = caption.cached
    trace.cache(caption.cached)
    with trace.stage("summarize"):
        result = complete_item(stages, item, content_key=image.content_key, image_path=image_path, checks=image.checks,
                               caption=caption, usage=usage, summary_slots=run.summary_slots)
    result.phash = image.phash
    if match is not None:
        result.near_duplicate = f"looks like {match.entry.label} ({match.distance} bits apart)"
        result.reused_from = f"caption reused from {match.entry.label}" if reused is not None else None
    return result


def near_duplicate_index(stages: Stages, batch_id: int) -> tuple[HashIndex, bool]:
    """Once per run: the newest NEAR_DUPLICATE_CATALOGUE_MAX tagged photos' hashes (one store read) and the
    batch's reuse option. A store without them (an older adapter) compares within the run only."""
    store, limit = stages.store, stages.near_duplicates.catalogue_max
    rows = store.near_duplicate_catalogue(limit) if limit > 0 and hasattr(store, "near_duplicate_catalogue") else []
    reuse = bool(store.reuse_near_duplicates(batch_id)) if hasattr(store, "reuse_near_duplicates") else False
    return HashIndex([CatalogueEntry(*row) for row in rows]), reuse


def near_duplicate_of(stages: Stages, item: ItemRecord, image: NormalizedImage, run: RunContext) -> Match | None:
    """The closest earlier photo (catalogue, or this run) within NEAR_DUPLICATE_MAX_DISTANCE; this photo joins the
    run's index in the same step, so of two look-alikes in flight together the second always finds the first."""
    if run.near is None or not image.phash:
        return None
    return run.near.nearest_then_add(image.phash, stages.near_duplicates.max_distance,
                                     CatalogueEntry(image.phash, item.batch_id, item.id, item.seq))


def reused_caption(stages: Stages, match: Match) -> CaptionResult | None:
    """The matched item's caption and answers, as the exact caption cache would give them (cached: no call, no
    usage); None when that item has no finished result yet or its answers lack an attribute asked now."""
    earlier = stages.store.get_item(match.entry.item_id)
    if earlier is None or earlier.status != "ok" or not earlier.caption or not earlier.caption_model:
        return None
    known = stages.store.cached_caption(earlier.content_key, earlier.caption_model) if earlier.content_key else None
    answers = dict(known.answers) if known is not None else {a.name: a.raw for a in earlier.attributes}
    if not set(stages.schema.names()) <= set(answers):  # a newer taxonomy asks more: caption this photo
        return None
    return CaptionResult(caption=earlier.caption, answers=answers, model_id=earlier.caption_model, cached=True)


def run_batch(
    stages: Stages,
    batch_id: int,
    *,
    concurrency: int = 4,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retry_failed: bool = False,
    owner: str | None = None,
    clock: Callable[[], float] = time.time,
    join: bool = False,
    cheapest: bool = False,
) -> BatchProgress:
    """Process every not-yet-done item of a batch. Safe to call again after a crash or cancel.

    `concurrency` bounds the calls in flight to the captioner and to the summarizer (the remote,
    billed resources). A few extra workers read and normalize the next images meanwhile, so the
    captioner slots never wait on local CPU work.

    Raises BatchBusyError when another live runner holds the batch. `owner` names this runner
    (default: host/pid/uuid); `join=True` helps a batch another runner holds (item leases only);
    `clock` (epoch seconds) is injectable for tests. `cheapest=True`: when at least OPENAI_BATCH_MIN_ITEMS
    items need a summary, caption them all first, then summarize them through OpenAI's Batch API (half
    the price, within 24 h; pipeline/batches/batch_summaries.py); a run also does so whenever an OpenAI
    batch submitted for this batch is still waiting to be collected.
    """
    store, options = stages.store, stages.leases
    owner = owner or new_runner_id()
    claiming, holds_batch = options.enabled, options.enabled and not join
    if holds_batch:
        take_batch(store, batch_id, owner, options, clock)
    started = time.perf_counter()
    try:
        from pipeline.admin.taxonomy import follow_active_taxonomy

        stages = follow_active_taxonomy(stages)  # questions, mapping and summary schema of the version active now
        progress = _run_items(stages, batch_id, concurrency=concurrency, on_progress=on_progress, cancel=cancel,
                              retry_failed=retry_failed, owner=owner, clock=clock, claiming=claiming, holds_batch=holds_batch,
                              cheapest=cheapest)
        _batch_log.info("batch run ended", extra={  # one event per run, beside the per-item stage events
            "batch_id": batch_id, "duration_ms": round((time.perf_counter() - started) * 1000.0, 1), "total": progress.total,
            "ok": progress.ok, "failed": progress.failed, "skipped": progress.skipped, "timed_out": progress.timed_out,
            "outcome": "cancelled" if progress.cancelled else "ok", "stopped_by": progress.stopped_by})
        return progress
    finally:
        if holds_batch:
            store.release_batch(batch_id, owner)


def take_batch(store: Store, batch_id: int, owner: str, options: LeaseOptions, clock: Callable[[], float] = time.time) -> None:
    """Become the batch's runner, or raise BatchBusyError naming the live runner that is."""
    holder = store.claim_batch(batch_id, owner, options.lease_s, now=clock())
    if holder.owner == owner:
        return
    if runner_is_dead_here(holder.owner):  # a killed process on this host: no need to wait for its lease to end
        holder = store.claim_batch(batch_id, owner, options.lease_s, now=clock(), stale_owners=(holder.owner,))
        if holder.owner == owner:
            return
    raise BatchBusyError(batch_id, holder)


class _StageThreads:
    """Daemon threads that run items' stages and are reused (a model's per-thread state, e.g. an
    OpenMP team, is set up once per thread, not once per item). A hung item keeps its thread; a new
    one is started when none is idle. Daemon: a hung call never keeps the process from exiting."""

    def __init__(self, name: str) -> None:
        self._tasks: "queue.SimpleQueue[Callable[[], None] | None]" = queue.SimpleQueue()
        self._lock, self._idle, self._name = threading.Lock(), 0, name
        self._started: list[threading.Thread] = []

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._started) + 1}", daemon=True)
                self._started.append(thread)
                thread.start()
        self._tasks.put(task)

    def _loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            task()
            with self._lock:
                self._idle += 1

    def close(self, join_s: float = 2.0) -> None:
        """Tell every thread to end and wait briefly for the idle ones: a thread that ran the model must
        not still be exiting while the interpreter shuts down (torch then aborts the process: "terminate
        called without an active exception", seen as exit -6 after a CLI run). A hung one is left."""
        with self._lock:
            threads = list(self._started)
        for _ in threads:  # busy threads read theirs after their item
            self._tasks.put(None)
        deadline = time.monotonic() + join_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


@dataclass
class _Attempt:
    """One item being processed: the worker waits for it, up to its deadline (or Stop + grace)."""

    state: str = "running"  # running | saving | timed_out | abandoned
    ok: bool | None = None  # True saved ok, False saved failed, None nothing saved (cancelled / lease lost)
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    trace: ItemTrace = field(default_factory=NoTrace)  # stage timings, log events and metrics of this item


def caption_item(stages: Stages, item: ItemRecord, usage: list[Usage], run: RunContext, trace: ItemTrace) -> Captioned:
    """Every stage before the summary, for a run whose summaries go through the Batch API
    (pipeline/batches/batch_summaries.py); `trace`: this item's ItemTrace (stage timings)."""
    image, image_path = prepare_image(stages, item, run.cancel, trace)
    match = near_duplicate_of(stages, item, image, run)  # flagged and reused as process_item does
    reused = reused_caption(stages, match) if match is not None and run.reuse else None
    with trace.stage("caption") as span:  # timed, logged and counted as a real-time run's caption is
        caption = reused or caption_once(stages, image, usage, run)
        span.fields["cached"] = caption.cached
    trace.cache(caption.cached)
    return Captioned(item=item, content_key=image.content_key, image_path=image_path, checks=image.checks,
                     caption=caption, usage=usage, phash=image.phash,
                     near_duplicate=f"looks like {match.entry.label} ({match.distance} bits apart)" if match is not None else None,
                     reused_from=f"caption reused from {match.entry.label}" if reused is not None else None,
                     stage_ms=dict(trace.stage_ms),  # saved with the item once summarized
                     trace=trace)  # its item event and counters come at that save


def _run_items(stages: Stages, batch_id: int, *, concurrency: int, on_progress: ProgressCallback | None,
               cancel: threading.Event | None, retry_failed: bool, owner: str, clock: Callable[[], float],
               claiming: bool, holds_batch: bool, cheapest: bool = False) -> BatchProgress:
    store, options = stages.store, stages.leases
    items = store.items_to_process(batch_id, retry_failed=retry_failed)
    later, waiting = None, []  # Batch API summaries: the captioned items wait here, keeping their leases
    if stages.batch_summarizer is not None and (holds_batch or not claiming) and stages.batch_summarizer.wanted(batch_id, len(items), cheapest=cheapest):
        later = batch_summaries
    concurrency = max(1, concurrency)
    # An async endpoint queues requests itself: keep more photos in flight than summary calls.
    caption_concurrency = max(concurrency, getattr(stages.captioner, "max_in_flight", 0) or 0)
    run = RunContext.create(concurrency, cancel, caption_concurrency)
    run.near, run.reuse = near_duplicate_index(stages, batch_id)  # issue 19: loaded once per run
    progress = BatchProgress(total=len(items))
    lock = threading.Lock()
    held: set[int] = set()  # item leases this run holds (renewed by the heartbeat)
    save_owner = owner if claiming else None
    save_times = SaveTimes()  # each save stores the previous save's duration (see SaveTimes)

    def count(ok: bool | None, *, skipped: bool = False, timed_out: bool = False) -> None:
        with lock:
            if skipped:
                progress.skipped += 1
                return
            if ok is None:
                return
            progress.ok += int(ok)
            progress.failed += int(not ok)
            progress.timed_out += int(timed_out)
            if on_progress:
                on_progress(progress)

    def claim(item: ItemRecord) -> bool:
        if not claiming:
            return True
        stale = (item.lease_owner,) if runner_is_dead_here(item.lease_owner) else ()
        if not store.claim_item(item.id, owner, options.lease_s, version=item.version, now=clock(), stale_owners=stale):
            return False
        with lock:
            held.add(item.id)
        return True

    def stage(item: ItemRecord, attempt: _Attempt) -> None:
        """Every stage of one item, then its save; runs on its own thread so the worker can stop waiting."""
        usage: list[Usage] = []
        result, error, cancelled, deferred = None, None, False, False
        trace = attempt.trace
        try:
            if later is not None:
                result = caption_item(stages, item, usage, run, trace)  # summarized once every caption is in
            else:
                result = process_item(stages, item, usage, run, trace)
        except Cancelled:
            cancelled = True
        except Exception as exc:  # per-item isolation: one bad photo never stops the batch
            error = exc
        with attempt.lock:
            late = attempt.state == "timed_out"
            if not late:
                attempt.state = "saving"
        try:
            if late:  # the item already failed for its deadline: only keep the ledger true
                if usage:
                    store.record_usage(item.id, usage)
            elif cancelled:  # stays pending; a later run picks it up
                if claiming:
                    store.release_item(item.id, owner)
            elif later is not None and error is None:
                deferred = True  # keeps its lease (renewed by the heartbeat) until saved with its summary
                with lock:
                    waiting.append(result)
            else:
                with trace.stage("save"):
                    if error is not None:
                        saved = store.save_error(item.id, describe_error(error), usage, owner=save_owner,
                                                 error_kind=trace.error_kind or error_kind(error, "item"),
                                                 stage_ms=save_times.stamped(trace.stage_ms))
                    else:  # one transaction: result, usage, cache
                        saved = store.save_result(item.id, result, usage, owner=save_owner,
                                                  stage_ms=save_times.stamped(trace.stage_ms))
                save_times.saved(trace)  # stored with the run's next save: no write of its own
                if saved:
                    trace.finish(ok=error is None)
                    attempt.ok = error is None
                elif usage:
                    store.record_usage(item.id, usage)  # paid for, but the lease was lost: the ledger still counts it
        finally:
            trace.count_usage(usage)
            with lock:
                if not deferred:
                    held.discard(item.id)
            attempt.finished.set()

    def work(item: ItemRecord) -> None:
        if run.cancel.is_set():
            return
        if not claim(item):
            count(None, skipped=True)
            return
        attempt = _Attempt(trace=ItemTrace(batch_id, item.id, cancelled=(Cancelled, DownloadCancelled, BudgetWaitCancelled)))
        stage_threads.submit(lambda: stage(item, attempt))
        deadline, grace_end = clock() + options.item_deadline_s, None
        while not attempt.finished.wait(options.poll_s):
            now = clock()
            if run.cancel.is_set():
                grace_end = grace_end if grace_end is not None else now + options.stop_grace_s
                if now >= grace_end:
                    with attempt.lock:
                        if attempt.state == "running":  # keeps its lease: a late answer still saves if nobody took over
                            attempt.state = "abandoned"
                            return
            if now >= deadline:
                with attempt.lock:
                    if attempt.state != "running":
                        continue
                    attempt.state = "timed_out"
                with lock:
                    held.discard(item.id)
                message = (f"Processing this photo took longer than {options.item_deadline_s:g} s, so it was stopped. "
                           "Retry failed items to try again.")
                attempt.trace.fail(ITEM_TIMEOUT)
                if store.save_error(item.id, message, [], owner=save_owner, error_kind=ITEM_TIMEOUT,
                                    stage_ms=save_times.stamped(attempt.trace.stage_ms)):
                    attempt.trace.finish(ok=False)
                    count(False, timed_out=True)
                return
        count(attempt.ok)

    beat_stop = threading.Event()
    stage_threads = _StageThreads(f"tagger-stage-{batch_id}")

    def heartbeat() -> None:
        """Renew leases; stop when this batch's stop request appears or the batch was taken over."""
        next_renew = clock() + options.lease_s / 3
        while not beat_stop.wait(options.poll_s):
            now = clock()
            try:
                if now >= next_renew and holds_batch:
                    current = store.heartbeat_batch(batch_id, owner, options.lease_s, now=now)
                else:
                    batch = store.get_batch(batch_id)
                    current = batch.run if batch is not None else None
                    if holds_batch and (current is None or current.owner != owner):
                        current = None
                if holds_batch and current is None:
                    run.cancel.set()  # another runner holds the batch now (our lease ran out): leave it to them
                elif current is not None and current.stop_requested_by:
                    progress.stopped_by = current.stop_requested_by
                    run.cancel.set()
                if now >= next_renew:
                    with lock:
                        ids = list(held)
                    store.renew_items(ids, owner, options.lease_s, now=now)
                    next_renew = now + options.lease_s / 3
            except Exception:  # a failed beat is retried at the next one; the lease has slack for that
                continue

    beater = threading.Thread(target=heartbeat, name=f"tagger-heartbeat-{batch_id}", daemon=True) if claiming else None
    if beater is not None:
        beater.start()
    try:
        with ThreadPoolExecutor(max_workers=caption_concurrency + concurrency + 2, thread_name_prefix="tagger") as pool:
            list(pool.map(work, items))
        if later is not None and waiting:
            def on_saved(item_id: int, ok: bool | None) -> None:
                with lock:
                    held.discard(item_id)
                count(ok)

            later.summarize_captioned(stages, batch_id, waiting, stages.batch_summarizer, cancel=run.cancel,
                                      owner=save_owner, on_saved=on_saved, save_times=save_times)
    finally:
        stage_threads.close()
        beat_stop.set()
        if beater is not None:
            beater.join()
    progress.cancelled = run.cancel.is_set()
    return progress
