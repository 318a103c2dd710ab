"""Summaries through OpenAI's Batch API, with the real `openai` client over HTTP against the local
OpenAI-compatible server (tests/support/servers.py: /v1/files and /v1/batches run every JSONL line
through its chat-completions handler). The photos are captioned by the tiny local BLIP-2."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from pipeline.batches.runner import run_batch
from pipeline.models import CaptionResult, IngestReport, OpenAIBatchRecord, SourceItem, SourceRef
from pipeline.service import build_stages, create_batch
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore
from pipeline.summarizers.openai_summarizer import CONTENT_FILTER_MESSAGE, SYSTEM_PROMPT
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words
from support import moto_sagemaker
from support.images import jpeg_bytes
from support.servers import BatchPlan, FakeOpenAI, Reply

WORDS_70 = " ".join(["Soft"] + ["cotton"] * 68 + ["tee."])


def answer(summary: str = "A red cotton tee with a crew neck.") -> dict:
    return {"title": "Red tee", "summary": summary, "tags": ["tee", "red"],
            "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None}}


class Clock:
    """Epoch seconds that move only when the summarizer pauses between looks (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, cancel, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.now += seconds
        return bool(cancel is not None and cancel.is_set())


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        fake.state.default = Reply(content=answer(), prompt_tokens=300, completion_tokens=40)
        yield fake


@pytest.fixture
def aws(monkeypatch):
    with moto_sagemaker.endpoint_in_moto(monkeypatch) as clients:
        yield clients


@pytest.fixture
def make_stages(make_settings, local_captioner, server):
    def factory(clock: Clock | None = None, **overrides):
        values = dict(summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                      openai_batch_min_items=2, openai_max_retries=0)
        values.update(overrides)
        stages = build_stages(make_settings(**values), captioner=local_captioner)
        clock = clock or Clock()
        stages.batch_summarizer.clock, stages.batch_summarizer.wait = clock, clock.wait
        return stages

    return factory


def new_batch(stages, tmp_path, count: int = 4):
    paths = []
    for number in range(count):
        path = tmp_path / f"p{number}.jpg"
        path.write_bytes(jpeg_bytes(size=(200, 160), seed=number + 1))
        paths.append(path)
    report = IngestReport(items=[SourceItem(source=p.name, ref=SourceRef("file", str(p)), sku=f"SKU-{n}") for n, p in enumerate(paths)])
    return stages.store.create_batch("cheap", "ann", report)


def realtime_requests(server) -> int:
    """Chat requests that came over HTTP one by one (batch lines reach the handler without headers)."""
    return sum(1 for headers in server.state.headers if headers)


def kinds(stages, batch_id) -> list[str]:
    return sorted(u.kind for u in stages.store.usage(batch_id) if u.kind != "local")


def input_lines(server) -> list[dict]:
    (create,) = server.state.batch_creates
    return [json.loads(line) for line in server.state.files[create["input_file_id"]]["content"].decode().splitlines()]


def test_cheapest_run_summarizes_every_item_through_one_openai_batch(make_stages, server, tmp_path):
    stages = make_stages()
    batch = new_batch(stages, tmp_path)
    progress = run_batch(stages, batch.id, concurrency=2, cheapest=True)
    assert (progress.ok, progress.failed) == (4, 0), [i.error for i in stages.store.list_items(batch.id)]
    items = stages.store.list_items(batch.id)
    assert all(i.status == "ok" and i.summary == "A red cotton tee with a crew neck." and i.caption for i in items)
    assert all(i.summary_model == "gpt-4o" and i.title == "Red tee" and i.tags == ["tee", "red"] for i in items)
    (create,) = server.state.batch_creates
    assert (create["endpoint"], create["completion_window"]) == ("/v1/chat/completions", "24h")
    lines = input_lines(server)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"item-{i.id}" for i in items)
    for line in lines:  # the real-time request, byte for byte: structured output, shared system prompt first
        body = line["body"]
        assert (line["method"], line["url"], body["model"], body["temperature"]) == ("POST", "/v1/chat/completions", "gpt-4o", 0)
        assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["strict"] is True
        assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert json.loads(body["messages"][1]["content"])["caption"]
    assert len({json.dumps(line["body"]["messages"][0]) for line in lines}) == 1  # one cacheable prefix
    assert server.state.files[create["input_file_id"]]["object"]["purpose"] == "batch"
    assert realtime_requests(server) == 0
    rows = [u for u in stages.store.usage(batch.id) if u.kind == "llm_batch"]
    assert [(u.model, u.input_tokens, u.output_tokens, u.invocations) for u in rows] == [("gpt-4o", 300, 40, 1)] * 4
    assert kinds(stages, batch.id) == ["llm_batch"] * 4  # no real-time summary was paid for
    assert stages.store.pending_openai_batch(batch.id) is None  # collected: a Retry failed would submit anew


