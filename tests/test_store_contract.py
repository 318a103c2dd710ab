"""One contract, two stores: SqliteStore (file) and DynamoStore (moto) answer the same assertions."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timezone

import boto3
import pytest
from moto import mock_aws

from pipeline.errors import BadInputError
from pipeline.models import (
    AsyncInvocation,
    AttributeValue,
    CaptionResult,
    IngestReport,
    ItemResult,
    PhotoChecks,
    SourceItem,
    SourceRef,
    SummaryResult,
    TransformJobRecord,
    Usage,
)
from pipeline.store import StaleEditError
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore


def report(count: int, *, bad: int = 0) -> IngestReport:
    items = [SourceItem(source=f"p{i}.jpg", ref=SourceRef("file", f"/photos/p{i}.jpg"), sku=f"SKU-{i}", hints={"brand": "Acme"})
             for i in range(count)]
    items += [SourceItem(source=f"bad{i}.txt", ref=None, error="Not an image file.") for i in range(bad)]
    return IngestReport(items=items, notices=["1 file skipped"])


def checks() -> PhotoChecks:
    return PhotoChecks(width=400, height=300, too_small=False, blur_score=120.5, blurry=False, brightness=130.0,
                       too_dark=False, too_bright=False, plain_background=True, white_background=True, dominant_colors=["red"])


def result(key: str, *, cached: bool = False) -> ItemResult:
    return ItemResult(
        content_key=key, image_path=f"/images/{key}.jpg",
        caption=CaptionResult(caption="a red shoe", answers={"color": "red"}, model_id="blip", cached=cached),
        attributes=[AttributeValue(name="color", raw="red", value="red", in_vocab=True)],
        summary=SummaryResult(summary="A red shoe.", title="Red shoe", tags=["shoe", "red"], attributes={"color": "red"},
                              model="offline", offline=True),
        checks=checks(), word_count=3,
    )


def test_batches_and_items_round_trip(store):
    first = store.create_batch("first", "ann", report(3, bad=1))
    second = store.create_batch("second", "bob", report(2))
    assert (first.name, first.created_by, first.notices) == ("first", "ann", ["1 file skipped"])
    assert (first.total, first.done, first.failed) == (4, 1, 1)  # the unreadable row is done-and-failed from the start
    assert [b.id for b in store.list_batches()] == [second.id, first.id]  # newest first
    items = store.list_items(first.id)
    assert [i.seq for i in items] == [0, 1, 2, 3]
    assert items[0].ref == SourceRef("file", "/photos/p0.jpg") and items[0].sku == "SKU-0" and items[0].hints == {"brand": "Acme"}
    assert items[3].status == "error" and items[3].error == "Not an image file." and items[3].ref is None
    assert store.get_item(items[1].id) == items[1]
    assert store.get_item(store.list_items(second.id)[1].id).batch_id == second.id
    assert store.get_item(10_000) is None and store.get_batch(10_000) is None


def test_results_errors_and_counters(store):
    batch = store.create_batch("b", "ann", report(3))
    a, b, c = store.list_items(batch.id)
    store.save_result(a.id, result("k1"), [Usage(kind="endpoint", model="blip", latency_ms=12.5)])
    store.save_error(b.id, "The photo is blurry beyond use.", [Usage(kind="endpoint", model="blip")])
    saved = store.get_item(a.id)
    assert (saved.status, saved.caption, saved.summary, saved.tags, saved.word_count) == ("ok", "a red shoe", "A red shoe.", ["shoe", "red"], 3)
    assert saved.attributes[0].value == "red" and saved.checks == checks() and saved.summary_offline
    assert store.get_item(b.id).error == "The photo is blurry beyond use."
    assert (store.get_batch(batch.id).done, store.get_batch(batch.id).failed) == (2, 1)
    assert [i.id for i in store.items_to_process(batch.id)] == [c.id]
    assert [i.id for i in store.items_to_process(batch.id, retry_failed=True)] == [b.id, c.id]
    # A retried item that now succeeds moves from failed to ok without counting twice.
    store.save_result(b.id, result("k2"), [])
    store.save_result(b.id, result("k2"), [])
    assert (store.get_batch(batch.id).done, store.get_batch(batch.id).failed) == (2, 0)
    assert store.cached_caption("k1", "blip").caption == "a red shoe"
    assert store.cached_caption("k1", "other-model") is None


def test_edits_keep_history_and_refuse_bad_values(store):
    batch = store.create_batch("b", "ann", report(1))
    item = store.list_items(batch.id)[0]
    store.save_result(item.id, result("k1"), [])
    assert store.edit_item(item.id, "summary", "A bright red running shoe.", "ann").old == "A red shoe."
    assert store.edit_item(item.id, "summary", "A bright red running shoe.", "bob") is None  # no change, no history
    store.edit_item(item.id, "tags", "shoe, running ,", "bob")
    store.edit_item(item.id, "attribute:color", "crimson", "bob")
    with pytest.raises(BadInputError):
        store.edit_item(item.id, "summary", "word " * 51, "ann")
    with pytest.raises(ValueError):
        store.edit_item(item.id, "status", "ok", "ann")
    now = store.get_item(item.id)
    assert (now.summary, now.word_count, now.tags, now.attribute("color").value) == ("A bright red running shoe.", 5, ["shoe", "running"], "crimson")
    history = store.edits(item.id)
    assert [(e.field, e.who) for e in history] == [("summary", "ann"), ("tags", "bob"), ("attribute:color", "bob")]
    assert history[1].old == "shoe, red" and history[1].new == "shoe, running"


def test_usage_ledger(store):
    batch = store.create_batch("b", "ann", report(2))
    a, b = store.list_items(batch.id)
    assert store.last_usage_at("endpoint") is None
    before = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    store.save_result(a.id, result("k1"), [Usage(kind="endpoint", model="blip", latency_ms=40.25),
                                           Usage(kind="llm", model="gpt-4o", input_tokens=700, output_tokens=150)])
    store.record_usage(b.id, [Usage(kind="llm", model="gpt-4o", input_tokens=10, output_tokens=5)])
    after = datetime.now(timezone.utc).isoformat()
    used = store.usage(batch.id)
    assert sorted((u.kind, u.input_tokens, u.latency_ms) for u in used) == [("endpoint", 0, 40.25), ("llm", 10, 0.0), ("llm", 700, 0.0)]
    assert len(store.usage()) == 3
    rows = store.usage_rows(since="2000-01-01T00:00:00+00:00")
    assert len(rows) == 3 and all(before <= at <= after for at, _ in rows)  # stamped with the time of recording (UTC)
    assert store.usage_rows(since=before) == rows and store.usage_rows(since=after) == []
    assert store.usage_rows(since="2999-01-01T00:00:00+00:00") == []
    assert store.last_usage_at("endpoint") is not None and store.last_usage_at("local") is None


def test_audit_log_newest_first(store):
    store.add_audit("ann", "start", "ok", "ml.g4dn.xlarge")
    store.add_audit("bob", "stop", "refused", "not an admin")
    log = store.audit_log()
    assert [(e.who, e.action, e.result) for e in log] == [("bob", "stop", "refused"), ("ann", "start", "ok")]
    assert len(store.audit_log(limit=1)) == 1


def test_resume_lists_unfinished_batches(store):
    done = store.create_batch("done", "ann", report(1))
    open_ = store.create_batch("open", "ann", report(2))
    store.save_result(store.list_items(done.id)[0].id, result("k"), [])
    store.save_result(store.list_items(open_.id)[0].id, result("k"), [])
    assert store.unfinished_batch_ids() == [open_.id]
    assert [i.seq for i in store.items_to_process(open_.id)] == [1]


def test_async_invocation_journal(store):
    invocation = AsyncInvocation(content_key="k1", model_id="sagemaker-async:ep", inference_id="i-1",
                                 output_location="s3://b/out/1.out", failure_location="s3://b/fail/1-error.out",
                                 invoked_at="2026-11-21T10:00:00+00:00")
    assert store.pending_invocation("k1", "sagemaker-async:ep") is None
    store.remember_invocation(invocation)
    assert store.pending_invocation("k1", "sagemaker-async:ep") == invocation
    assert store.pending_invocation("k1", "other") is None
    store.forget_invocation("k1", "sagemaker-async:ep")
    assert store.pending_invocation("k1", "sagemaker-async:ep") is None


def test_transform_job_records(store):
    batch = store.create_batch("b", "ann", report(2))
    job = TransformJobRecord(batch_id=batch.id, job_name="tag-b1-a", status="InProgress", s3_prefix="s3://b/transform/tag-b1-a/", total=2)
    store.save_transform_job(job)
    store.save_transform_job(replace(job, done=1))
    assert [(j.job_name, j.done, j.status) for j in store.transform_jobs(batch.id)] == [("tag-b1-a", 1, "InProgress")]
    assert [j.job_name for j in store.active_transform_jobs()] == ["tag-b1-a"]
    store.save_transform_job(replace(job, status="Ingested", done=2))
    assert store.active_transform_jobs() == []
    assert store.transform_jobs(batch.id)[0].status == "Ingested" and store.transform_jobs(batch.id)[0].created_at


def test_dynamo_item_size_limit_fails_only_that_row():
    with mock_aws():
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "t", item_max_bytes=5_000)
        store.create_table()
        rows = report(2)
        rows.items[1].hints = {"notes": "x" * 10_000}
        batch = store.create_batch("b", "ann", rows)
        first, second = store.list_items(batch.id)
        assert first.status == "pending"
        assert second.status == "error" and "too large to store" in second.error and second.hints == {}
        assert (store.get_batch(batch.id).total, store.get_batch(batch.id).failed) == (2, 1)


def race(count: int, action):
    """Run action(i) on `count` threads released together by a barrier; results by thread index."""
    barrier, results = threading.Barrier(count), [None] * count

    def target(index: int) -> None:
        barrier.wait(30)
        try:
            results[index] = action(index)
        except Exception as exc:  # noqa: BLE001 - compared by the test
            results[index] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_item_lease_one_claimant_at_a_time_even_when_racing(store):
    batch = store.create_batch("b", "ann", report(1))
    item = store.list_items(batch.id)[0]
    wins = race(6, lambda i: store.claim_item(item.id, f"runner-{i}", 120, version=item.version, now=1000.0))
    assert wins.count(True) == 1 and wins.count(False) == 5
    holder = f"runner-{wins.index(True)}"
    assert store.get_item(item.id).lease_owner == holder


def test_item_lease_expiry_takeover_and_only_the_holder_completes(store):
    batch = store.create_batch("b", "ann", report(2))
    item, other = store.list_items(batch.id)
    assert store.claim_item(item.id, "a", 120, version=0, now=1000.0)
    assert not store.claim_item(item.id, "b", 120, version=0, now=1100.0)  # a's lease is live
    assert store.renew_items([item.id, other.id], "a", 120, now=1100.0) == [item.id]  # renewed to 1220; other not a's
    assert not store.claim_item(item.id, "b", 120, version=0, now=1200.0)
    assert store.claim_item(item.id, "b", 120, version=0, now=1221.0)  # a crashed: its lease ran out unrenewed
    assert store.save_result(item.id, result("k1"), [Usage(kind="endpoint", model="blip")], owner="a") is False
    assert store.get_item(item.id).status == "pending" and store.usage(batch.id) == []  # nothing written for a
    assert store.save_result(item.id, result("k1"), [Usage(kind="endpoint", model="blip")], owner="b") is True
    assert store.save_error(item.id, "again", [Usage(kind="endpoint", model="blip")], owner="b") is False  # no second completion
    saved = store.get_item(item.id)
    assert (saved.status, saved.lease_owner, saved.version) == ("ok", None, 1) and len(store.usage(batch.id)) == 1
    assert (store.get_batch(batch.id).done, store.get_batch(batch.id).failed) == (1, 0)
    assert not store.claim_item(item.id, "c", 120, version=0, now=5000.0)  # finished since it was read: never redone
    assert store.claim_item(other.id, "c", 120, version=0, now=5000.0)
    assert store.claim_item(other.id, "d", 120, version=0, now=5001.0, stale_owners=("c",))  # c is known dead
    store.release_item(other.id, "d")
    assert store.get_item(other.id).lease_owner is None


def test_batch_run_state_stop_requests_and_takeover(store):
    a = store.create_batch("a", "ann", report(1))
    b = store.create_batch("b", "ann", report(1))
    assert store.get_batch(a.id).run is None
    run = store.claim_batch(a.id, "task-1/10/x", 120, now=1000.0)
    assert (run.owner, run.host, run.started_at, run.live(1100.0)) == ("task-1/10/x", "task-1", 1000.0, True)
    assert store.claim_batch(a.id, "cli/20/y", 120, now=1050.0).owner == "task-1/10/x"  # refused: holder returned
    assert store.claim_batch(b.id, "cli/20/y", 120, now=1050.0).owner == "cli/20/y"
    store.request_stop(a.id, "bob", now=1060.0)
    beat = store.heartbeat_batch(a.id, "task-1/10/x", 120, now=1070.0)
    assert (beat.stop_requested_by, beat.heartbeat_at, beat.lease_until) == ("bob", 1070.0, 1190.0)
    assert store.get_batch(b.id).run.stop_requested_by is None  # Stop on a never reaches b
    assert store.heartbeat_batch(a.id, "cli/20/y", 120, now=1070.0) is None  # not the holder
    assert store.claim_batch(a.id, "cli/20/y", 120, now=1191.0).owner == "cli/20/y"  # lease ran out: taken over
    assert store.get_batch(a.id).run.stop_requested_by is None  # a new run starts without the old request
    store.release_batch(a.id, "task-1/10/x")  # a stale runner's release changes nothing
    assert store.get_batch(a.id).run.owner == "cli/20/y"
    store.release_batch(a.id, "cli/20/y")
    assert store.get_batch(a.id).run is None


def test_concurrent_edits_one_wins_the_other_is_refused_with_who_and_when(store):
    batch = store.create_batch("b", "ann", report(1))
    item = store.list_items(batch.id)[0]
    store.save_result(item.id, result("k1"), [])
    shown = store.get_item(item.id).version
    texts = ["Ann's summary.", "Bob's summary."]
    outcomes = race(2, lambda i: store.edit_item(item.id, "summary", texts[i], ["ann", "bob"][i], expected_version=shown))
    [winner] = [i for i, o in enumerate(outcomes) if not isinstance(o, Exception)]
    loser = 1 - winner
    refused = outcomes[loser]
    assert isinstance(refused, StaleEditError)
    assert refused.who == ["ann", "bob"][winner] and refused.at == outcomes[winner].at
    assert texts[loser] in str(refused) and f"changed by {refused.who} at {refused.at}" in str(refused)  # nothing lost
    now = store.get_item(item.id)
    assert now.summary == texts[winner] and now.version == shown + 1 and now.updated_by == refused.who
    assert [(e.who, e.new) for e in store.edits(item.id)] == [(refused.who, texts[winner])]
    # Same value as stored: nothing to refuse.
    assert store.edit_item(item.id, "summary", texts[winner], "carl", expected_version=shown) is None


def test_edits_since_lists_every_items_edits_in_one_bulk_read(store):
    """Quality analytics read all edits of a period at once: across batches and items, oldest first,
    the review-status changes included, nothing before `since`; DynamoDB by one index Query a month
    plus BatchGetItem, never a read per item."""
    first, second = store.create_batch("a", "ann", report(2)), store.create_batch("b", "bob", report(1))
    items = store.list_items(first.id) + store.list_items(second.id)
    for index, item in enumerate(items):
        store.save_result(item.id, result(f"k{index}"), [])
    before = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    store.edit_item(items[2].id, "caption", "a blue boot", "ann")
    store.edit_item(items[0].id, "attribute:color", "crimson", "bob")
    store.edit_item(items[0].id, "review_status", "approved", "bob")
    store.edit_item(items[1].id, "tags", "shoe", "carl")
    after = datetime.now(timezone.utc).isoformat()
    calls: list[str] = []
    if isinstance(store, DynamoStore):
        store.client.meta.events.register("before-call.dynamodb.*", lambda model, **kw: calls.append(model.name))
    listed = store.edits_since(before)
    assert [(e.item_id, e.field, e.old, e.new, e.who) for e in listed] == [
        (items[2].id, "caption", "a red shoe", "a blue boot", "ann"),
        (items[0].id, "attribute:color", "red", "crimson", "bob"),
        (items[0].id, "review_status", "pending", "approved", "bob"),
        (items[1].id, "tags", "shoe, red", "shoe", "carl"),
    ]
    assert all(before <= e.at <= after for e in listed)
    if isinstance(store, DynamoStore):
        assert calls == ["Query", "BatchGetItem"]  # this month's index partition, then the rows
    assert store.edits_since(after) == [] and store.edits_since("2999-01-01T00:00:00+00:00") == []
    assert len(store.edits_since(None)) == 4
