"""The batch runner's rules, one by one (written from mutants that survived tests/test_store_runner_export.py,
tests/test_stop_and_limits.py and tests/test_leases.py; docs/mutation.md): what a read may cost, who may run a
batch, what is counted, cached, saved and logged. A fast stand-in captioner (the Captioner protocol, no model)
and the SQLite store; gates are Events and clocks are injected."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import replace

import pytest

from pipeline.batches.runner import LeaseOptions, Stages, raw_read_cost, run_batch, take_batch
from pipeline.errors import ServiceError
from pipeline.models import SourceRef, Usage
from pipeline.service import build_stages, create_batch
from pipeline.settings import Settings
from pipeline.store import BatchBusyError
from pipeline.store.sqlite_store import SqliteStore
from support.captioners import CountingCaptioner
from support.images import jpeg_bytes

FAST = LeaseOptions(lease_s=120.0, item_deadline_s=600.0, stop_grace_s=0.0, poll_s=0.02)
WAIT = 60  # upper bound for Events; passing tests never wait this long


class Captioner(CountingCaptioner):
    """Answers at once (or when `gate` opens); counts calls per photo; fails photos in `fail_on`."""

    model_id = "stand-in"
    default_answers = {"color": "red", "category": "shirt"}


@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline")


def make(settings, captioner, leases=FAST, store=None) -> Stages:
    store = store or SqliteStore(settings.data_dir / "store.sqlite3")
    return replace(build_stages(settings, store=store, captioner=captioner), leases=leases)


def photos(tmp_path, count: int, name: str = "p", same: bool = False) -> list:
    folder = tmp_path / name
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"{name}{index}.jpg"
        path.write_bytes(jpeg_bytes(seed=0 if same else index + 1, color=(20 * (0 if same else index) % 255, 90, 160)))
        paths.append(path)
    return paths


# --- what reading a photo may hold in memory ---------------------------------------------------------
def test_the_raw_bytes_a_read_may_hold_are_known_before_reading(tmp_path, settings):
    stages = make(settings, Captioner())
    limit = stages.fetch_limits.max_bytes
    small = tmp_path / "small.jpg"
    small.write_bytes(b"x" * 1234)
    assert raw_read_cost(stages, SourceRef("file", str(small))) == 1234
    exact = tmp_path / "exact.jpg"
    with open(exact, "wb") as handle:
        handle.truncate(limit)  # sparse: the size counts, not the disk
    assert raw_read_cost(stages, SourceRef("file", str(exact))) == limit
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(limit + 1)
    assert raw_read_cost(stages, SourceRef("file", str(huge))) == 0  # refused from its size, never read
    assert raw_read_cost(stages, SourceRef("file", str(tmp_path / "gone.jpg"))) == limit
    assert raw_read_cost(stages, SourceRef("url", "https://shop.example/a.jpg")) == limit
    assert raw_read_cost(stages, SourceRef("s3", "s3://bucket/a.jpg")) == limit
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("a.jpg", b"y" * 5000)
    assert raw_read_cost(stages, SourceRef("zip", str(archive), member="a.jpg")) == 2 * 5000  # chunks and their join
    assert raw_read_cost(stages, SourceRef("zip", str(archive), member="missing.jpg")) == limit
    not_a_zip = tmp_path / "fake.zip"
    not_a_zip.write_bytes(b"not a zip")
    assert raw_read_cost(stages, SourceRef("zip", str(not_a_zip), member="a.jpg")) == limit


# --- who runs a batch ------------------------------------------------------------------------------------
def dead_owner_here() -> str:
    """The owner id of a process on this host that has ended (a killed CLI run)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return f"{socket.gethostname()}/{int(finished.stdout)}/abc"


def test_a_batch_held_by_a_process_that_ended_on_this_host_is_taken_over_at_once(tmp_path, settings):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    stages.store.claim_batch(batch.id, dead_owner_here(), 120, now=1000.0)
    first = stages.store.list_items(batch.id)[0]
    assert stages.store.claim_item(first.id, dead_owner_here(), 120, version=first.version, now=1000.0)
    progress = run_batch(stages, batch.id, owner="me/1/x", clock=lambda: 1001.0)  # its leases run till 1120
    assert (progress.ok, progress.skipped) == (2, 0)


def test_a_batch_held_by_a_live_runner_elsewhere_is_refused_naming_it(tmp_path, settings):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    stages.store.claim_batch(batch.id, "task-a/7/abc", 120, now=1000.0)
    with pytest.raises(BatchBusyError, match=rf"^Batch {batch.id} is already running on task-a since"):
        take_batch(stages.store, batch.id, "me/1/x", FAST, clock=lambda: 1010.0)
    take_batch(stages.store, batch.id, "task-a/7/abc", FAST, clock=lambda: 1010.0)  # its own runner renews
    assert stages.store.get_batch(batch.id).run.lease_until == 1010.0 + FAST.lease_s
    here_alive = f"{socket.gethostname()}/{os.getpid()}/abc"  # this very process: alive
    stages.store.release_batch(batch.id, "task-a/7/abc")
    stages.store.claim_batch(batch.id, here_alive, 120, now=1000.0)
    with pytest.raises(BatchBusyError):
        take_batch(stages.store, batch.id, "me/1/x", FAST, clock=lambda: 1010.0)


def test_after_a_run_the_batch_and_every_item_are_released(tmp_path, settings):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 3), name="b", created_by="ann")
    run_batch(stages, batch.id, concurrency=2, owner="me/1/x")
    assert stages.store.get_batch(batch.id).run is None
    assert all(item.lease_owner is None for item in stages.store.list_items(batch.id))


# --- what is counted ---------------------------------------------------------------------------------------
def test_progress_counts_each_outcome_once_and_reports_after_each(tmp_path, settings):
    from pipeline.images.normalize import normalize_image

    paths = photos(tmp_path, 4)
    bad = normalize_image(paths[1].read_bytes()).content_key
    captioner = Captioner(fail_on={bad})
    stages = make(settings, captioner)
    batch = create_batch(stages.store, settings, paths, name="b", created_by="ann")
    seen: list[tuple[int, int, int]] = []
    progress = run_batch(stages, batch.id, concurrency=0, on_progress=lambda p: seen.append((p.ok, p.failed, p.done)))
    assert (progress.total, progress.ok, progress.failed, progress.done, progress.skipped, progress.timed_out) == (4, 3, 1, 4, 0, 0)
    assert not progress.cancelled and progress.stopped_by is None
    assert sorted(done for _, _, done in seen) == [1, 2, 3, 4] and seen[-1][:2] in {(3, 1)}
    failed = [item for item in stages.store.list_items(batch.id) if item.status == "error"]
    assert [item.error for item in failed] == ["The captioning endpoint is busy (throttled); try again shortly."]
    retry = run_batch(stages, batch.id, retry_failed=True)
    assert (retry.total, retry.ok) == (1, 0) or (retry.total, retry.failed) == (1, 1)  # only the failed one again
    assert captioner.calls[bad] == 2


def test_items_another_runner_holds_are_skipped_and_each_counted(tmp_path, settings):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 4), name="b", created_by="ann")
    held = stages.store.list_items(batch.id)[1:3]
    for item in held:
        assert stages.store.claim_item(item.id, "other/2/y", 120, version=item.version, now=5000.0)
    progress = run_batch(stages, batch.id, owner="me/1/x", clock=lambda: 5001.0, join=True)
    assert (progress.total, progress.ok, progress.skipped, progress.done) == (4, 2, 2, 2)
    assert [stages.store.get_item(item.id).status for item in held] == ["pending", "pending"]


def test_a_run_stopped_before_it_starts_leaves_every_item_pending(tmp_path, settings):
    captioner = Captioner()
    stages = make(settings, captioner)
    batch = create_batch(stages.store, settings, photos(tmp_path, 3), name="b", created_by="ann")
    stop = threading.Event()
    stop.set()
    progress = run_batch(stages, batch.id, cancel=stop)
    assert progress.cancelled and (progress.ok, progress.failed, progress.skipped) == (0, 0, 0)
    assert sum(captioner.calls.values()) == 0 and len(stages.store.items_to_process(batch.id)) == 3


def test_the_item_deadline_message_names_the_limit_and_what_to_do(tmp_path, settings):
    now = [3_000_000.0]
    gate = threading.Event()
    captioner = Captioner(gate)
    stages = make(settings, captioner, replace(FAST, item_deadline_s=45.5))
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, clock=lambda: now[0])), daemon=True)
    thread.start()
    assert captioner.entered.wait(WAIT)
    now[0] += 45.4  # not yet
    assert not thread.join(0.2) and thread.is_alive()
    now[0] += 0.1  # exactly at the deadline
    thread.join(WAIT)
    gate.set()
    [item] = stages.store.list_items(batch.id)
    assert item.error == "Processing this photo took longer than 45.5 s, so it was stopped. Retry failed items to try again."
    assert item.error_kind == "item_timeout" and (done["p"].failed, done["p"].timed_out, done["p"].ok) == (1, 1, 0)