def test_without_cheapest_or_below_the_minimum_summaries_stay_real_time(make_stages, server, tmp_path):
    stages = make_stages(openai_batch_min_items=5)
    batch = new_batch(stages, tmp_path)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)  # 4 items < 5
    other = new_batch(stages, tmp_path)
    run_batch(stages, other.id, concurrency=2)  # not cheapest
    assert server.state.batch_creates == [] and realtime_requests(server) == 8
    assert kinds(stages, batch.id) == ["llm"] * 4


def test_word_limit_is_held_on_every_item_with_the_real_time_corrective_request(make_stages, server, tmp_path):
    def responder(request):  # every batch draft is 70 words; the corrective request (3rd message) gets a short one
        return Reply(content=answer("A soft red cotton tee." if len(request["messages"]) > 2 else WORDS_70))

    server.state.responder = responder
    stages = make_stages()
    batch = new_batch(stages, tmp_path)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    items = stages.store.list_items(batch.id)
    assert all(i.status == "ok" and i.word_count <= MAX_SUMMARY_WORDS and i.summary == "A soft red cotton tee." for i in items)
    assert all(count_words(json.loads(m["content"])["summary"]) == 70
               for r in server.state.requests if len(r["messages"]) > 2 for m in r["messages"][2:3])
    assert realtime_requests(server) == 4  # one corrective request per item, as the real-time path makes
    assert kinds(stages, batch.id) == ["llm"] * 4 + ["llm_batch"] * 4


def test_still_too_long_after_the_corrective_request_is_trimmed_never_stored_over_50(make_stages, server, tmp_path):
    server.state.default = Reply(content=answer(WORDS_70 + " " + WORDS_70))
    stages = make_stages()
    batch = new_batch(stages, tmp_path, count=2)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    assert [i.word_count for i in stages.store.list_items(batch.id)] == [MAX_SUMMARY_WORDS] * 2


@pytest.mark.parametrize("fallback", [True, False])
def test_a_refused_line_fails_only_its_item_and_a_5xx_line_falls_back(make_stages, server, tmp_path, fallback):
    lines = []

    def responder(request):
        if any(h == {} for h in server.state.headers[-1:]):  # a batch line
            lines.append(request)
            if len(lines) == 2:
                return Reply(status=400, error_code="content_filter", error_type="invalid_request_error")
            if len(lines) == 3:
                return Reply(status=500)
        return Reply(content=answer())

    server.state.responder = responder
    stages = make_stages(openai_batch_fallback=fallback)
    batch = new_batch(stages, tmp_path)
    progress = run_batch(stages, batch.id, concurrency=2, cheapest=True)
    by_line = {json.loads(r["messages"][1]["content"])["sku"]: n for n, r in enumerate(lines, 1)}
    items = {i.sku: i for i in stages.store.list_items(batch.id)}
    refused = next(sku for sku, n in by_line.items() if n == 2)
    failing = next(sku for sku, n in by_line.items() if n == 3)
    assert items[refused].status == "error" and items[refused].error == CONTENT_FILTER_MESSAGE
    others = [i for sku, i in items.items() if sku not in (refused, failing)]
    assert all(i.status == "ok" for i in others)
    if fallback:  # summarized one by one at the full price
        assert items[failing].status == "ok" and realtime_requests(server) == 1
        assert (progress.ok, progress.failed) == (3, 1)
        assert kinds(stages, batch.id) == ["llm"] + ["llm_batch"] * 2
    else:
        assert items[failing].status == "error" and "HTTP 500" in items[failing].error and "retry" in items[failing].error
        assert "Traceback" not in items[failing].error and realtime_requests(server) == 0
        assert kinds(stages, batch.id) == ["llm_batch"] * 2


