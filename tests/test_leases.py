"""Leases, stop requests, per-item deadlines and versioned edits through the runner, the worker and
the review helpers, on both stores. No test waits on wall-clock speed: gates are Events, clocks are
injected, and runners poll every 20 ms only so that they notice a set Event quickly."""

from __future__ import annotations

import threading
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from pipeline.batches.review import save_changes
from pipeline.batches.runner import LeaseOptions, run_batch
from pipeline.service import build_stages, create_batch
from pipeline.settings import Settings
from pipeline.store import BatchBusyError, StaleEditError
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore
from pipeline.batches.worker import BatchWorker
from support.captioners import CountingCaptioner
from support.images import jpeg_bytes

FAST = LeaseOptions(lease_s=120.0, item_deadline_s=600.0, stop_grace_s=0.0, poll_s=0.02)
WAIT = 60  # generous upper bound for Events; passing tests never wait this long


def dynamo_store(table: str) -> DynamoStore:
    store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), table)
    store.create_table()
    return store


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "store.sqlite3")
        return
    with mock_aws():
        yield dynamo_store("leases-test")


@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline", caption_cache=False)


def make(store, settings, captioner, leases=FAST):
    return replace(build_stages(settings, store=store, captioner=captioner), leases=leases)


def new_batch(stages, settings, tmp_path, count: int, name: str = "b"):
    folder = tmp_path / name
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"p{index}.jpg"
        path.write_bytes(jpeg_bytes(seed=index + 100 * len(name), color=(20 * index % 255, 90, 160)))
        paths.append(path)
    return create_batch(stages.store, settings, paths, name=name, created_by="ann")