@pytest.mark.parametrize("leases", [True, False], ids=["leases", "no-leases"])
def test_a_timed_out_item_is_logged_failed_keeps_its_timings_and_its_late_answer_only_reaches_the_ledger(
        tmp_path, settings, caplog, leases):
    now, gate, late = [3_100_000.0], threading.Event(), threading.Event()

    class Watching(SqliteStore):  # tells the test when the late answer has been dealt with
        def record_usage(self, *args, **kwargs):
            super().record_usage(*args, **kwargs)
            late.set()

        def save_result(self, *args, **kwargs):
            try:
                return super().save_result(*args, **kwargs)
            finally:
                late.set()

    captioner = Captioner(gate)
    stages = make(settings, captioner, replace(FAST, item_deadline_s=30.0, enabled=leases),
                  store=Watching(settings.data_dir / "w.sqlite3"))
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    done: dict = {}
    with caplog.at_level(logging.INFO, logger="pipeline.items"):
        thread = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, clock=lambda: now[0])), daemon=True)
        thread.start()
        assert captioner.entered.wait(WAIT)
        now[0] += 30.0
        thread.join(WAIT)
        gate.set()  # the endpoint answers after all
        assert late.wait(WAIT)
    [item] = stages.store.list_items(batch.id)
    assert (item.status, item.error_kind, done["p"].timed_out) == ("error", "item_timeout", 1)
    assert item.error.startswith("Processing this photo took longer than 30 s")
    assert {"fetch", "normalize"} <= set(item.stage_ms), item.stage_ms  # the time spent before the deadline
    [event] = [r for r in caplog.records if getattr(r, "stage", None) == "item"]
    assert (event.outcome, event.error_kind) == ("error", "item_timeout")
    assert [u.kind for u in stages.store.usage(batch.id)] == ["endpoint"]  # paid for: counted, not saved


def test_an_item_taken_over_before_its_deadline_is_not_failed_by_the_runner_that_lost_it(tmp_path, settings):
    """Our photo hangs; another task (its clock ahead, past our lease) takes the item over; then our deadline passes:
    the item is the new holder's to finish, so our timeout is not written over it."""
    start, gate = 3_200_000.0, threading.Event()
    now = [start]
    captioner = Captioner(gate)
    stages = make(settings, captioner, replace(FAST, item_deadline_s=30.0))
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    runner = threading.Thread(target=lambda: run_batch(stages, batch.id, owner="me/1/x", clock=lambda: now[0]), daemon=True)
    runner.start()
    try:
        assert captioner.entered.wait(WAIT)
        [held] = stages.store.list_items(batch.id)
        assert stages.store.claim_item(held.id, "other/2/y", 120, version=held.version, now=start + 500)
        now[0] += 30.0  # our deadline
        runner.join(WAIT)
    finally:
        gate.set()
    [item] = stages.store.list_items(batch.id)
    assert (item.status, item.error, item.lease_owner) == ("pending", None, "other/2/y")


# --- the caption cache -----------------------------------------------------------------------------------------
def test_the_same_photo_is_captioned_once_and_then_comes_from_the_cache(tmp_path, settings):
    captioner = Captioner(answers={name: "x" for name in ("category", "color", "material", "pattern", "style")})
    stages = make(settings, captioner)
    first = create_batch(stages.store, settings, photos(tmp_path, 2, "a", same=True), name="a", created_by="ann")
    run_batch(stages, first.id, concurrency=2)
    assert sum(captioner.calls.values()) == 1  # the copy in flight waited for the first answer
    assert [u.kind for u in stages.store.usage(first.id)] == ["endpoint"]  # one paid call, not two
    again = create_batch(stages.store, settings, photos(tmp_path, 1, "b", same=True), name="b", created_by="ann")
    with collected_metrics() as observed:
        run_batch(stages, again.id)
    assert sum(captioner.calls.values()) == 1 and stages.store.usage(again.id) == []  # from the store's cache
    assert (counted(observed, "CaptionCacheHits"), counted(observed, "CaptionCacheMisses")) == (1, 0)
    third = create_batch(stages.store, settings, photos(tmp_path, 1, "c", same=True), name="c", created_by="ann")
    run_batch(replace(stages, use_cache=False), third.id)
    assert sum(captioner.calls.values()) == 2  # without the cache (CAPTION_CACHE=false): a new call


def test_a_cached_caption_that_lacks_an_attribute_asked_now_is_not_reused(tmp_path, settings):
    captioner = Captioner(answers={"color": "red"})  # answered before the taxonomy asked more
    stages = make(settings, captioner)
    first = create_batch(stages.store, settings, photos(tmp_path, 1, "a", same=True), name="a", created_by="ann")
    run_batch(stages, first.id)
    again = create_batch(stages.store, settings, photos(tmp_path, 1, "b", same=True), name="b", created_by="ann")
    run_batch(stages, again.id)
    assert sum(captioner.calls.values()) == 2  # asked again: the cached answers lack category, material, ...


# --- what a run logs -------------------------------------------------------------------------------------------
@contextmanager
def collected_metrics():
    """The metric observations (pipeline.observability.metrics) made inside the block."""
    from pipeline.observability.metrics import METRICS_LOGGER

    observed: list = []

    class Collect(logging.Handler):
        def emit(self, record):
            observed.append(record.metric)

    metrics_log, collect = logging.getLogger(METRICS_LOGGER), Collect()
    metrics_log.addHandler(collect)
    try:
        yield observed
    finally:
        metrics_log.removeHandler(collect)


def counted(observed, name: str) -> float:
    return sum(o.value for o in observed if o.name == name)


def test_one_batch_event_per_run_with_its_counts(tmp_path, settings, caplog):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    with caplog.at_level(logging.INFO, logger="pipeline.batches"):
        run_batch(stages, batch.id)
    [event] = [r for r in caplog.records if r.name == "pipeline.batches" and r.getMessage() == "batch run ended"]
    assert (event.batch_id, event.total, event.ok, event.failed, event.skipped, event.timed_out) == (batch.id, 2, 2, 0, 0, 0)
    assert event.outcome == "ok" and event.stopped_by is None and event.duration_ms >= 0


def test_an_item_saved_by_the_run_records_its_words_usage_and_taxonomy_version(tmp_path, settings):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    assert item.status == "ok", item.error
    assert item.word_count == len(item.summary.split())
    assert [(u.kind, u.model) for u in stages.store.usage(batch.id)] == [("endpoint", "stand-in")]
    assert item.taxonomy_version == 0


def run_meeting_captioner(tmp_path, settings, count: int, concurrency: int, max_in_flight: int | None = None):
    """A batch of `count` photos whose captioner lets a call through only once all `count` calls are in it at once
    (`max_in_flight`: the captioner is an async endpoint queueing that many itself). (progress, barrier)."""
    together = threading.Barrier(count, timeout=WAIT)

    class Meeting(Captioner):
        def caption(self, image, questions):
            together.wait()
            return super().caption(image, questions)

    if max_in_flight is not None:
        Meeting.max_in_flight = max_in_flight
    stages = make(settings, Meeting())
    batch = create_batch(stages.store, settings, photos(tmp_path, count), name="b", created_by="ann")
    return run_batch(stages, batch.id, concurrency=concurrency), together


def test_different_photos_are_captioned_at_the_same_time(tmp_path, settings):
    progress, together = run_meeting_captioner(tmp_path, settings, count=2, concurrency=2)
    assert progress.ok == 2 and not together.broken


def test_stop_reaches_a_copy_waiting_for_the_first_copys_caption(tmp_path, settings):
    gate, stop = threading.Event(), threading.Event()
    captioner = Captioner(gate)
    stages = make(settings, captioner)
    saved_photos, second_saved = [], threading.Event()
    save = stages.images.save

    def saving(key, data):  # the normalized copy is stored just before the caption is asked for
        location = save(key, data)
        saved_photos.append(key)
        if len(saved_photos) == 2:
            second_saved.set()
        return location

    stages.images.save = saving
    batch = create_batch(stages.store, settings, photos(tmp_path, 2, same=True), name="b", created_by="ann")
    thread = threading.Thread(target=lambda: run_batch(stages, batch.id, concurrency=2, cancel=stop), daemon=True)
    thread.start()
    assert captioner.entered.wait(WAIT) and second_saved.wait(WAIT)  # one copy in the call, the other waiting for it
    stop.set()
    thread.join(WAIT)
    for _ in range(WAIT * 50):  # the waiting copy lets go of its item (or fails) within one 50 ms poll of the Stop
        items = stages.store.list_items(batch.id)
        if sum(item.lease_owner is not None for item in items) <= 1 or any(item.status == "error" for item in items):
            break
        threading.Event().wait(0.02)
    statuses = sorted(item.status for item in stages.store.list_items(batch.id))
    gate.set()
    assert statuses == ["pending", "pending"], [i.error for i in stages.store.list_items(batch.id)]  # stopped, not failed: a later run picks both up
    assert sum(captioner.calls.values()) == 1