@pytest.mark.parametrize("fallback", [True, False])
def test_expired_batch_keeps_its_answers_and_the_rest_fall_back_or_fail(make_stages, server, tmp_path, fallback):
    server.state.batch_plan = BatchPlan(end="expired", answered_lines=2)
    stages = make_stages(openai_batch_fallback=fallback)
    batch = new_batch(stages, tmp_path)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    statuses = sorted(i.status for i in stages.store.list_items(batch.id))
    if fallback:
        assert statuses == ["ok"] * 4 and kinds(stages, batch.id) == ["llm"] * 2 + ["llm_batch"] * 2
    else:
        assert statuses == ["error", "error", "ok", "ok"] and kinds(stages, batch.id) == ["llm_batch"] * 2
        failed = [i for i in stages.store.list_items(batch.id) if i.status == "error"]
        assert all(i.error == "OpenAI's Batch API did not answer for this product (batch_expired); retry the failed items." for i in failed)


def test_deadline_cancels_the_batch_and_pauses_grow_to_the_poll_cap(make_stages, server, tmp_path):
    server.state.batch_plan = BatchPlan(end="hold")  # never finishes by itself
    clock = Clock()
    stages = make_stages(clock, openai_batch_poll_s=60, openai_batch_deadline_s=3600, openai_batch_fallback=False)
    batch = new_batch(stages, tmp_path, count=2)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    (openai_batch,) = server.state.batches.values()
    assert openai_batch["status"] in ("cancelling", "cancelled")
    assert clock.pauses[:4] == [5.0, 7.5, 11.25, 16.875] and max(clock.pauses) == 60.0
    assert sum(clock.pauses) == pytest.approx(3600)  # stopped waiting exactly at the deadline, not one pause later
    items = stages.store.list_items(batch.id)
    assert all(i.status == "error" and "after 1 h (OPENAI_BATCH_DEADLINE_S)" in i.error for i in items)
    assert kinds(stages, batch.id) == []


def test_whole_batch_refused_falls_back_to_real_time_with_the_same_messages(make_stages, server, tmp_path):
    server.state.batch_plan = BatchPlan(end="failed")
    stages = make_stages()
    batch = new_batch(stages, tmp_path, count=3)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    assert all(i.status == "ok" for i in stages.store.list_items(batch.id))
    assert realtime_requests(server) == 3 and kinds(stages, batch.id) == ["llm"] * 3


def test_bad_key_at_submission_fails_every_item_once_with_its_message(make_stages, server, tmp_path):
    server.state.files_error = Reply(status=401, error_type="invalid_request_error", error_code="invalid_api_key",
                                     error_message="Incorrect API key provided: sk-test-1234")
    stages = make_stages()
    batch = new_batch(stages, tmp_path, count=3)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    items = stages.store.list_items(batch.id)
    assert all(i.status == "error" and i.error.startswith("OpenAI rejected the API key (OPENAI_API_KEY)") for i in items)
    assert all("sk-test" not in i.error for i in items)
    assert realtime_requests(server) == 0 and server.state.batch_creates == []


def test_batch_api_outage_at_submission_falls_back_to_real_time(make_stages, server, tmp_path):
    server.state.files_error = Reply(status=503)
    clock = Clock()
    stages = make_stages(clock)
    batch = new_batch(stages, tmp_path, count=3)
    run_batch(stages, batch.id, concurrency=2, cheapest=True)
    assert all(i.status == "ok" for i in stages.store.list_items(batch.id))
    assert len(clock.pauses) == 2 and realtime_requests(server) == 3  # 3 tries of the upload, then one by one
    assert kinds(stages, batch.id) == ["llm"] * 3


class Killed(BaseException):
    """The process dies while it waits (not an Exception: nothing on the way catches it)."""


