"""A background worker that owns batch processing for a long-lived process (the dashboard server).

Batches run on this worker's thread, not in a browser session's script run, so closing the tab,
navigating away or reconnecting never stops them; pages read progress back from the store.
Batches are queued and run one after another (each one already uses CONCURRENCY parallel calls).
On start, `resume_unfinished` queues batches a previous server left unfinished.

What a batch is doing comes from the store, not from this process: a batch another task or the CLI
runs shows "running on <host> since <t>", Resume on it is refused, and Stop stores a stop request on
that batch, which the runner holding it (here or anywhere) obeys.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timezone
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.captioners import captioner_readiness
from pipeline.errors import ConfigError, describe_error
from pipeline.models import BatchRecord, BatchRun, TransformJobRecord
from pipeline.batches.runner import BatchProgress, Stages, run_batch
from pipeline.store import BatchBusyError, new_runner_id, runner_is_dead_here

_log = logging.getLogger("pipeline.batches")

if TYPE_CHECKING:
    from pipeline.batches.batch_transform import BatchTransformRunner


@dataclass(frozen=True)
class BatchView:
    """What a page shows about one batch's processing."""

    batch: BatchRecord
    state: str  # queued | running | finished | stopped
    eta_s: float | None
    problem: str | None  # why processing stopped, in words a merchandiser understands
    notice: str | None = None  # while running: e.g. the endpoint is warming up, and how long that takes
    job: TransformJobRecord | None = None  # the batch's latest batch transform job, if it used one
    runner: BatchRun | None = None  # set when another process (task, CLI) runs it: where and since when

    @property
    def where(self) -> str | None:
        """"running on <host> since <t>" for a batch another process runs."""
        if self.runner is None:
            return None
        return (f"running on {self.runner.host or 'another machine'} since {self.runner.since_text}"
                f" (last heartbeat {self.runner.heartbeat_text})")

    @property
    def fraction(self) -> float:
        return self.batch.done / self.batch.total if self.batch.total else 1.0


@dataclass
class _Run:
    started: float
    done_at_start: int
    progress: BatchProgress | None = None