# --- what each item's caption stage says and keeps ---------------------------------------------------------
def caption_events(caplog) -> list[tuple[int, bool]]:
    return sorted((r.item_id, r.cached) for r in caplog.records if getattr(r, "stage", None) == "caption")


def test_the_copy_that_waited_for_the_first_answer_is_marked_cached_and_nothing_is_paid_twice(tmp_path, settings, caplog):
    both_summarizing = threading.Barrier(2, timeout=WAIT)  # neither copy is saved before both have their caption

    class Together:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def summarize(self, request):
            both_summarizing.wait()
            return self.inner.summarize(request)

    captioner = Captioner(answers={name: "x" for name in ("category", "color", "material", "pattern", "style")})
    stages = make(settings, captioner)
    stages.summarizer = Together(stages.summarizer)
    batch = create_batch(stages.store, settings, photos(tmp_path, 2, "a", same=True), name="a", created_by="ann")
    with caplog.at_level(logging.INFO, logger="pipeline.items"):
        progress = run_batch(stages, batch.id, concurrency=2)
    assert progress.ok == 2 and sum(captioner.calls.values()) == 1  # the second copy used the first one's answer
    assert [cached for _, cached in caption_events(caplog)] in ([False, True], [True, False])
    assert [u.kind for u in stages.store.usage(batch.id)] == ["endpoint"]


def test_the_captioner_is_asked_the_taxonomys_questions(tmp_path, settings):
    asked = []

    class Listening(Captioner):
        def caption(self, image, questions):
            asked.append([q.name for q in questions])
            return super().caption(image, questions)

    stages = make(settings, Listening())
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    assert asked == [stages.schema.names()]


def test_a_paid_caption_that_failed_is_kept_in_the_ledger_with_the_error(tmp_path, settings):
    from pipeline.errors import attach_usage

    class PaidButUnusable(Captioner):
        def caption(self, image, questions):
            raise attach_usage(ServiceError("The vision model's answer could not be read; retry the item."),
                               [Usage(kind="vision", model="gpt-4o", input_tokens=85, output_tokens=3)])

    stages = make(settings, PaidButUnusable())
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    assert item.status == "error" and item.error == "The vision model's answer could not be read; retry the item."
    assert [(u.kind, u.input_tokens) for u in stages.store.usage(batch.id)] == [("vision", 85)]


def test_each_stage_of_a_saved_item_is_timed(tmp_path, settings):
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    assert {"fetch", "normalize", "checks", "caption", "summarize"} <= set(item.stage_ms)
    assert item.image_path == str(stages.images.path_for(item.content_key))  # where the normalized copy was stored


def test_a_summary_that_failed_after_paid_calls_keeps_them_in_the_ledger(tmp_path, settings):
    from pipeline.errors import attach_usage

    class PaidThenFailed:
        name = "openai"

        def summarize(self, request):
            raise attach_usage(ServiceError("OpenAI is unavailable right now (gpt-4o); retry the failed items later."),
                               [Usage(kind="llm", model="gpt-4o", input_tokens=120, output_tokens=9)])

    stages = make(settings, Captioner())
    stages.summarizer = PaidThenFailed()
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    assert item.error == "OpenAI is unavailable right now (gpt-4o); retry the failed items later."
    assert sorted((u.kind, u.input_tokens) for u in stages.store.usage(batch.id)) == [("endpoint", 0), ("llm", 120)]


@pytest.mark.parametrize("kind", ["photo", "zip"])
def test_an_upload_resumed_on_another_task_is_fetched_from_s3_before_it_is_read(tmp_path, settings, caplog, kind):
    import boto3
    from moto import mock_aws

    from pipeline.store.s3_images import S3ImageStore

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="photos")
        stages = make(settings, Captioner())
        stages.images = S3ImageStore(client, "photos", uploads_root=tmp_path / "uploads")
        upload = tmp_path / "uploads" / "u1" / ("shirt.jpg" if kind == "photo" else "shirts.zip")
        upload.parent.mkdir(parents=True)
        if kind == "photo":
            upload.write_bytes(jpeg_bytes(seed=3))
        else:
            with zipfile.ZipFile(upload, "w") as archive:
                archive.writestr("shirt.jpg", jpeg_bytes(seed=3))
        batch = create_batch(stages.store, settings, [upload], name="b", created_by="ann")
        stages.images.keep_upload(upload)
        upload.unlink()  # this task never saw the upload: another task's browser sent it
        with caplog.at_level(logging.INFO, logger="pipeline.items"):
            run_batch(stages, batch.id)
        [item] = stages.store.list_items(batch.id)
    assert item.status == "ok", item.error
    stages_seen = [getattr(r, "stage", None) for r in caplog.records]
    assert [stages_seen.count(name) for name in ("fetch", "normalize", "checks")] == [1, 1, 1]  # each stage once, download in fetch


def test_the_summary_request_carries_the_sku_the_photo_checks_and_the_style_guide(tmp_path, settings):
    from pipeline.models import StyleGuide

    requests = []

    class Recording:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def summarize(self, request):
            requests.append(request)
            return self.inner.summarize(request)

    stages = make(settings, Captioner())
    stages.summarizer = Recording(stages.summarizer)
    stages.store.save_style_guide(StyleGuide(avoid=["shirt"]), "ann", expected_version=0)
    (tmp_path / "list.csv").write_text("sku,image\nSKU-7,p.jpg\n")
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(seed=5))
    batch = create_batch(stages.store, settings, [tmp_path / "list.csv", tmp_path / "p.jpg"], name="b", created_by="ann")
    run_batch(stages, batch.id)
    [request] = requests
    assert request.sku == "SKU-7" and request.checks is not None and request.checks.width > 0
    assert request.style is not None and request.style.avoid == ["shirt"]
    [item] = stages.store.list_items(batch.id)
    assert item.status == "ok" and "shirt" not in item.summary.lower()  # the offline template left the word out


def test_the_normalize_settings_reach_every_photo(tmp_path, settings):
    from PIL import Image
    import io

    stages = make(settings, Captioner())
    stages.normalize = replace(stages.normalize, max_side=200)
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    with Image.open(io.BytesIO(stages.images.path_for(item.content_key).read_bytes())) as stored:
        assert max(stored.size) == 200
    sizes = {}
    for quality in (20, 95):  # the JPEG quality setting reaches the stored copy
        stages.normalize = replace(stages.normalize, max_side=768, quality=quality)
        again = create_batch(stages.store, settings, photos(tmp_path, 1, f"q{quality}"), name=f"q{quality}", created_by="ann")
        run_batch(stages, again.id)
        [item] = stages.store.list_items(again.id)
        sizes[quality] = stages.images.path_for(item.content_key).stat().st_size
    assert sizes[20] * 2 < sizes[95]
    stages.normalize = replace(stages.normalize, max_side=768, max_pixels=1000)
    small = create_batch(stages.store, settings, photos(tmp_path, 1, "big"), name="c", created_by="ann")
    run_batch(stages, small.id)
    [refused] = stages.store.list_items(small.id)
    assert refused.status == "error" and "megapixels" in refused.error  # refused for its size, not decoded


# --- how many paid calls are in flight ---------------------------------------------------------------------------
def test_an_async_endpoint_gets_more_photos_in_flight_but_summaries_stay_within_concurrency(tmp_path, settings):
    """With an async endpoint (max_in_flight) more captions are in flight than `concurrency`; the summaries
    (OpenAI calls, rate-limited per account) still never exceed it."""
    all_captioned = threading.Event()
    second_summary = threading.Event()
    lock, active, peak, captioned_while_open = threading.Lock(), [0], [0], []

    class AsyncEndpoint(Captioner):
        max_in_flight = 3

        def caption(self, image, questions):
            answer = super().caption(image, questions)
            if sum(self.calls.values()) == 3:
                all_captioned.set()
            return answer

    class Counting:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def summarize(self, request):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                if active[0] > 1:
                    second_summary.set()
            try:
                # the first summary holds its slot until every photo is captioned and waits a moment for a
                # second summary to start beside it (which only a missing bound allows)
                captioned_while_open.append(all_captioned.wait(WAIT))
                if captioned_while_open[-1] and not second_summary.is_set():
                    second_summary.wait(0.5)
                return self.inner.summarize(request)
            finally:
                with lock:
                    active[0] -= 1

    captioner = AsyncEndpoint()
    stages = make(settings, captioner)
    stages.summarizer = Counting(stages.summarizer)
    batch = create_batch(stages.store, settings, photos(tmp_path, 3), name="b", created_by="ann")
    progress = run_batch(stages, batch.id, concurrency=1)
    assert progress.ok == 3 and captioned_while_open[0]  # all three photos were captioned while the first summary was open
    assert peak[0] == 1