def test_restart_mid_wait_picks_up_the_same_openai_batch_and_pays_once(make_stages, server, tmp_path):
    server.state.batch_plan = BatchPlan(end="hold")
    first = make_stages()

    def killed(cancel, seconds):
        raise Killed

    first.batch_summarizer.wait = killed
    batch = new_batch(first, tmp_path)
    with pytest.raises(Killed):
        run_batch(first, batch.id, concurrency=2, cheapest=True, owner="gone-host/1/a")
    assert [i.status for i in first.store.list_items(batch.id)] == ["pending"] * 4
    remembered = first.store.pending_openai_batch(batch.id)
    assert remembered is not None and remembered.requests == 4
    local_rows = [u for u in first.store.usage(batch.id) if u.kind == "local"]
    assert len(local_rows) == 4  # the captions were paid for and kept before the wait

    for openai_batch in server.state.batches.values():
        openai_batch["_plan"] = BatchPlan(looks_in_progress=0)  # OpenAI finishes it meanwhile
    restarted = make_stages()  # a new process: new store connection, new summarizer
    # A plain resume (a restarted dashboard does not know the user picked Cheapest), after the leases ran out.
    progress = run_batch(restarted, batch.id, concurrency=2, clock=lambda: time.time() + 3600)
    assert (progress.ok, progress.failed) == (4, 0)
    assert len(server.state.batch_creates) == 1 and realtime_requests(server) == 0
    usage = restarted.store.usage(batch.id)
    assert sorted(u.kind for u in usage) == ["llm_batch"] * 4 + ["local"] * 4  # one summary and one caption per item
    assert restarted.store.pending_openai_batch(batch.id) is None


def test_stop_while_waiting_leaves_items_pending_and_resume_collects(make_stages, server, tmp_path):
    server.state.batch_plan = BatchPlan(end="hold")
    stages = make_stages()
    cancel = threading.Event()

    def stop_on_first_pause(_, seconds):
        cancel.set()  # Stop pressed while the OpenAI batch runs
        return True

    stages.batch_summarizer.wait = stop_on_first_pause
    batch = new_batch(stages, tmp_path, count=3)
    progress = run_batch(stages, batch.id, concurrency=2, cheapest=True, cancel=cancel)
    assert progress.cancelled and progress.done == 0
    items = stages.store.list_items(batch.id)
    assert all(i.status == "pending" and i.lease_owner is None for i in items)  # leases released: resumable at once
    from pipeline.batches.worker import BatchWorker

    view = BatchWorker(stages, concurrency=2).view(batch.id)  # what the Tag page shows meanwhile
    assert view.state == "stopped" and view.notice.startswith("The summaries of 3 photos are still at OpenAI's Batch API (sent ")
    assert view.notice.endswith("press Resume to collect them without paying again.")
    for openai_batch in server.state.batches.values():
        openai_batch["_plan"] = BatchPlan(looks_in_progress=0)
    again = make_stages()
    assert run_batch(again, batch.id, concurrency=2).ok == 3
    assert len(server.state.batch_creates) == 1 and kinds(again, batch.id) == ["llm_batch"] * 3


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_both_stores_remember_the_openai_batch_and_keep_captions(kind, tmp_path):
    def check(store):
        report = IngestReport(items=[SourceItem(source="p.jpg", ref=SourceRef("file", "/p.jpg"))])
        batch = store.create_batch("b", "ann", report)
        assert store.pending_openai_batch(batch.id) is None
        older = OpenAIBatchRecord(batch_id=batch.id, openai_batch_id="batch_1", input_file_id="file-1", submitted_at=100.5, requests=1)
        newer = replace(older, openai_batch_id="batch_2", input_file_id="file-2", submitted_at=200.25)
        store.remember_openai_batch(older)
        store.remember_openai_batch(newer)
        assert store.pending_openai_batch(batch.id) == newer
        store.remember_openai_batch(replace(newer, status="finalizing"))
        assert store.pending_openai_batch(batch.id).status == "finalizing"
        store.forget_openai_batch(batch.id, "batch_2")
        assert store.pending_openai_batch(batch.id) == older
        store.forget_openai_batch(batch.id, "batch_1")
        assert store.pending_openai_batch(batch.id) is None
        store.cache_caption("k1", CaptionResult(caption="a red tee", answers={"color": "red"}, model_id="blip"))
        assert store.cached_caption("k1", "blip") == CaptionResult(caption="a red tee", answers={"color": "red"}, model_id="blip", cached=True)

    if kind == "sqlite":
        check(SqliteStore(tmp_path / "s.sqlite3"))
        return
    with mock_aws():
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "tagging-test")
        store.create_table()
        check(store)


