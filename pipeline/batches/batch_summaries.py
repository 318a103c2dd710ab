"""A run's summaries through OpenAI's Batch API (pipeline/summarizers/openai_batch.py): caption every
item first, then summarize the captioned ones in one OpenAI batch and save each item with its summary.

Used by the runner (a run with "Cheapest" picked) and by batch transform jobs. While the OpenAI batch
runs, what was already paid for is kept: each item's caption calls go to the cost ledger and its
caption to the cache, so a Stop, a crash or a restart pays neither again; the OpenAI batch itself is
remembered in the store and picked up by the next run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.attributes import map_answers, with_summary_guesses
from pipeline.errors import describe_error, usage_of
from pipeline.models import CaptionResult, ItemRecord, ItemResult, PhotoChecks, SummaryRequest, Usage
from pipeline.observability.trace import ItemTrace, SaveTimes, error_kind
from pipeline.wordlimit import count_words


@dataclass
class Captioned:
    """An item whose photo is stored and captioned, waiting for its summary."""

    item: ItemRecord
    content_key: str
    image_path: str
    checks: PhotoChecks
    caption: CaptionResult
    usage: list[Usage] = field(default_factory=list)  # paid for this item so far (its caption)
    phash: str | None = None  # near-duplicates (issue 19), as a real-time run records them
    near_duplicate: str | None = None
    reused_from: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)  # fetch .. caption, as timed (Health); saved with the item
    trace: ItemTrace | None = None  # its trace from its first stage in this process (None: one is made when it is saved)


def summarize_captioned(stages: Any, batch_id: int, captioned: list[Captioned], summarizer: Any, *,
                        cancel: threading.Event | None = None, owner: str | None = None,
                        on_saved: Callable[[int, bool | None], None] | None = None,
                        save_times: SaveTimes | None = None) -> bool:
    """Summarize `captioned` through `summarizer` (an OpenAIBatchSummarizer) and save each item (`stages`: the
    runner's Stages; the runner's caption_item made `captioned`). False
    when stopped first: the items stay pending (their leases released when `owner` holds them).
    `owner`: save only while this runner holds each item's lease. `on_saved(item_id, ok)`: after each
    save (ok None: nothing saved, the lease was lost).

    Each save is the item's `save` stage, and an item whose outcome is saved gets its `item` event and the
    ItemsOk / ItemsFailed (by error kind) counters, its summary's tokens counted, as a real-time run's items do:
    once, at that save (a run stopped, killed or resumed before it saves nothing and counts nothing; a resumed
    run only gets the items not saved yet). `save_times`: the process run's (the runner passes its own), so each
    item stores the duration of the save before it (see SaveTimes). Each item's `summarize` event (outcome, error
    kind, `openai_batch: true`) carries this run's whole round with OpenAI's batch as its duration_ms, in the log
    only: it is no item's own time, so it is neither a StageLatency sample nor stored for the Health page."""
    store = stages.store
    for entry in captioned:  # keep what was paid for before the (long) wait
        if entry.usage:
            store.record_usage(entry.item.id, entry.usage)
        if not entry.caption.cached:  # as save_result would: a resumed run reads it instead of paying again
            store.cache_caption(entry.content_key, entry.caption)
    attributes = {entry.item.id: map_answers(stages.schema, entry.caption.answers) for entry in captioned}
    from pipeline.admin.brand import request_options

    options = request_options(store, batch_id)  # style guide + the batch's languages (issue 19)
    requests = {entry.item.id: SummaryRequest(caption=entry.caption.caption, attributes=attributes[entry.item.id],
                                              checks=entry.checks, hints=entry.item.hints, sku=entry.item.sku, **options)
                for entry in captioned}
    started = time.perf_counter()
    outcomes = summarizer.summarize_many(batch_id, requests, cancel=cancel)
    waited_ms = (time.perf_counter() - started) * 1000.0  # every item's summary, together (submit or resume, wait, collect)
    if outcomes is None:
        if owner is not None:
            for entry in captioned:
                store.release_item(entry.item.id, owner)
        return False
    save_times = save_times if save_times is not None else SaveTimes()
    for entry in captioned:
        outcome = outcomes[entry.item.id]
        trace = entry.trace if entry.trace is not None else ItemTrace(batch_id, entry.item.id)
        timings = {**entry.stage_ms, **trace.stage_ms}  # fetch .. caption (the trace's own, when it timed them)
        failed = isinstance(outcome, Exception)
        trace.log_only("summarize", waited_ms, "error" if failed else "ok", error_kind(outcome, "summarize") if failed else None,
                       openai_batch=True, **({"error_type": type(outcome).__name__} if failed else {}))
        with trace.stage("save"):
            if isinstance(outcome, Exception):
                usage = usage_of(outcome)
                trace.fail(error_kind(outcome, "summarize"))
                saved = store.save_error(entry.item.id, describe_error(outcome), usage, owner=owner,
                                         error_kind=trace.error_kind, stage_ms=save_times.stamped(timings))
            else:
                usage = list(outcome.usage)
                result = ItemResult(content_key=entry.content_key, image_path=entry.image_path, caption=entry.caption,
                                    attributes=with_summary_guesses(stages.schema, attributes[entry.item.id], outcome),
                                    summary=outcome, checks=entry.checks,
                                    word_count=count_words(outcome.summary), taxonomy_version=stages.taxonomy_version,
                                    phash=entry.phash, near_duplicate=entry.near_duplicate, reused_from=entry.reused_from)
                saved = store.save_result(entry.item.id, result, usage, owner=owner, stage_ms=save_times.stamped(timings))
        save_times.saved(trace)  # stored with the next save of this process run
        if saved:
            trace.finish(ok=not isinstance(outcome, Exception))
        elif usage:
            store.record_usage(entry.item.id, usage)  # paid for, but the lease was lost: the ledger still counts it
        trace.count_usage(usage)  # the summary's tokens (its caption's calls were counted when they were made)
        if on_saved is not None:
            on_saved(entry.item.id, (not isinstance(outcome, Exception)) if saved else None)
    summarizer.forget(batch_id)
    return True