def test_a_run_without_leases_processes_every_item_and_claims_none(tmp_path, settings):
    """LeaseOptions(enabled=False): the runner as it was before leases (bench/ compares against it)."""
    claims = []

    class Watching(SqliteStore):
        def claim_item(self, *args, **kwargs):
            claims.append(args[0])
            return super().claim_item(*args, **kwargs)

    stages = make(settings, Captioner(), leases=replace(FAST, enabled=False), store=Watching(settings.data_dir / "w.sqlite3"))
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    progress = run_batch(stages, batch.id)
    assert (progress.ok, progress.skipped, claims) == (2, 0, [])
    assert [(i.status, i.lease_owner) for i in stages.store.list_items(batch.id)] == [("ok", None)] * 2


def test_an_async_endpoint_gets_its_max_in_flight_photos_captioned_at_once(tmp_path, settings):
    """Three photos, concurrency 1, an endpoint that queues 3 requests itself: all three caption calls are in flight
    together (each waits for the other two); with the bound at `concurrency` the first would wait alone and fail."""
    progress, together = run_meeting_captioner(tmp_path, settings, count=3, concurrency=1, max_in_flight=3)
    assert (progress.ok, progress.failed) == (3, 0) and not together.broken


def test_an_async_endpoint_gets_more_photos_in_flight_than_a_default_thread_pool_would_hold(tmp_path, settings):
    """33 photos queued at an endpoint that takes 33 at once: the runner's workers are sized for that (Python's
    default pool holds at most 32 threads)."""
    progress, together = run_meeting_captioner(tmp_path, settings, count=33, concurrency=1, max_in_flight=33)
    assert (progress.ok, progress.failed) == (33, 0) and not together.broken


# --- near-duplicate photos (issue 19) -----------------------------------------------------------------------------
def look_alike_photos(tmp_path, name: str) -> list:
    """One product photo and the same photo saved again at another JPEG quality: another file (another content key,
    so no exact-cache hit), a few perceptual-hash bits apart."""
    from PIL import Image
    import io

    folder = tmp_path / name
    folder.mkdir()
    original = jpeg_bytes(seed=11, color=(30, 120, 200))
    (folder / "a.jpg").write_bytes(original)
    for other, quality in (("b", 35), ("c", 60)):
        with Image.open(io.BytesIO(original)) as image:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
        (folder / f"{other}.jpg").write_bytes(buffer.getvalue())
    return [folder / "a.jpg", folder / "b.jpg", folder / "c.jpg"]


def hash_distance(paths) -> int:
    from pipeline.images.normalize import normalize_image
    from pipeline.images.perceptual import distance

    first, second = (normalize_image(p.read_bytes()) for p in paths[:2])
    assert first.content_key != second.content_key
    return distance(first.phash, second.phash)


def one_item_batch(stages, settings, path, name):
    return create_batch(stages.store, settings, [path], name=name, created_by="ann")


def test_a_look_alike_of_an_earlier_batchs_photo_is_flagged_and_reused_only_when_the_batch_asks(tmp_path, settings, caplog):
    paths = look_alike_photos(tmp_path, "p")
    bits = hash_distance(paths)
    assert 0 < bits <= settings.near_duplicate_max_distance
    captioner = Captioner(answers={name: "x" for name in ("category", "color", "material", "pattern", "style")})
    stages = make(settings, captioner)
    first = one_item_batch(stages, settings, paths[0], "first")
    run_batch(stages, first.id)
    [earlier] = stages.store.list_items(first.id)
    assert earlier.status == "ok" and earlier.near_duplicate is None and earlier.phash

    reusing = one_item_batch(stages, settings, paths[1], "second")
    stages.store.set_reuse_near_duplicates(reusing.id, True)
    with caplog.at_level(logging.INFO, logger="pipeline.items"):
        run_batch(stages, reusing.id)
    [reused] = stages.store.list_items(reusing.id)
    assert caption_events(caplog) == [(reused.id, True)]  # logged and counted as a cache hit: nothing was paid
    assert reused.caption_model == earlier.caption_model == "stand-in"
    assert stages.store.cached_caption(reused.content_key, "stand-in") is None  # a reuse is not cached as this photo's own
    assert reused.status == "ok" and reused.reused_from == f"caption reused from batch {first.id} item 1"
    assert reused.near_duplicate == f"looks like batch {first.id} item 1 ({bits} bits apart)"
    assert reused.caption == earlier.caption and {a.name: a.raw for a in reused.attributes} == {a.name: a.raw for a in earlier.attributes}
    assert sum(captioner.calls.values()) == 1 and stages.store.usage(reusing.id) == []  # no call, nothing paid

    flagged = one_item_batch(stages, settings, paths[2], "third")  # reuse off (the default): flagged, captioned again
    run_batch(stages, flagged.id)
    [item] = stages.store.list_items(flagged.id)
    assert item.near_duplicate is not None and item.near_duplicate.startswith("looks like batch ")
    assert item.reused_from is None and sum(captioner.calls.values()) == 2
    assert [u.kind for u in stages.store.usage(flagged.id)] == ["endpoint"]


def run_look_alike_after_first(stages, settings, paths, reuse: bool = True):
    """Tags paths[0] in a batch of its own, then paths[1] (its look-alike) in a second batch (reusing captions when
    `reuse`); returns (first batch, second batch, the second batch's item)."""
    first = one_item_batch(stages, settings, paths[0], "first")
    run_batch(stages, first.id)
    second = one_item_batch(stages, settings, paths[1], "second")
    stages.store.set_reuse_near_duplicates(second.id, reuse)
    run_batch(stages, second.id)
    [item] = stages.store.list_items(second.id)
    return first, second, item


def test_only_a_finished_look_alike_with_every_answer_asked_now_is_reused(tmp_path, settings):
    paths = look_alike_photos(tmp_path, "p")
    captioner = Captioner(answers={"color": "red"})  # fewer answers than the taxonomy asks
    stages = make(settings, captioner)
    _, _, item = run_look_alike_after_first(stages, settings, paths)
    assert item.near_duplicate and item.reused_from is None and sum(captioner.calls.values()) == 2  # asked again

    from pipeline.images.normalize import normalize_image

    failing = Captioner(fail_on={normalize_image(paths[0].read_bytes()).content_key},
                        answers={name: "x" for name in ("category", "color", "material", "pattern", "style")})
    stages = make(Settings(_env_file=None, data_dir=tmp_path / "other", summarizer="offline"), failing)
    broken = one_item_batch(stages, settings, paths[0], "first")
    run_batch(stages, broken.id)
    assert stages.store.list_items(broken.id)[0].status == "error"
    later = one_item_batch(stages, settings, paths[1], "second")
    stages.store.set_reuse_near_duplicates(later.id, True)
    run_batch(stages, later.id)
    [item] = stages.store.list_items(later.id)
    assert item.status == "ok" and item.reused_from is None and failing.calls[item.content_key] == 1  # a failed item has no caption to give


def test_the_near_duplicate_settings_bound_what_is_flagged(tmp_path, settings):
    from pipeline.batches.runner import NearDuplicateOptions

    paths = look_alike_photos(tmp_path, "p")
    stages = make(settings, Captioner())
    stages.near_duplicates = NearDuplicateOptions(max_distance=hash_distance(paths) - 1)  # just too far
    first = one_item_batch(stages, settings, paths[0], "first")
    run_batch(stages, first.id)
    second = one_item_batch(stages, settings, paths[1], "second")
    run_batch(stages, second.id)
    assert stages.store.list_items(second.id)[0].near_duplicate is None
    stages.near_duplicates = NearDuplicateOptions(max_distance=hash_distance(paths), catalogue_max=0)  # near enough, no catalogue
    third = one_item_batch(stages, settings, paths[1], "third")
    run_batch(stages, third.id)
    assert stages.store.list_items(third.id)[0].near_duplicate is None  # earlier batches are not looked at
    stages.near_duplicates = NearDuplicateOptions(max_distance=hash_distance(paths), catalogue_max=1)
    fourth = one_item_batch(stages, settings, paths[0], "fourth")  # the newest tagged photo (third's) is the catalogue
    run_batch(stages, fourth.id)
    [item] = stages.store.list_items(fourth.id)
    assert item.near_duplicate == f"looks like batch {third.id} item 1 ({hash_distance(paths)} bits apart)"