def test_items_keep_their_leases_while_the_openai_batch_runs(make_stages, server, tmp_path):
    """Another runner (a second task joining the batch) cannot take an item whose summary is at OpenAI:
    the heartbeat renews the lease of every waiting item."""
    server.state.batch_plan = BatchPlan(end="hold")
    stages = make_stages(lease_s=2.0)  # renewed every 2/3 s
    seen: dict[str, object] = {}

    def look_at_leases(cancel, seconds):
        items = stages.store.list_items(batch.id)
        first = {i.id: i.lease_until for i in items}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until every lease was renewed at least once (or the bug shows)
            now = {i.id: i.lease_until for i in stages.store.list_items(batch.id)}
            if all(now[i] and first[i] and now[i] > first[i] for i in now):
                break
            threading.Event().wait(0.05)
        after = stages.store.list_items(batch.id)
        seen["owners"] = {i.lease_owner for i in after}
        seen["renewed"] = all(a.lease_until and first[a.id] and a.lease_until > first[a.id] for a in after)
        valid_until = min(a.lease_until or 0 for a in after) - 0.01  # a moment the renewed leases certainly cover
        seen["other_claims"] = [stages.store.claim_item(i.id, "other-host/1/x", 60, version=i.version, now=valid_until) for i in after]
        cancel.set()
        return True

    stages.batch_summarizer.wait = look_at_leases
    batch = new_batch(stages, tmp_path, count=3)
    run_batch(stages, batch.id, concurrency=2, cheapest=True, owner="this-host/1/me")
    assert seen == {"owners": {"this-host/1/me"}, "renewed": True, "other_claims": [False, False, False]}


def test_transform_job_summaries_through_the_batch_api_survive_a_restart(aws, make_settings, monkeypatch, responder, server, tmp_path):
    from pipeline.batches.batch_transform import BatchTransformRunner
    from support.sagemaker_emulator import TransformEmulator

    settings = make_settings(captioner="sagemaker", sagemaker_transform_s3="s3://results/transform", transform_poll_s=0.05,
                             summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                             openai_batch_min_items=2)
    TransformEmulator(responder).install(monkeypatch)
    server.state.batch_plan = BatchPlan(end="hold")
    stages = build_stages(settings)
    clock = Clock()
    stages.batch_summarizer.clock = clock
    stop = threading.Event()

    def stop_while_waiting(cancel, seconds):
        stop.set()  # the dashboard goes away while OpenAI works on the summaries
        return True

    stages.batch_summarizer.wait = stop_while_waiting
    paths = []
    for number, seed in enumerate([1, 2, 3, 1]):
        paths.append(tmp_path / f"j{number}.jpg")
        paths[-1].write_bytes(jpeg_bytes(size=(320, 240), seed=seed))
    batch = create_batch(stages.store, settings, paths, name="big", created_by="ann")
    job = BatchTransformRunner.from_settings(settings, stages).run(batch.id, cancel=stop)
    assert job.status == "Summarizing" and stages.store.transform_jobs(batch.id)[0].status == "Summarizing"
    assert [i.status for i in stages.store.list_items(batch.id)] == ["pending"] * 4
    before = sorted(u.kind for u in stages.store.usage(batch.id))
    assert before == ["transform"] * 3 + ["transform_job"]  # captions (3 distinct photos) and the job, kept before the wait

    for openai_batch in server.state.batches.values():
        openai_batch["_plan"] = BatchPlan(looks_in_progress=0)
    restarted = build_stages(settings)
    restarted.batch_summarizer.clock, restarted.batch_summarizer.wait = clock, clock.wait
    job = BatchTransformRunner.from_settings(settings, restarted).run(batch.id)
    assert job.status == "Ingested"
    items = restarted.store.list_items(batch.id)
    assert all(i.status == "ok" and i.summary and i.caption_model == "sagemaker:blip2-endpoint" for i in items)
    assert sorted(u.kind for u in restarted.store.usage(batch.id)) == ["llm_batch"] * 4 + ["transform"] * 3 + ["transform_job"]
    assert len(server.state.batch_creates) == 1 and realtime_requests(server) == 0
    assert len(restarted.store.transform_jobs(batch.id)) == 1