def run_in_thread(*args, **kwargs):
    outcome: dict = {}

    def target():
        try:
            outcome["progress"] = run_batch(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_two_runners_on_one_batch_process_every_item_exactly_once(store, settings, tmp_path):
    captioner = CountingCaptioner()
    stages = make(store, settings, captioner)
    batch = new_batch(stages, settings, tmp_path, 12)
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def runner(name: str, join: bool) -> None:
        start.wait(WAIT)
        results[name] = run_batch(stages, batch.id, concurrency=3, owner=f"host-{name}/1/{name}", join=join)

    threads = [threading.Thread(target=runner, args=("a", False)), threading.Thread(target=runner, args=("b", True))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    items = store.list_items(batch.id)
    assert [i.status for i in items] == ["ok"] * 12
    assert sum(captioner.calls.values()) == 12 and set(captioner.calls.values()) == {1}  # no photo captioned twice
    assert len(store.usage(batch.id)) == 12  # one usage row per paid call
    assert results["a"].ok + results["b"].ok == 12
    assert all(i.lease_owner is None for i in items) and store.get_batch(batch.id).run is None  # everything released


def test_resume_on_a_running_batch_is_refused_with_where_and_since(store, settings, tmp_path):
    gate = threading.Event()
    captioner = CountingCaptioner(gate)
    stages = make(store, settings, captioner)
    batch = new_batch(stages, settings, tmp_path, 2)
    thread, outcome = run_in_thread(stages, batch.id, concurrency=1, owner="task-a/7/abc")
    assert captioner.entered.wait(WAIT)
    with pytest.raises(BatchBusyError, match=r"already running on task-a since \d{4}-\d\d-\d\d .*not starting a second run"):
        run_batch(stages, batch.id, concurrency=1, owner="cli/8/def")
    worker = BatchWorker(stages, concurrency=1)  # another process's dashboard worker over the same store
    view = worker.view(batch.id)
    assert view.state == "running" and view.where.startswith("running on task-a since ")
    with pytest.raises(BatchBusyError):
        worker.submit(batch.id)  # the Tag page's Resume
    from pipeline.cli import refuse_if_running

    with pytest.raises(BatchBusyError):
        refuse_if_running(store, batch.id)  # `tag --resume`
    gate.set()
    thread.join(WAIT)
    assert outcome["progress"].ok == 2 and sum(captioner.calls.values()) == 2
    assert worker.view(batch.id).state == "finished"


def test_stop_on_batch_a_stops_a_and_leaves_batch_b_running(store, settings, tmp_path):
    gate_a, gate_b = threading.Event(), threading.Event()
    captioner_a, captioner_b = CountingCaptioner(gate_a), CountingCaptioner(gate_b)
    stages_a, stages_b = make(store, settings, captioner_a), make(store, settings, captioner_b)
    batch_a = new_batch(stages_a, settings, tmp_path, 4, "a")
    batch_b = new_batch(stages_b, settings, tmp_path, 3, "bb")
    thread_a, outcome_a = run_in_thread(stages_a, batch_a.id, concurrency=1, owner="task-1/1/a")
    thread_b, outcome_b = run_in_thread(stages_b, batch_b.id, concurrency=1, owner="task-2/2/b")
    assert captioner_a.entered.wait(WAIT) and captioner_b.entered.wait(WAIT)
    # Pressed on another task: only the stop request in the store reaches runner A.
    BatchWorker(stages_a, concurrency=1).stop(batch_a.id, "bob")
    thread_a.join(WAIT)
    assert not thread_a.is_alive(), "Stop did not free runner A while its photo was still in the captioner"
    assert outcome_a["progress"].cancelled and outcome_a["progress"].stopped_by == "bob"
    assert sum(captioner_a.calls.values()) == 1  # queued photos never reached the paid call
    assert thread_b.is_alive() and store.get_batch(batch_b.id).run.owner == "task-2/2/b"
    gate_b.set()
    thread_b.join(WAIT)
    assert outcome_b["progress"].ok == 3 and not outcome_b["progress"].cancelled
    assert len(store.items_to_process(batch_a.id)) == 4  # nothing finished, nothing lost
    gate_a.set()  # the abandoned call returns late: it still saves, since nobody took the item over
    for _ in range(WAIT * 50):
        if len(store.items_to_process(batch_a.id)) == 3:
            break
        threading.Event().wait(0.02)
    assert len(store.items_to_process(batch_a.id)) == 3 and len(store.usage(batch_a.id)) == 1


def test_a_crashed_runners_batch_and_items_are_taken_over_after_the_lease(store, settings, tmp_path):
    now = [1_000_000.0]
    captioner = CountingCaptioner()
    stages = make(store, settings, captioner)
    batch = new_batch(stages, settings, tmp_path, 3)
    first = store.list_items(batch.id)[0]
    # A runner on another task claimed the batch and one item, then died without a word.
    store.claim_batch(batch.id, "gone-task/1/x", 120, now=now[0])
    assert store.claim_item(first.id, "gone-task/1/x", 120, version=first.version, now=now[0])
    now[0] += 60
    with pytest.raises(BatchBusyError):
        run_batch(stages, batch.id, owner="new-task/2/y", clock=lambda: now[0])
    helper = run_batch(stages, batch.id, owner="helper/3/z", clock=lambda: now[0], join=True)
    assert (helper.ok, helper.skipped) == (2, 1)  # the dead runner's item is still leased
    now[0] += 61  # its leases have ended
    progress = run_batch(stages, batch.id, owner="new-task/2/y", clock=lambda: now[0])
    assert progress.ok == 1
    assert [i.status for i in store.list_items(batch.id)] == ["ok"] * 3 and sum(captioner.calls.values()) == 3
    # The dead runner, were it to come back, can no longer complete its item.
    assert store.save_error(first.id, "late", [], owner="gone-task/1/x") is False


def test_an_item_past_its_deadline_fails_with_a_plain_message_and_is_not_waited_for(store, settings, tmp_path):
    now = [2_000_000.0]
    gate = threading.Event()
    captioner = CountingCaptioner(gate)
    stages = make(store, settings, captioner, replace(FAST, item_deadline_s=90))
    batch = new_batch(stages, settings, tmp_path, 1)
    thread, outcome = run_in_thread(stages, batch.id, concurrency=1, clock=lambda: now[0])
    assert captioner.entered.wait(WAIT)
    now[0] += 91
    thread.join(WAIT)
    assert not thread.is_alive() and not gate.is_set()  # the runner returned while the call still hangs
    progress = outcome["progress"]
    assert (progress.failed, progress.timed_out) == (1, 1)
    [item] = store.list_items(batch.id)
    assert item.status == "error" and "took longer than 90 s" in item.error and "Retry" in item.error
    gate.set()  # the late answer is paid for: the ledger shows it, the item stays failed
    for _ in range(WAIT * 50):
        if store.usage(batch.id):
            break
        threading.Event().wait(0.02)
    assert len(store.usage(batch.id)) == 1 and store.list_items(batch.id)[0].status == "error"


def test_review_save_of_an_item_changed_since_is_refused_with_who_when_and_the_value_kept(store, settings, tmp_path):
    stages = make(store, settings, CountingCaptioner())
    batch = new_batch(stages, settings, tmp_path, 1)
    run_batch(stages, batch.id)
    [item] = store.list_items(batch.id)
    shown_to_ann = {item.id: item.version}
    shown_to_bob = {item.id: item.version}
    assert save_changes(store, {item.id: {"Summary": "Bob's text.", "Tags": "a, b"}}, stages.schema, "bob", shown_to_bob).ok
    report = save_changes(store, {item.id: {"Summary": "Ann's text."}}, stages.schema, "ann", shown_to_ann)
    assert not report.saved and len(report.refused) == 1
    assert "changed by bob at 20" in report.refused[0] and "Ann's text." in report.refused[0]
    assert store.get_item(item.id).summary == "Bob's text."
    # Saving again, knowingly, replaces Bob's change; both are in the history.
    assert save_changes(store, {item.id: {"Summary": "Ann's text."}}, stages.schema, "ann", shown_to_ann).ok
    assert [(e.who, e.new) for e in store.edits(item.id) if e.field == "summary"] == [("bob", "Bob's text."), ("ann", "Ann's text.")]
    with pytest.raises(StaleEditError):
        store.edit_item(item.id, "caption", "x", "carl", expected_version=item.version)


def test_a_save_refused_for_one_field_writes_no_other_field_of_that_item_blind(store, settings, tmp_path):
    """Bob changed the tags; Ann's save (summary, then tags, from the older view) is refused for the summary and must
    not then write her tags over Bob's because the first refusal moved her version on. Saving again is knowing."""
    stages = make(store, settings, CountingCaptioner())
    batch = new_batch(stages, settings, tmp_path, 1)
    run_batch(stages, batch.id)
    [item] = store.list_items(batch.id)
    shown_to_ann = {item.id: item.version}
    assert save_changes(store, {item.id: {"Tags": "bob, tags"}}, stages.schema, "bob", {item.id: item.version}).ok
    report = save_changes(store, {item.id: {"Summary": "Ann's text.", "Tags": "ann, tags"}}, stages.schema, "ann", shown_to_ann)
    assert not report.saved and len(report.refused) == 2
    assert [k["Field"] for k in report.kept] == ["Summary", "Tags"]
    assert store.get_item(item.id).tags == ["bob", "tags"] and store.get_item(item.id).summary != "Ann's text."
    assert save_changes(store, {item.id: {"Summary": "Ann's text.", "Tags": "ann, tags"}}, stages.schema, "ann", shown_to_ann).ok
    assert store.get_item(item.id).tags == ["ann", "tags"] and store.get_item(item.id).summary == "Ann's text."