# --- a Cheapest run: every caption first, then the summaries in one OpenAI batch ------------------------------------
class BatchSummaries:
    """Stands in for OpenAIBatchSummarizer (pipeline/summarizers/openai_batch.py): `wanted` as it decides for a
    Cheapest run of at least `min_items`; `summarize_many` answers every request with the offline summarizer (plus
    a paid-looking usage row), after `inside(requests)` has looked at the store; `stop` makes it return None as a
    Stop while OpenAI's batch runs does; `fail` gives those item ids an error instead."""

    def __init__(self, inner, min_items: int = 2, inside=None, stop: threading.Event | None = None, fail=(), store=None):
        self.inner, self.min_items, self.inside, self.stop, self.fail = inner, min_items, inside, stop, set(fail)
        self.store = store  # given: a batch with an OpenAI batch still pending in it always goes through the Batch API
        self.rounds: list[list[int]] = []
        self.for_batches: list[int] = []  # the batch each round was sent for (the real one keys its OpenAI batch on it)

    def wanted(self, batch_id, items, *, cheapest=False, job=False):
        if items and self.store is not None and self.store.pending_openai_batch(batch_id) is not None:
            return True
        return bool(items) and cheapest and items >= self.min_items

    def summarize_many(self, batch_id, requests, *, cancel=None):
        if cancel is not None and cancel.is_set():  # as the real one: stopped before anything was submitted
            return None
        self.rounds.append(sorted(requests))
        self.for_batches.append(batch_id)
        if self.inside is not None:
            self.inside(requests)
        if self.stop is not None:
            self.stop.set()
            return None
        answers = {}
        for item_id, request in requests.items():
            if item_id in self.fail:
                answers[item_id] = ServiceError("OpenAI could not summarize this item; retry the failed items.")
            else:
                answers[item_id] = replace(self.inner.summarize(request), usage=[Usage(kind="llm-batch", model="gpt-4o", input_tokens=50)])
        return answers

    def forget(self, batch_id):
        pass


def test_a_cheapest_run_captions_every_photo_then_sends_one_batch_of_summaries_and_saves_each(tmp_path, settings):
    captioner = Captioner()
    stages = make(settings, captioner)
    seen = {}

    def inside(requests):  # while OpenAI's batch runs: captions done and paid for, items still held by this run
        seen["calls"] = sum(captioner.calls.values())
        seen["items"] = [(i.status, i.lease_owner) for i in stages.store.list_items(batch.id)]
        seen["usage"] = sorted(u.kind for u in stages.store.usage(batch.id))
        seen["captions"] = sorted(r.caption for r in requests.values())

    stages.batch_summarizer = BatchSummaries(stages.summarizer, inside=inside)
    batch = create_batch(stages.store, settings, photos(tmp_path, 3), name="b", created_by="ann")
    counts = []
    progress = run_batch(stages, batch.id, owner="me/1/x", cheapest=True, on_progress=lambda p: counts.append(p.done))
    items = stages.store.list_items(batch.id)
    assert len(stages.batch_summarizer.rounds) == 1 and stages.batch_summarizer.rounds[0] == sorted(i.id for i in items)
    assert seen["calls"] == 3 and seen["captions"] == ["a red shirt"] * 3
    assert seen["items"] == [("pending", "me/1/x")] * 3  # kept (leases renewed) until saved with the summary
    assert seen["usage"] == ["endpoint"] * 3  # the captions' calls are in the ledger before the long wait
    assert (progress.ok, progress.failed, progress.total) == (3, 0, 3) and sorted(counts) == [1, 2, 3]
    assert all(i.status == "ok" and i.caption == "a red shirt" and i.summary and i.lease_owner is None for i in items)
    assert all({"fetch", "normalize", "caption"} <= set(i.stage_ms) for i in items)
    assert sorted(u.kind for u in stages.store.usage(batch.id)) == ["endpoint"] * 3 + ["llm-batch"] * 3


def test_a_cheapest_run_fails_its_bad_rows_and_keeps_the_rest_and_a_stop_while_waiting_leaves_them_pending(tmp_path, settings):
    from pipeline.images.normalize import normalize_image

    paths = photos(tmp_path, 3)
    bad = normalize_image(paths[0].read_bytes()).content_key
    stages = make(settings, Captioner(fail_on={bad}))
    stages.batch_summarizer = BatchSummaries(stages.summarizer)
    batch = create_batch(stages.store, settings, paths, name="b", created_by="ann")
    items = stages.store.list_items(batch.id)
    stages.batch_summarizer.fail = {items[1].id}
    progress = run_batch(stages, batch.id, cheapest=True)
    assert stages.batch_summarizer.rounds == [[items[1].id, items[2].id]]  # the failed caption is not sent
    by_id = {i.id: i for i in stages.store.list_items(batch.id)}
    assert by_id[items[0].id].error == "The captioning endpoint is busy (throttled); try again shortly."
    assert by_id[items[1].id].error == "OpenAI could not summarize this item; retry the failed items."
    assert by_id[items[2].id].status == "ok" and (progress.ok, progress.failed) == (1, 2)

    stop = threading.Event()
    stages = make(Settings(_env_file=None, data_dir=tmp_path / "other", summarizer="offline"), Captioner())
    stages.batch_summarizer = BatchSummaries(stages.summarizer, stop=stop)
    batch = create_batch(stages.store, settings, photos(tmp_path, 2, "s"), name="s", created_by="ann")
    progress = run_batch(stages, batch.id, owner="me/1/x", cheapest=True, cancel=stop)
    assert progress.cancelled and (progress.ok, progress.failed) == (0, 0)
    assert [(i.status, i.lease_owner) for i in stages.store.list_items(batch.id)] == [("pending", None)] * 2  # the next run goes on
    assert sorted(u.kind for u in stages.store.usage(batch.id)) == ["endpoint"] * 2  # what was paid for is kept


def test_only_a_cheapest_run_holding_the_batch_uses_the_batch_api(tmp_path, settings):
    stages = make(settings, Captioner())
    stages.batch_summarizer = BatchSummaries(stages.summarizer)
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    run_batch(stages, batch.id)  # not Cheapest: real-time summaries
    assert stages.batch_summarizer.rounds == []
    joined = create_batch(stages.store, settings, photos(tmp_path, 2, "j"), name="j", created_by="ann")
    run_batch(stages, joined.id, join=True, cheapest=True)  # a helper on a batch another runner holds: real-time
    assert stages.batch_summarizer.rounds == [] and all(i.status == "ok" for i in stages.store.list_items(joined.id))
    own = create_batch(stages.store, settings, photos(tmp_path, 2, "o"), name="o", created_by="ann")
    run_batch(stages, own.id, cheapest=True)
    assert len(stages.batch_summarizer.rounds) == 1 and stages.batch_summarizer.for_batches == [own.id]


def test_a_cheapest_run_stopped_while_captioning_submits_no_openai_batch(tmp_path, settings):
    """Stop pressed before the summaries are sent: nothing is submitted to OpenAI (nothing paid), the captioned items
    stay pending for a later run."""
    gate, stop = threading.Event(), threading.Event()
    captioner = Captioner(gate)
    stages = make(settings, captioner)
    stages.batch_summarizer = BatchSummaries(stages.summarizer)
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    done = {}
    runner = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, concurrency=1, cancel=stop, cheapest=True)),
                              daemon=True)
    runner.start()
    assert captioner.entered.wait(WAIT)
    stop.set()
    gate.set()
    runner.join(WAIT)
    assert stages.batch_summarizer.rounds == [] and done["p"].cancelled
    assert all(i.status == "pending" and i.lease_owner is None for i in stages.store.list_items(batch.id))


def test_a_run_of_a_batch_whose_openai_batch_is_still_pending_waits_for_it_instead_of_paying_again(tmp_path, settings):
    """A server restarted mid-Cheapest-run resumes the batch without being told Cheapest: the OpenAI batch it
    remembered for this batch (and only this one) still decides that the summaries go through the Batch API."""
    from pipeline.models import OpenAIBatchRecord

    stages = make(settings, Captioner())
    stages.batch_summarizer = BatchSummaries(stages.summarizer, store=stages.store)
    other = create_batch(stages.store, settings, photos(tmp_path, 2, "x"), name="x", created_by="ann")
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    stages.store.remember_openai_batch(OpenAIBatchRecord(batch_id=batch.id, openai_batch_id="batch_1", input_file_id="file-1",
                                                         submitted_at=100.0, requests=2))
    run_batch(stages, other.id)
    assert stages.batch_summarizer.rounds == []  # another batch: real-time summaries
    run_batch(stages, batch.id)
    assert stages.batch_summarizer.rounds == [sorted(i.id for i in stages.store.list_items(batch.id))]
    assert [u.kind for u in stages.store.usage(batch.id)].count("llm-batch") == 2