def test_cli_tag_cheapest_sends_the_summaries_as_one_openai_batch(monkeypatch, tmp_path, tiny_model, server, capsys):
    from pipeline.cli import main

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "openai",
                       "OPENAI_API_KEY": "sk-test-1234", "OPENAI_BASE_URL": server.base_url, "MAX_NEW_TOKENS": "8",
                       "OPENAI_BATCH_MIN_ITEMS": "2", "OPENAI_BATCH_POLL_S": "0.01", "CONCURRENCY": "2"}.items():
        monkeypatch.setenv(key, value)
    photos = []
    for number in range(3):
        photos.append(tmp_path / f"c{number}.jpg")
        photos[-1].write_bytes(jpeg_bytes(size=(200, 160), seed=number + 1))
    assert main(["tag", *map(str, photos), "--cheapest", "--out", str(tmp_path / "report.csv")]) == 0
    captured = capsys.readouterr()
    assert "3 tagged, 0 failed" in captured.out and "Batch API" in captured.err
    assert len(server.state.batch_creates) == 1 and realtime_requests(server) == 0
    assert "A red cotton tee with a crew neck." in (tmp_path / "report.csv").read_text()


def test_tag_page_offers_cheapest_and_runs_it_through_the_batch_api(monkeypatch, tmp_path, tiny_model, server):
    import io
    import zipfile

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.runtime import get_runtime

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "openai",
                       "OPENAI_API_KEY": "sk-test-1234", "OPENAI_BASE_URL": server.base_url, "MAX_NEW_TOKENS": "8",
                       "OPENAI_BATCH_MIN_ITEMS": "2", "OPENAI_BATCH_POLL_S": "0.01", "CONCURRENCY": "2", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(3):
            archive.writestr(f"shirt-{index}.jpg", jpeg_bytes(seed=index))
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=60).run()
        assert not app.exception, app.exception
        app.file_uploader[0].set_value([("photos.zip", buffer.getvalue(), "application/zip")]).run()
        [cheapest] = [c for c in app.checkbox if c.label == "Cheapest: summaries within 24 h"]
        assert cheapest.value is False  # summaries one by one unless the user picks it
        cheapest.check().run()
        [run] = [b for b in app.button if b.label == "Run"]
        run.click().run()
        assert not app.exception, app.exception
        assert get_runtime().worker.wait_idle(120)
        batch_id = app.session_state["batch_id"]
        items = get_runtime().stages.store.list_items(batch_id)
        assert [i.status for i in items] == ["ok"] * 3
        assert len(server.state.batch_creates) == 1 and realtime_requests(server) == 0
    finally:
        st.cache_resource.clear()


def test_killed_between_creating_the_batch_and_keeping_its_id_still_pays_once(make_stages, server, tmp_path):
    first = make_stages()
    remember = first.store.remember_openai_batch

    def dies_before_keeping_the_batch_id(record):
        if not record.openai_batch_id.startswith(("unsent:", "intent:")):
            raise Killed  # batches.create answered; the process dies before the id is stored
        remember(record)

    first.store.remember_openai_batch = dies_before_keeping_the_batch_id
    batch = new_batch(first, tmp_path, count=3)
    with pytest.raises(Killed):
        run_batch(first, batch.id, concurrency=2, cheapest=True, owner="gone-host/1/a")
    assert len(server.state.batch_creates) == 1
    restarted = make_stages()
    assert run_batch(restarted, batch.id, concurrency=2, clock=lambda: time.time() + 3600).ok == 3
    assert len(server.state.batch_creates) == 1 and realtime_requests(server) == 0  # found by its input file
    assert kinds(restarted, batch.id) == ["llm_batch"] * 3
    assert restarted.store.pending_openai_batch(batch.id) is None


def test_killed_after_the_upload_before_the_batch_is_created_sends_it_once(make_stages, server, tmp_path):
    first = make_stages()

    def dies_before_creating(unsent):
        raise Killed

    first.batch_summarizer._create = dies_before_creating
    batch = new_batch(first, tmp_path, count=3)
    with pytest.raises(Killed):
        run_batch(first, batch.id, concurrency=2, cheapest=True, owner="gone-host/1/a")
    assert server.state.batch_creates == [] and len(server.state.files) == 1
    restarted = make_stages()
    assert run_batch(restarted, batch.id, concurrency=2, clock=lambda: time.time() + 3600).ok == 3
    (created,) = server.state.batch_creates
    assert created["input_file_id"] == "file-1"  # the file uploaded before the crash, not a second upload
    assert [f["object"]["purpose"] for f in server.state.files.values()].count("batch") == 1


