"""Runs a batch: bounded concurrency, per-item isolation, progress, cancel and resume.

Every item's outcome is written to the store as soon as it is known, so a killed process loses
nothing already done, and re-running a batch only processes items that are not done.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from pipeline.attributes import AttributeSchema, map_answers
from pipeline.captioners import Captioner
from pipeline.errors import describe_error
from pipeline.fetch import FetchLimits, read_source
from pipeline.models import ItemRecord, ItemResult, SummaryRequest, Usage
from pipeline.normalize import normalize_image
from pipeline.store import LocalImageStore, Store
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
    images: LocalImageStore
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


def process_item(stages: Stages, item: ItemRecord, usage: list[Usage]) -> ItemResult:
    """One item through every stage. Billable calls are appended to `usage` as they happen, so a
    failure after a paid call still records it. Raises on failure; the caller records the error."""
    assert item.ref is not None
    data = read_source(item.ref, stages.fetch_limits, stages.s3_client_factory)
    image = normalize_image(data, max_side=stages.normalize.max_side, max_pixels=stages.normalize.max_pixels, quality=stages.normalize.quality)
    del data
    image_path = stages.images.save(image.content_key, image.jpeg)
    caption = stages.store.cached_caption(image.content_key, stages.captioner.model_id) if stages.use_cache else None
    if caption is None:
        caption, call = stages.captioner.caption(image, stages.schema.attributes)
        usage.append(call)
    attributes = map_answers(stages.schema, caption.answers)
    summary = stages.summarizer.summarize(
        SummaryRequest(caption=caption.caption, attributes=attributes, checks=image.checks, hints=item.hints, sku=item.sku)
    )
    usage.extend(summary.usage)
    return ItemResult(
        content_key=image.content_key, image_path=image_path, caption=caption, attributes=attributes,
        summary=summary, checks=image.checks, word_count=count_words(summary.summary),
    )


def run_batch(
    stages: Stages,
    batch_id: int,
    *,
    concurrency: int = 4,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retry_failed: bool = False,
) -> BatchProgress:
    """Process every not-yet-done item of a batch. Safe to call again after a crash or cancel."""
    items = stages.store.items_to_process(batch_id, retry_failed=retry_failed)
    progress = BatchProgress(total=len(items))
    lock = threading.Lock()
    cancel = cancel or threading.Event()

    def work(item: ItemRecord) -> None:
        if cancel.is_set():
            return
        usage: list[Usage] = []
        try:
            result = process_item(stages, item, usage)
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

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="tagger") as pool:
        list(pool.map(work, items))
    progress.cancelled = cancel.is_set()
    return progress