class BatchWorker:
    def __init__(self, stages: Stages, *, concurrency: int, clock: Callable[[], float] = time.monotonic,
                 transform: "BatchTransformRunner | None" = None, wall_clock: Callable[[], float] = time.time,
                 no_photo_by_photo: str | None = None) -> None:
        self.stages, self.concurrency, self.clock, self.wall_clock = stages, concurrency, clock, wall_clock
        self.transform = transform  # None: this deployment has no batch transform (local captioner)
        # Why photos cannot be captioned one by one here (captioners.photo_by_photo_problem: ENDPOINT_ENABLED=false with a
        # SageMaker captioner), else None: then every run, Resume and restart included, is a batch transform job.
        self.no_photo_by_photo = no_photo_by_photo
        self._queue: queue.Queue[tuple[int, bool, bool, bool]] = queue.Queue()
        self._owner: str | None = None  # runner id of the batch this worker runs now
        self._lock = threading.Lock()
        self._queued: set[int] = set()
        self._running: int | None = None
        self._runs: dict[int, _Run] = {}
        self._problems: dict[int, str] = {}
        self._cheapest: set[int] = set()  # batches whose summaries go through OpenAI's Batch API
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batch-worker", daemon=True)
        self._thread.start()

    # --- commands ----------------------------------------------------------------------------
    def submit(self, batch_id: int, *, as_job: bool = False, retry_failed: bool = False, adopt: bool = False,
               cheapest: bool = False) -> None:
        """Queue a batch (again); `as_job` runs it as a batch transform job; `cheapest`: summaries through
        OpenAI's Batch API (kept for this batch's later runs in this process). Already queued or
        running here: nothing happens. Running in another process: BatchBusyError says where
        (`adopt`: queue it anyway and take it over if that runner's lease ends without a heartbeat).
        A batch with an unfinished job always follows that job."""
        if cheapest:
            self._cheapest.add(batch_id)
        if as_job and self.transform is None:
            raise ConfigError("Batch jobs are not available: set CAPTIONER=sagemaker or sagemaker-async and SAGEMAKER_TRANSFORM_S3.")
        with self._lock:
            if batch_id in self._queued or batch_id == self._running:
                return
        elsewhere = self._runs_elsewhere(self.stages.store.get_batch(batch_id))
        if elsewhere is not None and not adopt:
            raise BatchBusyError(batch_id, elsewhere)
        with self._lock:
            if batch_id in self._queued or batch_id == self._running:
                return
            self._queued.add(batch_id)
            self._problems.pop(batch_id, None)
        self._queue.put((batch_id, as_job, retry_failed, adopt))

    def resume_unfinished(self) -> list[int]:
        """Queue what a previous server left unfinished; a batch another live process runs is left to it."""
        batch_ids = self.stages.store.unfinished_batch_ids()
        for batch_id in batch_ids:
            self.submit(batch_id, adopt=True)
        return batch_ids

    def stop(self, batch_id: int, who: str) -> None:
        """Stop this batch, wherever it runs: dropped from this queue, this runner cancelled if it is
        the one, and a stop request stored on the batch for the runner that holds it."""
        with self._lock:
            self._queued.discard(batch_id)  # the queue entry is skipped when reached
            if batch_id == self._running:
                self._cancel.set()
            self._problems[batch_id] = f"Stopped by {who}. Press Resume to finish the remaining photos."
        self.stages.store.request_stop(batch_id, who, now=self.wall_clock())

    def stop_current(self) -> None:
        """Stop the running batch after the items in flight; it stays resumable."""
        self._cancel.set()

    def _runs_elsewhere(self, batch: BatchRecord | None) -> BatchRun | None:
        """The batch's runner when it is a live process other than this worker's run."""
        run = batch.run if batch is not None else None
        if run is None or not run.live(self.wall_clock()) or run.owner == self._owner or runner_is_dead_here(run.owner):
            return None
        return run

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued and self._running is None:
                    return True
            time.sleep(0.05)
        return False

    # --- what pages read ---------------------------------------------------------------------
    def view(self, batch_id: int) -> BatchView | None:
        batch = self.stages.store.get_batch(batch_id)
        if batch is None:
            return None
        with self._lock:
            running, queued = batch_id == self._running, batch_id in self._queued
            problem = self._problems.get(batch_id)
            run = self._runs.get(batch_id)
        elsewhere = None if running else self._runs_elsewhere(batch)
        if running:
            state = "running"
        elif queued:
            state = "queued"
        elif elsewhere is not None:
            state, problem = "running", None
        elif batch.done >= batch.total:
            state = "finished"
        else:
            state = "stopped"
        eta = self._eta(batch, run) if running else None
        jobs = self.stages.store.transform_jobs(batch_id) if self.transform is not None else []
        notice = (self._notice() if running else None) or self._summaries_notice(batch_id, state)
        return BatchView(batch=batch, state=state, eta_s=eta, problem=problem, notice=notice,
                         job=jobs[0] if jobs else None, runner=elsewhere)

    def _summaries_notice(self, batch_id: int, state: str) -> str | None:
        """While summaries are at OpenAI's Batch API (Cheapest, or a batch job): since when, and what Resume does."""
        if self.stages.batch_summarizer is None or state == "finished":
            return None
        record = self.stages.store.pending_openai_batch(batch_id)
        if record is None:
            return None
        if record.openai_batch_id.startswith("intent:"):  # Cheapest picked, captions still running
            return ("Cheapest: the summaries go to OpenAI's Batch API once every photo is captioned (within 24 h)."
                    if state == "running" else None)
        since = datetime.fromtimestamp(record.submitted_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if state == "stopped":
            return (f"The summaries of {record.requests} photos are still at OpenAI's Batch API (sent {since}); "
                    "press Resume to collect them without paying again.")
        return f"Every photo is captioned; {record.requests} summaries are at OpenAI's Batch API since {since} (within 24 h, usually far sooner)."

    def _notice(self) -> str | None:
        readiness = captioner_readiness(self.stages.captioner)
        return readiness.message if readiness is not None and not readiness.ready else None

    def _eta(self, batch: BatchRecord, run: _Run | None) -> float | None:
        if run is None:
            return None
        finished_here = batch.done - run.done_at_start
        elapsed = self.clock() - run.started
        if finished_here <= 0 or elapsed <= 0:
            return None
        return (batch.total - batch.done) * elapsed / finished_here

    # --- the thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch_id, as_job, retry_failed, adopt = self._queue.get()
            batch = self.stages.store.get_batch(batch_id)
            with self._lock:
                if batch_id not in self._queued:
                    continue  # stopped while queued
                self._queued.discard(batch_id)
                self._running = batch_id
                self._owner = new_runner_id()
                self._cancel.clear()
                self._runs[batch_id] = _Run(started=self.clock(), done_at_start=batch.done if batch else 0)
            as_job = self.transform is not None and (as_job or self.no_photo_by_photo is not None
                                                     or self.transform.active_job(batch_id) is not None)
            stopped_by = None
            try:
                if as_job:
                    self.transform.run(batch_id, retry_failed=retry_failed, cancel=self._cancel)
                elif self.no_photo_by_photo is not None:  # no endpoint and no jobs: every photo would fail, none is tried
                    with self._lock:
                        self._problems[batch_id] = (f"{self.no_photo_by_photo}, and batch jobs are not set up "
                                                    "(SAGEMAKER_TRANSFORM_S3): nothing was captioned.")
                else:
                    self.stages.captioner.warm_up()  # a model that cannot load stops the batch, not every row
                    progress = run_batch(self.stages, batch_id, concurrency=self.concurrency, cancel=self._cancel,
                                         retry_failed=retry_failed, owner=self._owner, cheapest=batch_id in self._cheapest)
                    stopped_by = progress.stopped_by
                if self._cancel.is_set():
                    with self._lock:
                        self._problems.setdefault(batch_id, None)
                        self._problems[batch_id] = self._problems[batch_id] or (
                            "Stopped following the batch job; it keeps running in AWS. Press Resume to follow it again."
                            if as_job else f"Stopped by {stopped_by or 'a user'}. Press Resume to finish the remaining photos.")
            except BatchBusyError as busy:
                if adopt and busy.run.lease_until is not None:
                    # Left by a server that may be gone: try again once its lease has run out unrenewed.
                    wait = max(0.0, busy.run.lease_until - self.wall_clock()) + 1.0
                    with self._lock:
                        self._queued.add(batch_id)
                    timer = threading.Timer(wait, self._queue.put, args=((batch_id, as_job, retry_failed, False),))
                    timer.daemon = True
                    timer.start()
                else:
                    with self._lock:
                        self._problems[batch_id] = str(busy)
            except Exception as exc:  # keep the worker alive for the next batch
                _log.warning("batch stopped by an error", exc_info=True,  # operators' logs only (redacted); pages get one sentence
                             extra={"batch_id": batch_id, "error_type": type(exc).__name__})
                with self._lock:
                    self._problems[batch_id] = f"Processing stopped: {describe_error(exc)} Finished photos are saved; press Resume to continue."
            finally:
                with self._lock:
                    self._running = None
                    self._owner = None