def test_a_cheapest_run_flags_and_reuses_look_alikes_as_a_real_time_run_does(tmp_path, settings):
    paths = look_alike_photos(tmp_path, "p")
    bits = hash_distance(paths)
    captioner = Captioner(answers={name: "x" for name in ("category", "color", "material", "pattern", "style")})
    stages = make(settings, captioner)
    stages.batch_summarizer = BatchSummaries(stages.summarizer, min_items=1)
    first = one_item_batch(stages, settings, paths[0], "first")
    run_batch(stages, first.id, cheapest=True)
    second = one_item_batch(stages, settings, paths[1], "second")
    stages.store.set_reuse_near_duplicates(second.id, True)
    run_batch(stages, second.id, cheapest=True)
    [item] = stages.store.list_items(second.id)
    assert len(stages.batch_summarizer.rounds) == 2 and item.status == "ok"
    assert item.near_duplicate == f"looks like batch {first.id} item 1 ({bits} bits apart)"
    assert item.reused_from == f"caption reused from batch {first.id} item 1" and item.phash
    assert sum(captioner.calls.values()) == 1 and [u.kind for u in stages.store.usage(second.id)] == ["llm-batch"]
    third = one_item_batch(stages, settings, paths[2], "third")  # reuse off: flagged, captioned
    run_batch(stages, third.id, cheapest=True)
    [item] = stages.store.list_items(third.id)
    assert item.near_duplicate and item.reused_from is None and sum(captioner.calls.values()) == 2


def test_items_waiting_for_openai_s_batch_keep_their_leases_renewed(tmp_path, settings):
    now = [7_000_000.0]
    stages = make(settings, Captioner())
    renewed = {}

    def inside(requests):  # hours pass while OpenAI's batch runs: the heartbeat must keep the items this run's
        now[0] += FAST.lease_s  # every lease taken at the start has run out by now
        for _ in range(500):  # the heartbeat looks every 20 ms (poll_s)
            leases = [i.lease_until for i in stages.store.list_items(batch.id)]
            if all(until is not None and until > now[0] for until in leases):
                break
            threading.Event().wait(0.02)
        renewed["leases"] = [(i.lease_owner, i.lease_until) for i in stages.store.list_items(batch.id)]

    stages.batch_summarizer = BatchSummaries(stages.summarizer, inside=inside)
    batch = create_batch(stages.store, settings, photos(tmp_path, 2), name="b", created_by="ann")
    run_batch(stages, batch.id, owner="me/1/x", cheapest=True, clock=lambda: now[0])
    assert all(owner == "me/1/x" and until > now[0] for owner, until in renewed["leases"]), renewed
    assert all(i.status == "ok" for i in stages.store.list_items(batch.id))


# --- from a caption to the saved result ------------------------------------------------------------------------------
class Answering:
    """A paid summarizer's stand-in (offline=False): the offline template's text, plus its own attribute answers."""

    def __init__(self, inner, answers, model="gpt-4o"):
        self.inner, self.answers, self.model, self.name = inner, answers, model, "openai"
        self.requests = []

    def summarize(self, request):
        self.requests.append(request)
        result = self.inner.summarize(request)
        return replace(result, attributes=dict(self.answers), model=self.model, offline=False,
                       summaries={code: f"({code}) {result.summary}" for code in request.languages})


def test_the_summary_is_asked_in_the_batchs_languages_and_each_is_saved(tmp_path, settings):
    stages = make(settings, Captioner())
    stages.summarizer = Answering(stages.summarizer, {})
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    stages.store.set_batch_languages(batch.id, ["de", "fr"])
    run_batch(stages, batch.id)
    [request] = stages.summarizer.requests
    assert request.languages == ("de", "fr")
    [item] = stages.store.list_items(batch.id)
    assert item.status == "ok" and sorted(item.summaries) == ["de", "fr"] and item.summaries["de"].startswith("(de) ")


def test_a_required_attribute_the_captioner_left_empty_keeps_the_summarizers_answer_marked_as_guessed(tmp_path, settings):
    from test_required_attributes import SCHEMA

    captioner = Captioner(answers={"category": "shirt", "color": "red"})  # no sleeve: required for shirts
    stages = make(settings, captioner)
    stages.schema = SCHEMA
    stages.summarizer = Answering(stages.summarizer, {"category": "shirt", "color": "blue", "sleeve": "long"})
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    values = {a.name: (a.value, a.source) for a in item.attributes}
    assert values["sleeve"] == ("long", "summarizer:gpt-4o")  # the paid answer, shown as guessed
    assert values["color"][0] == "red" and values["color"][1] != "summarizer:gpt-4o"  # the captioner's own value stays


def test_a_reused_caption_is_the_earlier_items_as_people_left_it_even_without_its_cache_row(tmp_path, settings):
    all_answers = {name: "x" for name in ("category", "color", "material", "pattern", "style")}
    paths = look_alike_photos(tmp_path, "p")
    captioner = Captioner(answers=all_answers)
    stages = make(settings, captioner)
    first = one_item_batch(stages, settings, paths[0], "first")
    run_batch(stages, first.id)
    [earlier] = stages.store.list_items(first.id)
    stages.store.edit_item(earlier.id, "caption", "a blue linen shirt", "ann")  # a person corrected the caption
    with stages.store._tx() as db:  # the cache row is gone (CAPTION_CACHE off when it ran, or cleared since)
        db.execute("DELETE FROM caption_cache")
    second = one_item_batch(stages, settings, paths[1], "second")
    stages.store.set_reuse_near_duplicates(second.id, True)
    run_batch(stages, second.id)
    [item] = stages.store.list_items(second.id)
    assert item.status == "ok", item.error
    assert item.reused_from and item.caption == "a blue linen shirt" and sum(captioner.calls.values()) == 1
    assert {a.name: a.raw for a in item.attributes} == {a.name: a.raw for a in earlier.attributes}  # from its saved answers

    stages.store.edit_item(earlier.id, "caption", "", "ann")  # cleared: nothing to reuse, the photo is captioned
    third = one_item_batch(stages, settings, paths[1], "third")
    stages.store.set_reuse_near_duplicates(third.id, True)
    with stages.store._tx() as db:  # only the first batch's photo is left to match
        db.execute("UPDATE items SET phash = NULL WHERE batch_id = ?", (second.id,))
    run_batch(stages, third.id)
    [item] = stages.store.list_items(third.id)
    assert item.status == "ok" and item.reused_from is None and item.near_duplicate and sum(captioner.calls.values()) == 2


@pytest.mark.parametrize("cheapest", [False, True], ids=["real-time", "cheapest"])
def test_stop_ends_a_download_in_progress_and_the_item_is_released_not_abandoned(tmp_path, cheapest):
    from support.servers import DripServer

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline", allow_private_urls=True, fetch_deadline_s=60)
    stages = make(settings, Captioner(), replace(FAST, stop_grace_s=WAIT))  # Stop must end the download, not outwait it
    stages.batch_summarizer = BatchSummaries(stages.summarizer)
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(seed=4))
    with DripServer(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n", max_s=WAIT) as origin:
        (tmp_path / "list.csv").write_text(f"sku,image\nS1,{origin.url}/photo.jpg\nS2,p.jpg\n")
        batch = create_batch(stages.store, settings, [tmp_path / "list.csv", tmp_path / "p.jpg"], name="b", created_by="ann")
        stop, done = threading.Event(), {}
        runner = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, owner="me/1/x", cancel=stop, cheapest=cheapest)),
                                  daemon=True)
        runner.start()
        while origin.connections == 0 and runner.is_alive():  # the download has started
            runner.join(0.02)
        stop.set()
        runner.join(WAIT)
        assert not runner.is_alive()
    downloading = next(i for i in stages.store.list_items(batch.id) if i.sku == "S1")
    assert (downloading.status, downloading.error, downloading.lease_owner) == ("pending", None, None)  # a later run picks it up
    assert done["p"].cancelled and done["p"].failed == 0