def test_a_cheapest_run_restarted_before_submission_still_uses_the_batch_api(make_stages, server, tmp_path):
    first = make_stages()

    def dies_before_submitting(batch_id, requests):
        raise Killed  # every photo captioned; the server restarts before the summaries are sent

    first.batch_summarizer._submit = dies_before_submitting
    batch = new_batch(first, tmp_path, count=3)
    with pytest.raises(Killed):
        run_batch(first, batch.id, concurrency=2, cheapest=True, owner="gone-host/1/a")
    restarted = make_stages()
    # A plain resume: the restarted server's worker was not told that Cheapest was picked.
    assert run_batch(restarted, batch.id, concurrency=2, clock=lambda: time.time() + 3600).ok == 3
    assert len(server.state.batch_creates) == 1 and realtime_requests(server) == 0
    assert kinds(restarted, batch.id) == ["llm_batch"] * 3
    assert restarted.store.pending_openai_batch(batch.id) is None  # nothing left to steer a later Retry failed


def test_items_summarized_through_the_batch_api_record_the_active_taxonomy_version(make_stages, server, tmp_path):
    """Like a real-time run, a Cheapest run's items record the taxonomy version they were tagged with (they were
    saved as version 0 under an active version 1 before)."""
    from pathlib import Path

    from pipeline.admin.taxonomy import activate_taxonomy, save_taxonomy

    stages = make_stages()
    document = (Path(__file__).resolve().parent.parent / "pipeline" / "attribute_schema.json").read_text()
    save_taxonomy(stages.store, document, "ana@example.com", based_on=0)
    activate_taxonomy(stages.store, 1, "ana@example.com")
    batch = new_batch(stages, tmp_path)
    progress = run_batch(stages, batch.id, concurrency=2, cheapest=True)
    assert (progress.ok, progress.failed) == (4, 0)
    assert len(server.state.batch_creates) == 1
    assert [i.taxonomy_version for i in stages.store.list_items(batch.id)] == [1, 1, 1, 1]


def test_a_cheapest_run_flags_near_duplicates_as_a_real_time_run_does(make_stages, server, tmp_path):
    """Two copies of one photo in a Cheapest run: whichever is captioned second is flagged as looking like the other,
    and every item keeps its perceptual hash (before, items summarized through the Batch API had neither)."""
    import io

    from PIL import Image, ImageDraw

    stages = make_stages()
    different = Image.new("RGB", (200, 160), "white")
    ImageDraw.Draw(different).ellipse((20, 20, 180, 140), fill="black")  # nothing like the copies
    buffer = io.BytesIO()
    different.save(buffer, format="JPEG")
    paths = []
    for number, data in enumerate((jpeg_bytes(size=(200, 160), seed=1), jpeg_bytes(size=(200, 160), seed=1), buffer.getvalue())):
        path = tmp_path / f"p{number}.jpg"
        path.write_bytes(data)
        paths.append(path)
    report = IngestReport(items=[SourceItem(source=p.name, ref=SourceRef("file", str(p)), sku=f"SKU-{n}") for n, p in enumerate(paths)])
    batch = stages.store.create_batch("cheap", "ann", report)
    progress = run_batch(stages, batch.id, concurrency=1, cheapest=True)
    assert (progress.ok, progress.failed) == (3, 0) and len(server.state.batch_creates) == 1
    copies, other = stages.store.list_items(batch.id)[:2], stages.store.list_items(batch.id)[2]
    assert copies[0].phash and copies[0].phash == copies[1].phash and other.phash
    flagged = [i for i in copies if i.near_duplicate]
    assert len(flagged) == 1, [i.near_duplicate for i in copies]
    first = next(i for i in copies if i is not flagged[0])
    assert flagged[0].near_duplicate == f"looks like batch {batch.id} item {first.seq + 1} (0 bits apart)"
    assert other.near_duplicate is None and flagged[0].reused_from is None  # reuse is off by default