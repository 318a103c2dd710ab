"""Runs a batch: bounded concurrency, per-item isolation, progress, cancel and resume.

Every item's outcome is written to the store as soon as it is known, so a killed process loses
nothing already done, and re-running a batch only processes items that are not done.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pipeline.attributes import AttributeSchema, map_answers
from pipeline.captioners import Captioner
from pipeline.errors import describe_error, usage_of
from pipeline.fetch import FetchLimits, read_source
from pipeline.models import CaptionResult, ItemRecord, ItemResult, NormalizedImage, PhotoChecks, SummaryRequest, Usage
from pipeline.normalize import normalize_image
from pipeline.store import ImageStore, Store
from pipeline.summarizers import Summarizer
from pipeline.wordlimit import count_words


@dataclass(frozen=True)
class NormalizeOptions:
    max_side: int = 768
    max_pixels: int = 50_000_000
    quality: int = 85


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


@dataclass
class BatchProgress:
    total: int  # items this run set out to process
    ok: int = 0
    failed: int = 0
    cancelled: bool = False

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
    _key_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, concurrency: int = 1, cancel: threading.Event | None = None, caption_concurrency: int | None = None) -> "RunContext":
        return cls(threading.BoundedSemaphore(caption_concurrency or concurrency), threading.BoundedSemaphore(concurrency),
                   cancel or threading.Event())

    def key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())


def caption_once(stages: Stages, image: NormalizedImage, usage: list[Usage], run: RunContext) -> CaptionResult:
    """Cached caption, or one captioner call. Identical photos in flight together wait for the first
    one's answer instead of paying twice."""
    key = (image.content_key, stages.captioner.model_id)
    with run.key_lock(key):
        if stages.use_cache:
            known = run.captions.get(key) or stages.store.cached_caption(*key)
            if known is not None:
                return replace(known, cached=True)
        with run.caption_slots:
            if run.cancel.is_set():
                raise Cancelled
            caption, call = stages.captioner.caption(image, stages.schema.attributes)
        usage.append(call)
        run.captions[key] = caption
        return caption


def prepare_image(stages: Stages, item: ItemRecord) -> tuple[NormalizedImage, str]:
    """Read, normalize and store one item's photo: (normalized image, stored location)."""
    assert item.ref is not None
    if item.ref.kind in ("file", "zip"):
        stages.images.ensure_upload(Path(item.ref.location))  # resumed on another task: fetch the upload
    data = read_source(item.ref, stages.fetch_limits, stages.s3_client_factory)
    image = normalize_image(data, max_side=stages.normalize.max_side, max_pixels=stages.normalize.max_pixels, quality=stages.normalize.quality)
    return image, stages.images.save(image.content_key, image.jpeg)


def complete_item(
    stages: Stages, item: ItemRecord, *, content_key: str, image_path: str, checks: PhotoChecks,
    caption: CaptionResult, usage: list[Usage], summary_slots: threading.Semaphore | None = None,
) -> ItemResult:
    """From a caption to the item's result: attributes, then the summary (a billable call)."""
    attributes = map_answers(stages.schema, caption.answers)
    request = SummaryRequest(caption=caption.caption, attributes=attributes, checks=checks, hints=item.hints, sku=item.sku)
    with summary_slots or nullcontext():
        try:
            summary = stages.summarizer.summarize(request)
        except Exception as exc:
            usage.extend(usage_of(exc))  # calls paid for before the summary failed: saved with the error
            raise
    usage.extend(summary.usage)
    return ItemResult(
        content_key=content_key, image_path=image_path, caption=caption, attributes=attributes,
        summary=summary, checks=checks, word_count=count_words(summary.summary),
    )


def process_item(stages: Stages, item: ItemRecord, usage: list[Usage], run: RunContext | None = None) -> ItemResult:
    """One item through every stage. Billable calls are appended to `usage` as they happen, so a
    failure after a paid call still records it. Raises on failure; the caller records the error."""
    run = run or RunContext.create()
    image, image_path = prepare_image(stages, item)
    caption = caption_once(stages, image, usage, run)
    return complete_item(stages, item, content_key=image.content_key, image_path=image_path, checks=image.checks,
                         caption=caption, usage=usage, summary_slots=run.summary_slots)


def run_batch(
    stages: Stages,
    batch_id: int,
    *,
    concurrency: int = 4,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retry_failed: bool = False,
) -> BatchProgress:
    """Process every not-yet-done item of a batch. Safe to call again after a crash or cancel.

    `concurrency` bounds the calls in flight to the captioner and to the summarizer (the remote,
    billed resources). A few extra workers read and normalize the next images meanwhile, so the
    captioner slots never wait on local CPU work.
    """
    items = stages.store.items_to_process(batch_id, retry_failed=retry_failed)
    concurrency = max(1, concurrency)
    # An async endpoint queues requests itself: keep more photos in flight than summary calls.
    caption_concurrency = max(concurrency, getattr(stages.captioner, "max_in_flight", 0) or 0)
    run = RunContext.create(concurrency, cancel, caption_concurrency)
    progress = BatchProgress(total=len(items))
    lock = threading.Lock()

    def work(item: ItemRecord) -> None:
        if run.cancel.is_set():
            return
        usage: list[Usage] = []
        try:
            result = process_item(stages, item, usage, run)
        except Cancelled:
            return  # stays pending; a later run picks it up
        except Exception as exc:  # per-item isolation: one bad photo never stops the batch
            stages.store.save_error(item.id, describe_error(exc), usage)
            ok = False
        else:
            stages.store.save_result(item.id, result, usage)  # one transaction: result, usage, cache
            ok = True
        with lock:
            if ok:
                progress.ok += 1
            else:
                progress.failed += 1
            if on_progress:
                on_progress(progress)

    with ThreadPoolExecutor(max_workers=caption_concurrency + concurrency + 2, thread_name_prefix="tagger") as pool:
        list(pool.map(work, items))
    progress.cancelled = run.cancel.is_set()
    return progress