def test_an_s3_photo_is_read_with_the_stages_s3_client(tmp_path):
    import boto3
    from moto import mock_aws

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline", s3_allowed_buckets=["catalogue"])

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="catalogue")
        client.put_object(Bucket="catalogue", Key="shirts/red.jpg", Body=jpeg_bytes(seed=8))
        made = []
        stages = make(settings, Captioner())
        stages.s3_client_factory = lambda: made.append(1) or client
        (tmp_path / "list.csv").write_text("sku,image\nS1,s3://catalogue/shirts/red.jpg\n")
        batch = create_batch(stages.store, settings, [tmp_path / "list.csv"], name="b", created_by="ann")
        run_batch(stages, batch.id)
    [item] = stages.store.list_items(batch.id)
    assert item.status == "ok", item.error
    assert made  # through the configured client (region, endpoint and retries of S3 settings), not a default one


class SteppedClock:
    """An injected clock that stands still until the test moves it; counts the looks of each kind of thread
    (`tagger_`: workers waiting on their item, `tagger-heartbeat`: the lease heartbeat) since the last move."""

    def __init__(self, now: float) -> None:
        self.now, self._lock, self.looks = now, threading.Lock(), {}

    def __call__(self) -> float:
        name = threading.current_thread().name
        kind = "heartbeat" if name.startswith("tagger-heartbeat") else "worker" if name.startswith("tagger_") else "other"
        with self._lock:
            self.looks[kind] = self.looks.get(kind, 0) + 1
            return self.now

    def move_to(self, now: float) -> None:
        with self._lock:
            self.now, self.looks = now, {}

    def wait_for_looks(self, kind: str, count: int = 2, timeout_s: float = 10.0) -> bool:
        """True once `kind` threads looked `count` times since the last move (a thread that gave up never looks again)."""
        for _ in range(int(timeout_s / 0.01)):
            with self._lock:
                if self.looks.get(kind, 0) >= count:
                    return True
            threading.Event().wait(0.01)
        return False


def test_after_stop_an_item_already_in_a_paid_call_is_waited_for_within_the_grace(tmp_path, settings):
    """Stop: what is already being paid for is still saved, if it answers within STOP_GRACE_S."""
    gate, stop = threading.Event(), threading.Event()
    clock = SteppedClock(9_000_000.0)  # time stands still: the grace never runs out
    captioner = Captioner(gate)
    stages = make(settings, captioner, replace(FAST, stop_grace_s=30.0))
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    done = {}
    runner = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, cancel=stop, clock=clock)), daemon=True)
    runner.start()
    assert captioner.entered.wait(WAIT)
    stop.set()
    clock.move_to(clock.now)  # count the looks from the Stop on
    assert clock.wait_for_looks("worker", 2)  # the worker has seen the Stop and, within the grace, kept waiting
    gate.set()  # the endpoint answers
    runner.join(WAIT)
    assert not runner.is_alive()
    [item] = stages.store.list_items(batch.id)
    assert item.status == "ok" and done["p"].ok == 1 and done["p"].cancelled


def test_the_batch_lease_is_renewed_once_a_third_of_it_has_passed(tmp_path, settings):
    start = 8_000_000.0
    clock, gate = SteppedClock(start), threading.Event()
    captioner = Captioner(gate)
    stages = make(settings, captioner)  # lease 120 s: renewed from 40 s on
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    runner = threading.Thread(target=lambda: run_batch(stages, batch.id, owner="me/1/x", clock=clock), daemon=True)
    runner.start()
    assert captioner.entered.wait(WAIT)
    assert stages.store.get_batch(batch.id).run.lease_until == start + 120
    clock.move_to(start + 30)  # a quarter: not yet
    assert clock.wait_for_looks("heartbeat", 3)
    assert stages.store.get_batch(batch.id).run.lease_until == start + 120
    clock.move_to(start + 40)  # exactly a third
    assert clock.wait_for_looks("heartbeat", 3)
    renewed = stages.store.get_batch(batch.id).run.lease_until
    clock.move_to(start + 79)  # the next renewal is a third of the lease after this one, not before
    assert clock.wait_for_looks("heartbeat", 3)
    not_yet = stages.store.get_batch(batch.id).run.lease_until
    clock.move_to(start + 80)
    assert clock.wait_for_looks("heartbeat", 3)
    again = stages.store.get_batch(batch.id).run.lease_until
    gate.set()
    runner.join(WAIT)
    assert (renewed, not_yet, again) == (start + 40 + 120, start + 40 + 120, start + 80 + 120)


def test_a_failed_renewal_is_tried_again_at_the_next_beat(tmp_path, settings):
    """The store fails once when the renewal is due (a throttled write): the heartbeat goes on and renews at its next
    look, well inside the lease's slack."""
    start = 8_100_000.0
    clock, gate, failures = SteppedClock(start), threading.Event(), []

    class Throttled(SqliteStore):
        def heartbeat_batch(self, *args, **kwargs):
            if not failures:
                failures.append(kwargs["now"])
                raise ServiceError("The database is busy (writes throttled); try again shortly.")
            return super().heartbeat_batch(*args, **kwargs)

    captioner = Captioner(gate)
    stages = make(settings, captioner, store=Throttled(settings.data_dir / "t.sqlite3"))
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    runner = threading.Thread(target=lambda: run_batch(stages, batch.id, owner="me/1/x", clock=clock), daemon=True)
    runner.start()
    assert captioner.entered.wait(WAIT)
    clock.move_to(start + 40)
    assert clock.wait_for_looks("heartbeat", 3)
    lease_until = stages.store.get_batch(batch.id).run.lease_until
    gate.set()
    runner.join(WAIT)
    assert failures == [start + 40] and lease_until == start + 40 + 120


def test_an_item_whose_save_is_under_way_at_its_deadline_is_waited_for_and_counted(tmp_path, settings):
    start = 8_500_000.0
    clock, saving, release = SteppedClock(start), threading.Event(), threading.Event()
    stages = make(settings, Captioner(), replace(FAST, item_deadline_s=100.0))
    save = stages.store.save_result

    def slow_save(*args, **kwargs):  # the result is being written when the deadline comes
        saving.set()
        assert release.wait(WAIT)
        return save(*args, **kwargs)

    stages.store.save_result = slow_save
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    done = {}
    runner = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, clock=clock)), daemon=True)
    runner.start()
    assert saving.wait(WAIT)
    clock.move_to(start + 100)  # the deadline: the item is saving, so it is not failed, and the worker keeps waiting
    assert clock.wait_for_looks("worker", 2)
    release.set()
    runner.join(WAIT)
    [item] = stages.store.list_items(batch.id)
    assert item.status == "ok" and (done["p"].ok, done["p"].failed, done["p"].timed_out) == (1, 0, 0)


def test_a_run_whose_batch_was_taken_over_stops_between_renewals(tmp_path, settings):
    start = 8_800_000.0
    clock, gate = SteppedClock(start), threading.Event()
    captioner = Captioner(gate)
    stages = make(settings, captioner)
    batch = create_batch(stages.store, settings, photos(tmp_path, 3), name="b", created_by="ann")
    done = {}
    runner = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, owner="me/1/x", concurrency=1, clock=clock)),
                              daemon=True)
    runner.start()
    try:
        assert captioner.entered.wait(WAIT)
        # this run's host clock is behind: another task, at a time past our lease, took the batch over
        assert stages.store.claim_batch(batch.id, "other/2/y", 120, now=start + 500).owner == "other/2/y"
        runner.join(10)  # the heartbeat sees it at its next look (20 ms), long before a renewal is due
        stopped = not runner.is_alive()
    finally:
        gate.set()
        runner.join(WAIT)
    assert stopped and done["p"].cancelled and done["p"].ok < 3
    assert stages.store.get_batch(batch.id).run.owner == "other/2/y"  # left to the runner that holds it now


@pytest.mark.parametrize("caption_fails", [False, True], ids=["answer", "error"])
def test_a_run_that_lost_an_items_lease_leaves_it_to_the_new_holder_and_still_records_the_paid_call(tmp_path, settings, caption_fails):
    """While the endpoint answers, another task (its clock past our lease) takes the item over: our answer or our
    error is not written over the new holder's item, but an endpoint call we paid for stays in the ledger."""
    from pipeline.images.normalize import normalize_image

    start = 8_900_000.0
    clock, gate = SteppedClock(start), threading.Event()
    [path] = photos(tmp_path, 1)
    captioner = Captioner(gate, fail_on={normalize_image(path.read_bytes()).content_key} if caption_fails else set())
    stages = make(settings, captioner)
    batch = create_batch(stages.store, settings, [path], name="b", created_by="ann")
    done = {}
    runner = threading.Thread(target=lambda: done.update(p=run_batch(stages, batch.id, owner="me/1/x", clock=clock)), daemon=True)
    runner.start()
    try:
        assert captioner.entered.wait(WAIT)
        [held] = stages.store.list_items(batch.id)
        assert held.lease_owner == "me/1/x"
        assert stages.store.claim_item(held.id, "other/2/y", 120, version=held.version, now=start + 500)
    finally:
        gate.set()
        runner.join(WAIT)
    [item] = stages.store.list_items(batch.id)
    assert (item.status, item.error, item.error_kind, item.lease_owner) == ("pending", None, None, "other/2/y")
    paid = [] if caption_fails else [("endpoint", 1)]  # a throttled call is not billed (the stand-in returns no usage)
    assert [(u.kind, u.invocations) for u in stages.store.usage(batch.id)] == paid


