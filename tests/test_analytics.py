"""Admin analytics (pipeline/admin/analytics.py) over a hand-made history in SqliteStore and DynamoStore
(moto): exact shares, percentiles, failure ranking, cache hit rate and endpoint history."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from pipeline.admin import analytics
from pipeline.admin.analytics import NO_CATEGORY, UNCLASSIFIED, CommonEdit, endpoint_history, percentile
from pipeline.models import (
    AttributeValue,
    AuditEntry,
    CaptionResult,
    IngestReport,
    ItemResult,
    PhotoChecks,
    SourceItem,
    SourceRef,
    SummaryResult,
    Usage,
)
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def checks() -> PhotoChecks:
    return PhotoChecks(width=400, height=300, too_small=False, blur_score=120.5, blurry=False, brightness=130.0,
                       too_dark=False, too_bright=False, plain_background=True, white_background=True, dominant_colors=["red"])


def result(key: str, caption_model: str, summary_model: str = "gpt-4o-2024-08-06", *, cached: bool = False) -> ItemResult:
    return ItemResult(
        content_key=key, image_path=f"/images/{key}.jpg",
        caption=CaptionResult(caption="a red shoe", answers={"color": "red"}, model_id=caption_model, cached=cached),
        attributes=[AttributeValue(name="color", raw="red", value="red", in_vocab=True)],
        summary=SummaryResult(summary="A red shoe.", title="Red shoe", tags=["shoe", "red"], attributes={"color": "red"},
                              model=summary_model, offline=False),
        checks=checks(), word_count=3,
    )


def batch(store, categories: list[str | None]):
    items = [SourceItem(source=f"p{i}.jpg", ref=SourceRef("file", f"/photos/p{i}.jpg"), sku=f"SKU-{i}",
                        hints={"category": c} if c else {}) for i, c in enumerate(categories)]
    created = store.create_batch("b", "ann", IngestReport(items=items))
    return store.list_items(created.id)


def window() -> tuple[datetime, datetime]:
    """A period around everything the test writes now (the stores stamp real UTC times)."""
    now = datetime.now(timezone.utc)
    return now - timedelta(hours=1), now + timedelta(minutes=5)


def seed_reviews(store) -> list:
    """Five tagged items and one failed, reviewed as the Quality expectations below say."""
    items = batch(store, ["shoes", "shoes", "bags", None, "bags", "bags"])
    models = ["blip2@rev1", "blip2@rev1", "blip2@rev2", "blip2@rev2", "blip2@rev2"]
    for index, (item, model) in enumerate(zip(items, models)):
        store.save_result(item.id, result(f"k{index}", model), [])
    store.save_error(items[5].id, "The photo could not be read.", [])
    one, two, three, four, five = items[:5]
    store.edit_item(one.id, "review_status", "approved", "ann")  # everything kept
    store.edit_item(two.id, "caption", "a red sneaker", "ann")
    store.edit_item(two.id, "attribute:color", "crimson", "ann")
    store.edit_item(two.id, "review_status", "approved", "ann")
    store.edit_item(three.id, "review_status", "rejected", "bob")
    store.edit_item(four.id, "caption", "a red boot", "bob")  # changed, then changed back: not an edit of the model's text
    store.edit_item(four.id, "caption", "a red shoe", "bob")
    store.edit_item(four.id, "review_status", "approved", "bob")
    store.edit_item(five.id, "attribute:color", "crimson", "carl")  # edited, still pending review
    return items


def counts(rows, field: str, group: str = "all") -> tuple[int, int, int, int]:
    [row] = [r for r in rows if r.field == field and r.group == group]
    return row.accepted, row.edited, row.rejected, row.awaiting


def test_quality_shares_per_field_model_and_category(store):
    seed_reviews(store)
    since, until = window()
    quality = analytics.quality(store, since, until)
    assert quality.items == 5  # the failed item has nothing to judge
    # (accepted, edited, rejected, awaiting)
    assert counts(quality.by_field, "caption") == (2, 1, 1, 1)
    assert counts(quality.by_field, "attribute:color") == (2, 2, 1, 0)
    assert counts(quality.by_field, "summary") == (3, 0, 1, 1)
    assert counts(quality.by_field, "title") == (3, 0, 1, 1)
    assert counts(quality.by_field, "tags") == (3, 0, 1, 1)
    [caption] = [r for r in quality.by_field if r.field == "caption"]
    assert (caption.share("accepted"), caption.share("edited"), caption.share("rejected")) == (0.5, 0.25, 0.25)
    [color] = [r for r in quality.by_field if r.field == "attribute:color"]
    assert (color.share("accepted"), color.share("edited"), color.share("rejected")) == (0.4, 0.4, 0.2)
    assert [r.field for r in quality.by_field] == ["caption", "title", "summary", "tags", "attribute:color"]
    # Caption and attributes by caption model (revision as recorded), summary fields by summary model.
    assert counts(quality.by_model, "caption", "blip2@rev1") == (1, 1, 0, 0)
    assert counts(quality.by_model, "caption", "blip2@rev2") == (1, 0, 1, 1)
    assert counts(quality.by_model, "attribute:color", "blip2@rev2") == (1, 1, 1, 0)
    assert counts(quality.by_model, "summary", "gpt-4o-2024-08-06") == (3, 0, 1, 1)
    assert {r.group for r in quality.by_model if r.field == "summary"} == {"gpt-4o-2024-08-06"}
    # By the CSV's category hint (no hint and no category attribute: NO_CATEGORY).
    assert counts(quality.by_category, "attribute:color", "shoes") == (1, 1, 0, 0)
    assert counts(quality.by_category, "attribute:color", "bags") == (0, 1, 1, 0)
    assert counts(quality.by_category, "attribute:color", NO_CATEGORY) == (1, 0, 0, 0)
    # Most common edits first; review-status changes are not edits of a field.
    assert quality.common_edits == [
        CommonEdit("attribute:color", "red", "crimson", 2),
        CommonEdit("caption", "a red boot", "a red shoe", 1),
        CommonEdit("caption", "a red shoe", "a red boot", 1),
        CommonEdit("caption", "a red shoe", "a red sneaker", 1),
    ]


def test_quality_leaves_out_items_and_edits_outside_the_period(store):
    seed_reviews(store)
    since, until = window()
    later = analytics.quality(store, until, until + timedelta(hours=1))
    assert (later.items, later.by_field, later.common_edits) == (0, [], [])
    earlier = analytics.quality(store, since - timedelta(days=1), since)
    assert earlier.items == 0 and earlier.common_edits == []


def test_category_attribute_is_used_without_a_hint(store):
    [item] = batch(store, [None])
    tagged = result("k", "blip2")
    tagged.attributes.append(AttributeValue(name="category", raw="bag", value="bags", in_vocab=True))
    store.save_result(item.id, tagged, [])
    store.edit_item(item.id, "review_status", "approved", "ann")
    quality = analytics.quality(store, *window())
    assert counts(quality.by_category, "caption", "bags") == (1, 0, 0, 0)


def test_health_counts_failures_cache_hits_and_endpoint_history(store):
    items = batch(store, [None] * 6)
    calls = [Usage(kind="local", model="blip2"), Usage(kind="llm", model="gpt-4o", input_tokens=700, output_tokens=90)]
    store.save_result(items[0].id, result("k0", "blip2"), calls)  # paid caption
    store.save_result(items[1].id, result("k1", "blip2"), calls)  # paid caption
    store.save_result(items[2].id, result("k0", "blip2", cached=True), calls[1:])  # cache hit: no caption call
    store.save_result(items[3].id, result("k1", "blip2", cached=True), calls[1:])  # cache hit
    store.save_error(items[4].id, "The photo could not be downloaded (timed out).", [])
    store.save_error(items[5].id, "The photo is not an image.", [])
    store.add_audit("ann", "start", "started", "Starting ml.g5.xlarge")
    store.add_audit("bob", "stop", "refused", "not an admin")
    store.add_audit("autostop", "autostop", "stopped", "Endpoint deleted (idle for 30+ minutes).")
    since, until = window()
    health = analytics.health(store, since, until)
    assert (health.ok, health.failed, health.processed) == (4, 2, 6)
    assert health.bucket == "hour" and sum(p.ok for p in health.throughput) == 4 and sum(p.failed for p in health.throughput) == 2
    assert len(health.throughput) in (2, 3)  # every hour of the 65-minute period, empty ones included
    assert health.per_hour == pytest.approx(6 / (65 / 60))
    assert health.failure_rate == pytest.approx(1 / 3)
    # Two of four captions came from the cache (no caption row in the usage ledger for them).
    assert (health.cache.captioned, health.cache.paid_calls, health.cache.hits, health.cache.hit_rate) == (4, 2, 2, 0.5)
    # Failures ranked by kind; without recorded kinds they group as unclassified, the newest message as example.
    assert [(f.error_kind, f.count, f.example) for f in health.failures] == [(UNCLASSIFIED, 2, "The photo is not an image.")]
    history = health.endpoint
    assert [(e.who, e.action, e.result, e.state) for e in history.events] == [
        ("ann", "start", "started", "running"), ("bob", "stop", "refused", "running"),
        ("autostop", "autostop", "stopped", "stopped")]
    assert history.state_at_start == "unknown"
    nothing = analytics.health(store, until, until + timedelta(hours=2))
    assert (nothing.processed, nothing.failures, nothing.cache.hit_rate, nothing.endpoint.events) == (0, [], None, [])
    assert nothing.endpoint.state_at_start == "stopped"  # carried over from before the period


def test_endpoint_history_states_and_running_hours():
    def entry(hours: float, action: str, outcome: str) -> AuditEntry:
        return AuditEntry(at=(T0 + timedelta(hours=hours)).isoformat(), who="ann", action=action, result=outcome)

    audit = [entry(-5, "start", "started"), entry(2, "stop", "stopped"), entry(3, "stop", "already stopped"),
             entry(4, "start", "started"), entry(5, "start", "refused"), entry(7.5, "autostop", "stopped"),
             entry(9, "start", "started"), entry(30, "stop", "stopped")]
    history = endpoint_history(list(reversed(audit)), T0, T0 + timedelta(hours=10))  # newest first, as audit_log returns it
    assert history.state_at_start == "running"  # started before the period
    assert [(e.result, e.state) for e in history.events] == [
        ("stopped", "stopped"), ("already stopped", "stopped"), ("started", "running"), ("refused", "running"),
        ("stopped", "stopped"), ("started", "running")]
    assert history.running_hours == pytest.approx(2 + 3.5 + 1)  # 0-2 h, 4-7.5 h, 9-10 h
    timeline = history.timeline(T0, T0 + timedelta(hours=10))
    assert timeline[0] == (T0, "running") and timeline[-1] == (T0 + timedelta(hours=10), "running")


def test_percentiles_are_nearest_rank():
    values = [120.0, 80.0, 100.0, 90.0, 110.0, 95.0, 105.0, 85.0, 115.0, 1000.0]
    assert percentile(values, 50) == 100.0  # 5th of 10
    assert percentile(values, 95) == 1000.0  # 10th of 10
    assert percentile(values[:-1], 95) == 120.0  # 9th of 9
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) is None


def test_period_choices_end_now():
    now = datetime(2026, 3, 10, 8, 30, tzinfo=timezone.utc)
    assert analytics.period_bounds("Last 7 days", now) == (now - timedelta(days=7), now)
    assert analytics.health.__doc__ and set(analytics.PERIODS) >= {"Last 24 hours", "Last 7 days", "Last 30 days"}


def test_health_stage_percentiles_and_failure_kinds_from_recorded_timings(store):
    """Timings and error kinds as the runner stores them with each outcome (save_result / save_error)."""
    items = batch(store, [None] * 7)
    paid = [Usage(kind="local", model="blip2")]
    store.save_result(items[0].id, result("k0", "blip2"), paid,
                      stage_ms={"fetch": 10, "normalize": 40, "caption": 300, "summarize": 900, "save": 5})
    store.save_result(items[1].id, result("k1", "blip2"), paid,
                      stage_ms={"fetch": 20, "normalize": 50, "caption": 100, "summarize": 1100, "save": 7})
    store.save_result(items[2].id, result("k0", "blip2", cached=True), [],
                      stage_ms={"fetch": 30, "normalize": 45, "caption": 0.5, "summarize": 800, "save": 6})
    store.save_error(items[3].id, "The photo could not be downloaded in time.", [], error_kind="fetch_timeout", stage_ms={"fetch": 5000})
    store.save_error(items[4].id, "The photo's server did not answer in time.", [], error_kind="fetch_timeout", stage_ms={"fetch": 4000})
    store.save_error(items[5].id, "The summary service is over its quota.", paid, error_kind="summary_quota",
                     stage_ms={"fetch": 15, "normalize": 42, "caption": 200, "summarize": 50})
    store.save_result(items[6].id, result("k1", "blip2", cached=True), [])  # processed before timings were kept
    health = analytics.health(store, *window())
    assert [(s.stage, s.count, s.p50_ms, s.p95_ms) for s in health.stages] == [
        ("fetch", 6, 20, 5000),  # 10 15 20 30 4000 5000: 3rd and 6th of 6
        ("normalize", 4, 42, 50),
        ("caption", 4, 100, 300),
        ("summarize", 4, 800, 1100),
        ("save", 3, 6, 7),
    ]
    assert health.items_with_timings == 6
    assert [(f.error_kind, f.count, f.example) for f in health.failures] == [
        ("fetch_timeout", 2, "The photo's server did not answer in time."),  # the newest of the kind
        ("summary_quota", 1, "The summary service is over its quota."),
    ]
    # Captioned: 4 ok + the summary failure (its caption stage ran); paid: 3 caption calls.
    assert (health.cache.captioned, health.cache.paid_calls, health.cache.hits, health.cache.hit_rate) == (5, 3, 2, 0.4)


def test_health_of_a_real_run_reads_what_the_runner_recorded(stages, make_settings, tmp_path):
    """A batch through the real runner (tiny model, offline summaries): two photos, a copy of the first
    (a cache hit) and one whose file is gone by the time it runs."""
    from pipeline.batches.runner import run_batch
    from pipeline.service import create_batch
    from support.images import jpeg_bytes

    paths = []
    for name, seed in (("a.jpg", 1), ("b.jpg", 2), ("gone.jpg", 3)):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(jpeg_bytes(size=(400, 300), seed=seed))
    copy = tmp_path / "a-copy.jpg"
    copy.write_bytes(paths[0].read_bytes())
    created = create_batch(stages.store, make_settings(), [paths[0], paths[1], copy, paths[2]], name="run", created_by="ann")
    paths[2].unlink()  # staged, then deleted: it fails when fetched
    run_batch(stages, created.id, concurrency=1)
    health = analytics.health(stages.store, *window())
    assert (health.ok, health.failed) == (3, 1)
    [failure] = health.failures
    assert failure.count == 1 and failure.error_kind.startswith("fetch_") and failure.example_item_id == stages.store.list_items(created.id)[3].id
    assert (health.cache.captioned, health.cache.paid_calls, health.cache.hits) == (3, 2, 1)
    recorded = {s.stage: s for s in health.stages}
    assert list(recorded) == ["fetch", "normalize", "checks", "caption", "summarize", "save"]
    assert recorded["fetch"].count == 4 and recorded["caption"].count == 3
    assert 1 <= recorded["save"].count <= 3  # each save stores the run's previous one: the first stores none
    assert all(s.p50_ms is not None and 0 <= s.p50_ms <= s.p95_ms for s in health.stages)
    assert health.items_with_timings == 4


def test_vision_caption_calls_are_paid_captions_and_the_comparisons_sample_is_not(store):
    """Issue 19 follow-up, in both stores: a `vision` row (CAPTIONER=openai-vision) is a paid caption call like a
    local one; a `vision_sample` row (the captioner comparison's call) captions no item; old `llm` rows are summaries."""
    items = batch(store, [None] * 4)
    vision = Usage(kind="vision", model="gpt-4o-mini-2024-07-18", input_tokens=3133, output_tokens=40)
    summary = Usage(kind="llm", model="gpt-4o", input_tokens=700, output_tokens=90)
    store.save_result(items[0].id, result("k0", "openai-vision:gpt-4o-mini"), [vision, summary])  # paid caption
    store.save_result(items[1].id, result("k1", "openai-vision:gpt-4o-mini"), [vision, summary])  # paid caption
    store.save_result(items[2].id, result("k0", "openai-vision:gpt-4o-mini", cached=True), [summary])  # cache hit
    store.record_usage(items[3].id, [Usage(kind="vision_sample", model="gpt-4o-mini", input_tokens=3133, output_tokens=40)])
    health = analytics.health(store, *window())
    assert [u.kind for u in store.usage()].count("vision") == 2  # the kind survives the store
    assert (health.cache.captioned, health.cache.paid_calls, health.cache.hits) == (3, 2, 1)
    assert health.cache.hit_rate == pytest.approx(1 / 3)


def test_quality_counts_seo_fields_and_language_summaries_under_who_wrote_them(store):
    """Every field a person can edit in Review is judged: the SEO fields (grouped under the offline template with
    SEO_FIELDS_BY=template, the default, or under the summary model with `model`; the offline summarizer's are always
    the template's) and each extra-language summary (under the summary model). An item tagged before SEO fields were
    kept has none to judge."""
    items = batch(store, ["shoes", "shoes", "bags", "bags", "bags"])
    for index, item in enumerate(items[:4]):
        written = result(f"s{index}", "blip2@rev1", "offline-template-v1" if index == 3 else "gpt-4o-2024-08-06")
        written.summary.offline = index == 3
        written.summary.seo_title, written.summary.meta_description, written.summary.alt_text = (
            "Red shoe | Shop", "A red shoe for every day.", "A red shoe on a white background")
        written.summary.summaries = {"de": "Ein roter Schuh."}
        store.save_result(item.id, written, [])
    store.save_result(items[4].id, result("old", "blip2@rev1"), [])  # before issue 19: no SEO fields, no languages
    one, two, three, four, _ = items
    store.edit_item(one.id, "seo_title", "Red leather shoe | Shop", "ann")
    store.edit_item(one.id, "review_status", "approved", "ann")
    store.edit_item(two.id, "summary:de", "Ein roter Lederschuh.", "ann")
    store.edit_item(two.id, "review_status", "approved", "ann")
    store.edit_item(three.id, "alt_text", "A red shoe", "bob")  # edited, still pending review
    store.edit_item(four.id, "review_status", "rejected", "bob")
    since, until = window()
    quality = analytics.quality(store, since, until)
    assert [r.field for r in quality.by_field] == ["caption", "title", "summary", "summary:de", "tags", "seo_title",
                                                   "meta_description", "alt_text", "attribute:color"]
    # (accepted, edited, rejected, awaiting)
    assert counts(quality.by_field, "seo_title") == (1, 1, 1, 1)
    assert counts(quality.by_field, "meta_description") == (2, 0, 1, 1)
    assert counts(quality.by_field, "alt_text") == (2, 1, 1, 0)
    assert counts(quality.by_field, "summary:de") == (1, 1, 1, 1)
    assert counts(quality.by_field, "summary") == (2, 0, 1, 2)  # the old item is judged on the fields it has
    assert counts(quality.by_model, "seo_title", "template") == (1, 1, 1, 1)
    assert counts(quality.by_model, "summary:de", "gpt-4o-2024-08-06") == (1, 1, 0, 1)
    assert counts(quality.by_category, "alt_text", "bags") == (0, 1, 1, 0)
    assert CommonEdit("seo_title", "Red shoe | Shop", "Red leather shoe | Shop", 1) in quality.common_edits
    by_model = analytics.quality(store, since, until, seo_fields_by="model").by_model
    assert counts(by_model, "seo_title", "gpt-4o-2024-08-06") == (1, 1, 0, 1)
    assert counts(by_model, "seo_title", "template") == (0, 0, 1, 0)  # the offline summarizer's own template
    assert {r.group for r in by_model if r.field == "alt_text"} == {"gpt-4o-2024-08-06", "template"}


def strip_edit_index(client, table: str) -> int:
    """Edit rows as an older DynamoStore wrote them: without GSI1PK / GSI1SK. Returns how many."""
    rows = [r for page in client.get_paginator("scan").paginate(TableName=table) for r in page["Items"]
            if r["SK"]["S"].startswith("EDIT#")]
    for row in rows:
        client.update_item(TableName=table, Key={"PK": row["PK"], "SK": row["SK"]}, UpdateExpression="REMOVE GSI1PK, GSI1SK")
    return len(rows)


def test_backfill_indexes_old_edits_once_and_quality_counts_them(tmp_path, monkeypatch, capsys):
    """Edits saved before the edits index existed are invisible to Quality on DynamoDB; `python -m pipeline store
    backfill-edits` gives them their entry (page by page), a second run writes nothing, and Quality then counts each
    edit once. Item versions are untouched (a Review save in progress is not refused because of it)."""
    from pipeline.cli import main

    for name, value in {"STORE": "dynamodb", "DYNAMODB_TABLE": "old-edits", "IMAGE_BUCKET": "photos", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1", "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        store = DynamoStore(client, "old-edits")
        store.create_table()
        items = seed_reviews(store)
        assert strip_edit_index(client, "old-edits") == 9
        client.put_item(TableName="old-edits", Item={"PK": {"S": "ITEM#999"}, "SK": {"S": "EDIT#00000000000000000001#ab"},
                                                     "field": {"S": "caption"}})  # no time: left alone
        versions = {i.id: store.get_item(i.id).version for i in items}
        since, until = window()
        hidden = analytics.quality(store, since, until)
        assert hidden.common_edits == [] and counts(hidden.by_field, "caption") == (3, 0, 1, 1)  # the edit is not seen

        assert main(["store", "backfill-edits", "--page-size", "4"]) == 0
        first = capsys.readouterr().out
        assert main(["store", "backfill-edits"]) == 0
        second = capsys.readouterr().out
        assert first.startswith("Edits index: 9 older edit(s) added, 0 added meanwhile by another run, 1 without a time")
        assert second.startswith("Edits index: 0 older edit(s) added, 0 added meanwhile by another run, 1 without a time")
        assert len(first.splitlines()) == len(second.splitlines()) == 1
        seen = analytics.quality(store, since, until)
        assert len(store.edits_since(since.isoformat(timespec="seconds"))) == 9  # each once
        assert {i.id: store.get_item(i.id).version for i in items} == versions
    assert counts(seen.by_field, "caption") == (2, 1, 1, 1) and counts(seen.by_field, "attribute:color") == (2, 2, 1, 0)
    assert seen.common_edits[0] == CommonEdit("attribute:color", "red", "crimson", 2)


def test_two_backfills_at_once_write_each_edit_once():
    """Two machines backfilling together: the second one's conditional writes find the rows indexed by the first
    between its read and its write, and leave them (counted as done elsewhere)."""
    with mock_aws():
        one = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "race")
        one.create_table()
        seed_reviews(one)
        assert strip_edit_index(one.client, "race") == 9
        other = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "race")
        reports = []

        def the_other_machine_goes_first(**_: object) -> None:
            if not reports:
                reports.append(other.backfill_edit_index(page_size=100))

        one.client.meta.events.register("before-call.dynamodb.UpdateItem", the_other_machine_goes_first)
        mine = one.backfill_edit_index(page_size=100)
        assert (reports[0].indexed, mine.indexed, mine.done_elsewhere) == (9, 0, 9)
        assert len(one.edits_since("2000-01-01")) == 9