def test_a_failed_item_keeps_why_it_failed_as_a_short_code(tmp_path, settings):
    """error_kind (the Health page's failure reasons): the failing stage's code, or the item's when the failure
    came from outside any stage (here: reading the earlier look-alike whose caption would be reused)."""
    from pipeline.images.normalize import normalize_image

    paths = photos(tmp_path, 2)
    busy = normalize_image(paths[0].read_bytes()).content_key
    stages = make(settings, Captioner(fail_on={busy}))
    batch = create_batch(stages.store, settings, paths, name="b", created_by="ann")
    run_batch(stages, batch.id)
    kinds = {i.source: (i.status, i.error_kind) for i in stages.store.list_items(batch.id)}
    assert kinds == {"p0.jpg": ("error", "caption_failed"), "p1.jpg": ("ok", None)}

    class Unreachable(SqliteStore):
        def get_item(self, item_id):
            raise RuntimeError("the database is unreachable")

    stages = make(settings, Captioner(), store=Unreachable(settings.data_dir / "u.sqlite3"))
    _, _, item = run_look_alike_after_first(stages, settings, look_alike_photos(tmp_path, "l"))
    assert (item.status, item.error_kind) == ("error", "item_unexpected")


def test_a_cheapest_runs_items_are_timed_logged_and_counted_as_a_real_time_runs_are(tmp_path, settings, caplog):
    from pipeline.images.normalize import normalize_image

    paths = photos(tmp_path, 3)
    bad = normalize_image(paths[2].read_bytes()).content_key
    every_answer = {name: "x" for name in ("category", "color", "material", "pattern", "style")}
    stages = make(settings, Captioner(fail_on={bad}, answers=every_answer))
    stages.batch_summarizer = BatchSummaries(stages.summarizer)
    first = create_batch(stages.store, settings, paths, name="a", created_by="ann")
    run_batch(stages, first.id, cheapest=True)
    summarized = [i for i in stages.store.list_items(first.id) if i.status == "ok"]
    # the failed caption was saved first: every summarized item stores the run's previous save time
    assert len(summarized) == 2 and all("save" in i.stage_ms for i in summarized), [i.stage_ms for i in summarized]
    assert all(i.image_path == str(stages.images.path_for(i.content_key)) for i in summarized)  # Review shows the photo

    again = create_batch(stages.store, settings, paths[:2], name="b", created_by="ann")  # the same photos: cached
    with caplog.at_level(logging.INFO, logger="pipeline.items"), collected_metrics() as observed:
        run_batch(stages, again.id, cheapest=True)
    ids = sorted(i.id for i in stages.store.list_items(again.id))
    assert caption_events(caplog) == [(ids[0], True), (ids[1], True)]
    assert (counted(observed, "CaptionCacheHits"), counted(observed, "CaptionCacheMisses")) == (2, 0)
    items = [r for r in caplog.records if getattr(r, "stage", None) == "item"]
    assert len(items) == 2 and all({"fetch", "normalize", "caption", "save"} <= set(r.stage_ms) for r in items)  # one trace, start to save


def test_look_alikes_in_one_batch_are_flagged_naming_the_batch_and_item(tmp_path, settings):
    paths = look_alike_photos(tmp_path, "p")
    stages = make(settings, Captioner())
    batch = create_batch(stages.store, settings, paths[:2], name="b", created_by="ann")
    run_batch(stages, batch.id, concurrency=2)
    items = stages.store.list_items(batch.id)
    flagged = [i for i in items if i.near_duplicate]
    assert len(flagged) == 1  # whichever came second names the first
    other = next(i for i in items if i is not flagged[0])
    assert flagged[0].near_duplicate == f"looks like batch {batch.id} item {other.seq + 1} ({hash_distance(paths)} bits apart)"


def test_an_items_stage_threads_are_named_daemons_so_a_hung_call_never_holds_the_process(tmp_path, settings):
    gate = threading.Event()
    captioner = Captioner(gate)
    stages = make(settings, captioner)
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    # not a daemon itself, as the CLI's main thread is not (a thread inherits that unless told)
    runner = threading.Thread(target=lambda: run_batch(stages, batch.id), daemon=False)
    runner.start()
    try:
        assert captioner.entered.wait(WAIT)
        stage_threads = [t for t in threading.enumerate() if t.name == f"tagger-stage-{batch.id}-1"]  # named for thread dumps
        heartbeats = [t for t in threading.enumerate() if t.name == f"tagger-heartbeat-{batch.id}"]
    finally:
        gate.set()
        runner.join(WAIT)
    assert len(stage_threads) == 1 and stage_threads[0].daemon
    assert len(heartbeats) == 1 and heartbeats[0].daemon  # the lease heartbeat too


def test_stage_threads_are_reused_when_idle_and_a_new_one_starts_only_when_none_is():
    """A model's per-thread state (an OpenMP team) is set up once per thread: idle threads take the next item,
    and a new thread starts only when every one is busy (a hung item keeps its own)."""
    from pipeline.batches.runner import _StageThreads

    threads = _StageThreads("rules-stage")

    def idle_count(expected: int) -> bool:
        for _ in range(1000):
            with threads._lock:
                if threads._idle == expected:
                    return True
            threading.Event().wait(0.01)
        return False

    def together(count: int):
        meet = threading.Barrier(count, timeout=10)  # every task in flight at once: each needs its own thread
        names: list[str] = []
        for _ in range(count):
            threads.submit(lambda: (meet.wait(), names.append(threading.current_thread().name)))
        return meet, names

    try:
        meet, names = together(1)
        assert idle_count(1)
        meet, names = together(2)  # one idle thread reused, one new
        assert idle_count(2) and not meet.broken
        meet, names = together(3)  # two reused, one new
        assert idle_count(3) and not meet.broken
        assert sorted(names) == ["rules-stage-1", "rules-stage-2", "rules-stage-3"]
    finally:
        threads.close()


def test_the_batch_run_ended_event_carries_the_runs_duration_and_a_stopped_runs_outcome(tmp_path, settings, caplog):
    import time

    gate, times = threading.Event(), {}

    class Timed(Captioner):
        def caption(self, image, questions):
            times["entered"] = time.perf_counter()
            return super().caption(image, questions)

    captioner = Timed(gate)
    stages = make(settings, captioner)
    batch = create_batch(stages.store, settings, photos(tmp_path, 1), name="b", created_by="ann")
    released = threading.Thread(target=lambda: (captioner.entered.wait(WAIT), threading.Event().wait(0.05),
                                                times.update(released=time.perf_counter()), gate.set()), daemon=True)
    released.start()
    with caplog.at_level(logging.INFO, logger="pipeline.batches"):
        before = time.perf_counter()
        run_batch(stages, batch.id)
        after = time.perf_counter()
    [event] = [r for r in caplog.records if r.getMessage() == "batch run ended"]
    # within the call, and at least as long as the caption was held: whatever the machine's speed
    assert (times["released"] - times["entered"]) * 1000 <= event.duration_ms <= (after - before) * 1000 + 0.1
    assert isinstance(event.duration_ms, float) and event.duration_ms == round(event.duration_ms, 1)  # ms to 0.1, as stage events

    caplog.clear()
    stop = threading.Event()
    stop.set()
    stopped = create_batch(stages.store, settings, photos(tmp_path, 1, "s"), name="s", created_by="ann")
    with caplog.at_level(logging.INFO, logger="pipeline.batches"):
        run_batch(stages, stopped.id, cancel=stop)
    [event] = [r for r in caplog.records if r.getMessage() == "batch run ended"]
    assert event.outcome == "cancelled"


def test_closing_stage_threads_ends_the_idle_ones_before_returning():
    """At exit a thread that ran the model must not still be ending (torch aborts the process)."""
    from pipeline.batches.runner import _StageThreads

    threads = _StageThreads("closing-stage")
    done = threading.Event()
    threads.submit(done.set)
    assert done.wait(WAIT)
    started = list(threads._started)
    threads.close()
    assert started and not any(thread.is_alive() for thread in started)
