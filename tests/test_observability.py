"""Logs and metrics (pipeline/observability): one event per item stage with the right ids, outcome and
error kind; stage timings and error kinds kept in both stores; no secret, presigned URL or photo bytes in
any line, whoever logs them; EMF lines that follow CloudWatch's published specification; the CLI's
stdout free of all of it.

The batch runs for real: the tiny local captioner, the real `openai` client over HTTP against
tests/support's OpenAI server, a photo URL with a presigned query string served over HTTP."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import openai
import pytest
from moto import mock_aws

from pipeline.attributes import load_attribute_schema
from pipeline.batches.runner import NormalizeOptions, Stages, run_batch
from pipeline.errors import BadInputError, ServiceError
from pipeline.models import CaptionResult, IngestReport, SourceItem, SourceRef, Usage
from pipeline.observability import configure, error_kind, registry
from pipeline.observability import metrics
from pipeline.observability.logs import configure_logging
from pipeline.observability.metrics import configure_metrics
from pipeline.observability.trace import ItemTrace
from pipeline.service import fetch_limits
from pipeline.settings import Settings
from pipeline.store import LocalImageStore
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.sqlite_store import SqliteStore
from pipeline.summarizers.openai_summarizer import OpenAISummarizer
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, FileServer, Reply

SCHEMA = load_attribute_schema()
STAGES = ["fetch", "normalize", "checks", "caption", "summarize", "save"]

# Planted secrets: none of these may appear in any line, in any form we can think of.
API_KEY = "sk-proj-PLANTEDkey0123456789abcdefABCDEF"
AWS_KEY_ID = "AKIAPLANTED000000001"
AWS_SECRET = "PlantedAwsSecretAccessKey/0123456789+abcdef"
SIGNATURE = "5f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccddeeff00112233445566778899"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEPLANTEDsessionTOKEN"
PRESIGNED_QUERY = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AWS_KEY_ID}%2F20261202%2Fus-east-1%2Fs3%2Faws4_request"
                   f"&X-Amz-Date=20261202T100000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
                   f"&X-Amz-Security-Token={SESSION_TOKEN}&X-Amz-Signature={SIGNATURE}")
PLANTED = [API_KEY, AWS_KEY_ID, AWS_SECRET, SIGNATURE, SESSION_TOKEN, "X-Amz-Signature=", "X-Amz-Credential="]

# EMF (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)
EMF_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
             "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
             "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
             "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


@pytest.fixture
def loud_libraries():
    """Other libraries at DEBUG too (urllib3 logs each request line with its query string, openai and
    httpx their requests): the formatter, not their discipline, must keep secrets out. Restored after."""
    names = ["urllib3", "openai", "httpx", "httpcore", "botocore"]
    before = {name: logging.getLogger(name).level for name in names}
    yield lambda: [logging.getLogger(name).setLevel(logging.DEBUG) for name in names]
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def unconfigure():
    """Leave logging and metrics as they were: no handler of ours outlives a test."""
    yield
    configure_logging("WARNING", "text", stream=io.StringIO())
    configure_metrics("off")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_tagger", False)]:
        root.removeHandler(handler)


def lines_of(buffer: io.StringIO) -> list[dict]:
    text = buffer.getvalue()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    return rows


def assert_emf(doc: dict) -> None:
    """The structure the EMF specification requires of one document."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000  # ms since the epoch
    assert set(meta) <= {"Timestamp", "CloudWatchMetrics", "LogGroupName", "LogStreamName"}
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for directive in directives:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}  # no other members
        assert isinstance(directive["Namespace"], str) and 1 <= len(directive["Namespace"]) <= 1024
        assert isinstance(directive["Dimensions"], list) and directive["Dimensions"]
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30
            for key in dimension_set:  # each dimension is a top-level string member
                assert isinstance(doc[key], str) and 1 <= len(doc[key]) <= 1024
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"} and isinstance(metric["Name"], str)
            assert metric.get("Unit", "None") in EMF_UNITS
            value = doc[metric["Name"]]  # the value is a top-level member: a number or up to 100 numbers
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def summarizer_for(url: str) -> OpenAISummarizer:
    client = openai.OpenAI(api_key=API_KEY, base_url=url, max_retries=0, timeout=10)
    return OpenAISummarizer(client, SCHEMA, model="gpt-4o", fallback_model="gpt-4o-mini", sleep=lambda s: None)


def answer() -> dict:
    return {"title": "Red sneakers", "summary": "Red leather sneakers by Acme.", "tags": ["sneakers"],
            "attributes": {name: None for name in SCHEMA.names()}}


def test_a_batch_with_one_failing_photo_logs_each_stage_with_its_ids_and_no_secret(
        tmp_path, local_captioner, loud_libraries, unconfigure, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # known only from the environment
    photo = jpeg_bytes(size=(320, 240), seed=7)
    (tmp_path / "a.jpg").write_bytes(photo)
    (tmp_path / "a-copy.jpg").write_bytes(photo)  # the same photo: its caption comes from the cache
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", allow_private_urls=True, log_level="info", log_format="json",
                        metrics_format="emf", metrics_namespace="TaggerTest", openai_api_key=API_KEY)
    out = io.StringIO()
    reg = configure(settings, stream=out)
    loud_libraries()
    store = SqliteStore(tmp_path / "store.sqlite3")
    with FakeOpenAI() as openai_server, FileServer() as files:
        openai_server.state.default = Reply(answer(), prompt_tokens=44, completion_tokens=4)
        url = files.add(f"/photo.jpg?{PRESIGNED_QUERY}", b"\xff\xd8 this is not a JPEG " * 40)
        items = [SourceItem(source="a.jpg", ref=SourceRef("file", str(tmp_path / "a.jpg"))),
                 SourceItem(source="a-copy.jpg", ref=SourceRef("file", str(tmp_path / "a-copy.jpg"))),
                 SourceItem(source=url, ref=SourceRef("url", url))]
        batch = store.create_batch("b", "t", IngestReport(items=items))
        stages = Stages(store=store, images=LocalImageStore(tmp_path / "images"), captioner=local_captioner,
                        summarizer=summarizer_for(openai_server.base_url), schema=SCHEMA, fetch_limits=fetch_limits(settings),
                        normalize=NormalizeOptions())
        logging.getLogger("pipeline.test").warning("about to read %s", url)  # a careless caller
        progress = run_batch(stages, batch.id, concurrency=2)
    assert (progress.ok, progress.failed) == (2, 1)
    rows = lines_of(out)
    text = out.getvalue()

    # no secret anywhere, though libraries logged the presigned request line and we logged the URL
    for secret in PLANTED:
        assert secret not in text, secret
    assert any(r.get("logger", "").startswith("urllib3") and "/photo.jpg?[query removed]" in r["message"] for r in rows)
    assert any("[query removed]" in r.get("message", "") for r in rows if r.get("logger") == "pipeline.test")

    [run_event] = [r for r in rows if r.get("logger") == "pipeline.batches"]  # one per run, besides the item events
    assert (run_event["batch_id"], run_event["ok"], run_event["failed"], run_event["outcome"]) == (batch.id, 2, 1, "ok")

    by_id = {item.source: item for item in store.list_items(batch.id)}
    bad = by_id[url]
    events = [r for r in rows if r.get("logger") == "pipeline.items"]
    for row in events:
        assert set(row) >= {"batch_id", "item_id", "stage", "duration_ms", "outcome", "error_kind"}
        assert row["batch_id"] == batch.id and isinstance(row["duration_ms"], (int, float)) and row["duration_ms"] >= 0

    def stages_of(item_id: int) -> list[tuple[str, str, str | None]]:
        return [(r["stage"], r["outcome"], r["error_kind"]) for r in events if r["item_id"] == item_id]

    for name in ("a.jpg", "a-copy.jpg"):
        assert stages_of(by_id[name].id) == [(s, "ok", None) for s in STAGES] + [("item", "ok", None)]
    assert stages_of(bad.id) == [("fetch", "ok", None), ("normalize", "error", "bad_image"), ("save", "ok", None),
                                 ("item", "error", "bad_image")]
    cached = [r["cached"] for r in events if r["stage"] == "caption"]
    assert sorted(cached) == [False, True]

    # what the store keeps for a Health page on any task
    # (`save`: the run's previous save, so the item saved first has none; see the test below)
    for name in ("a.jpg", "a-copy.jpg"):
        assert set(by_id[name].stage_ms) - {"save"} == {"fetch", "normalize", "checks", "caption", "summarize"}
        assert all(v >= 0 for v in by_id[name].stage_ms.values()) and by_id[name].error_kind is None
    assert bad.error_kind == "bad_image" and set(bad.stage_ms) - {"save"} == {"fetch", "normalize"}
    assert "damaged" in bad.error or "not a readable image" in bad.error  # the person's message is unchanged

    # in-process metrics
    assert reg is registry()
    assert reg.counter(metrics.ITEMS_OK) == 2 and reg.counter(metrics.ITEMS_FAILED) == 1
    assert reg.counter(metrics.ITEMS_FAILED, ErrorKind="bad_image") == 1
    assert reg.counter(metrics.CAPTION_CACHE_HITS) == 1 and reg.counter(metrics.CAPTION_CACHE_MISSES) == 1
    assert reg.counter(metrics.OPENAI_INPUT_TOKENS) == 88 and reg.counter(metrics.OPENAI_OUTPUT_TOKENS) == 8
    assert reg.histogram(metrics.STAGE_LATENCY, Stage="caption").count == 2
    assert reg.histogram(metrics.STAGE_LATENCY, Stage="fetch").count == 3
    assert reg.histogram(metrics.STAGE_LATENCY, Stage="caption").quantile(0.95) is not None

    # EMF: every document valid, and the metrics the alarms and the CloudWatch dashboard read are there
    docs = [r for r in rows if "_aws" in r]
    for doc in docs:
        assert_emf(doc)
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in docs} == {"TaggerTest"}
    latency = [d for d in docs if "StageLatency" in d]
    assert {d["Stage"] for d in latency} == set(STAGES)
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage"]] for d in latency)
    [failed] = [d for d in docs if "ItemsFailed" in d]
    assert failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[], ["ErrorKind"]] and failed["ErrorKind"] == "bad_image"
    assert failed["ItemsFailed"] == 1 and failed["item_id"] == bad.id
    assert sum(d["ItemsOk"] for d in docs if "ItemsOk" in d) == 2
    assert sum(d["OpenAiInputTokens"] for d in docs if "OpenAiInputTokens" in d) == 88
    assert sum(d["CaptionCacheHits"] for d in docs if "CaptionCacheHits" in d) == 1


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_whatever_a_caller_logs_the_formatter_removes_secrets_urls_queries_and_bytes(fmt, unconfigure, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    out = io.StringIO()
    configure_logging("DEBUG", fmt, stream=out, secrets=["a-key-with-no-known-shape-42"])
    log = logging.getLogger("pipeline.anything")
    presigned = f"https://bucket.s3.amazonaws.com/uploads/p.jpg?{PRESIGNED_QUERY}"
    log.info("fetching %s with key %s and a-key-with-no-known-shape-42", presigned, API_KEY,
             extra={"url": presigned, "photo": jpeg_bytes(size=(64, 64)), "api_key": "anything", "headers": {"Authorization": f"Bearer {API_KEY}"},
                    "batch_id": 3})
    log.info("photo bytes %r", jpeg_bytes(size=(32, 32)))
    log.info("inline data:image/jpeg;base64,%s", "QUJD" * 100)
    try:
        raise ServiceError(f"S3 refused {presigned} (token={SESSION_TOKEN})")
    except ServiceError:
        log.exception("upload failed")
    text = out.getvalue()
    for secret in [*PLANTED, "a-key-with-no-known-shape-42", "QUJDQUJD", "\\xff\\xd8"]:
        assert secret not in text, (secret, text)
    assert text.count("https://bucket.s3.amazonaws.com/uploads/p.jpg?[query removed]") >= 3  # where it went stays readable
    assert "fetching" in text and "upload failed" in text and "ServiceError" in text
    if fmt == "json":
        first = json.loads(text.splitlines()[0])
        assert first["batch_id"] == 3 and first["api_key"] == "[redacted]" and first["photo"].endswith("bytes removed]")


def test_the_cli_keeps_its_report_alone_on_stdout_and_logs_json_and_emf_on_stderr(tmp_path, tiny_model):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(seed=1))
    (tmp_path / "b.jpg").write_bytes(jpeg_bytes(seed=2))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update({"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "MAX_NEW_TOKENS": "6", "CAPTIONER": "local",
                "LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "METRICS_FORMAT": "emf"})
    result = subprocess.run([sys.executable, "-m", "pipeline", "tag", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"),
                             "--out", str(tmp_path / "r.csv"), "--summarizer", "offline", "--concurrency", "1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["2 tagged, 0 failed"], result.stdout  # the report's line, nothing else
    structured = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [r for r in structured if r.get("logger") == "pipeline.items"]
    per_item: dict[int, list[str]] = {}
    for r in events:  # photos are read in parallel: the order holds per item
        per_item.setdefault(r["item_id"], []).append(r["stage"])
    assert list(per_item.values()) == [STAGES + ["item"]] * 2, (per_item, result.stderr[-3000:])
    assert all(r["outcome"] == "ok" for r in events)
    emf = [r for r in structured if "_aws" in r]
    for doc in emf:
        assert_emf(doc)
    assert sum(d.get("ItemsOk", 0) for d in emf) == 2


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_both_stores_keep_stage_timings_and_the_error_kind(kind, tmp_path):
    from support.images import jpeg_bytes as _  # noqa: F401 - same helpers as the runner tests

    def check(store) -> None:
        batch = store.create_batch("b", "t", IngestReport(items=[SourceItem(source="x", ref=SourceRef("file", "/x.jpg"))]))
        [item] = store.list_items(batch.id)
        assert item.stage_ms == {} and item.error_kind is None  # nothing processed yet
        assert store.save_error(item.id, "The image URL did not answer in time.", [], error_kind="fetch_timeout",
                                stage_ms={"fetch": 10000.5})
        failed = store.get_item(item.id)
        assert failed.error_kind == "fetch_timeout" and failed.stage_ms == {"fetch": 10000.5}
        assert [i.error_kind for i in store.list_items(batch.id)] == ["fetch_timeout"]

    if kind == "sqlite":
        path = tmp_path / "store.sqlite3"
        check(SqliteStore(path))
        import sqlite3  # a database from before these columns: opening it adds them (MIGRATIONS)

        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE items DROP COLUMN stage_ms")
            db.execute("ALTER TABLE items DROP COLUMN error_kind")
        reopened = SqliteStore(path)
        [old] = reopened.list_items(1)
        assert old.stage_ms == {} and old.error_kind is None
        return
    with mock_aws():
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "observability-test")
        store.create_table()
        check(store)


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_each_save_stores_the_previous_saves_time_so_health_shows_a_save_stage(kind, tmp_path, stages, unconfigure):
    """A write cannot hold its own duration and a second write per item would be paid for: each save stores the run's
    previous save's duration (as logged with that item), with no write of its own, and the Health page's per-stage
    p50 / p95 include `save`."""
    from dataclasses import replace

    from pipeline.admin.analytics import health, percentile, utc_now
    from datetime import timedelta

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    photos = []
    for seed in range(4):
        photos.append(tmp_path / f"p{seed}.jpg")
        photos[-1].write_bytes(jpeg_bytes(size=(200, 160), seed=seed))
    with mock_aws():
        if kind == "dynamodb":
            store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "save-times")
            store.create_table()
        else:
            store = stages.store
        batch = store.create_batch("b", "t", IngestReport(items=[SourceItem(source=p.name, ref=SourceRef("file", str(p))) for p in photos]))
        start = utc_now()
        assert run_batch(replace(stages, store=store), batch.id, concurrency=2).ok == 4
        items = {i.id: i for i in store.list_items(batch.id)}
        report = health(store, start - timedelta(minutes=1), utc_now() + timedelta(minutes=1))
    logged = {r["item_id"]: r["duration_ms"] for r in lines_of(out) if r.get("stage") == "save"}
    assert set(logged) == set(items)
    stored = {item_id: item.stage_ms["save"] for item_id, item in items.items() if "save" in item.stage_ms}
    assert 1 <= len(stored) < len(items)  # the first save has no previous one; the last one's time is only logged
    for item_id, ms in stored.items():
        assert ms in [logged[other] for other in logged if other != item_id]  # another item's whole save, as logged
    [save_row] = [s for s in report.stages if s.stage == "save"]
    assert [s.stage for s in report.stages][-1] == "save"
    assert (save_row.count, save_row.p50_ms, save_row.p95_ms) == (
        len(stored), percentile(stored.values(), 50), percentile(stored.values(), 95))


def test_a_result_saved_after_a_failure_clears_the_error_kind(tmp_path, stages):
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(seed=4))
    store = stages.store
    batch = store.create_batch("b", "t", IngestReport(items=[SourceItem(source="p.jpg", ref=SourceRef("file", str(tmp_path / "p.jpg")))]))
    [item] = store.list_items(batch.id)
    store.save_error(item.id, "x", [], error_kind="caption_failed", stage_ms={"fetch": 1.0})
    progress = run_batch(stages, batch.id, retry_failed=True)
    assert progress.ok == 1
    done = store.get_item(item.id)
    assert done.error_kind is None and {"fetch", "caption", "summarize"} <= set(done.stage_ms)


def quota_error():
    with FakeOpenAI() as server:
        server.state.default = Reply(status=429, error_code="insufficient_quota", error_type="insufficient_quota")
        try:
            summarizer_for(server.base_url).summarize(_request())
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            return exc
    raise AssertionError("no error")


def rate_limit_error():
    with FakeOpenAI() as server:
        server.state.default = Reply(status=429, error_code="rate_limit_exceeded", error_type="requests")
        try:
            summarizer_for(server.base_url).summarize(_request())
        except Exception as exc:  # noqa: BLE001
            return exc
    raise AssertionError("no error")


def _request():
    from pipeline.attributes import map_answers
    from pipeline.models import SummaryRequest

    return SummaryRequest(caption="a red sneaker", attributes=map_answers(SCHEMA, {"color": "red"}), checks=None, hints={})


def test_error_kinds_are_short_stable_codes_for_the_failures_the_pipeline_raises():
    from pipeline.images.normalize import normalize_image

    assert error_kind(quota_error(), "summarize") == "summary_quota"
    assert error_kind(rate_limit_error(), "summarize") == "summary_rate_limited"
    try:
        normalize_image(b"not an image at all")
    except BadInputError as exc:
        assert error_kind(exc, "normalize") == "bad_image"
    assert error_kind(BadInputError("The image URL did not answer in time."), "fetch") == "fetch_timeout"
    assert error_kind(BadInputError("The file is 30 MB; the limit is 25 MB."), "fetch") == "fetch_too_large"
    assert error_kind(BadInputError("The image URL points to a private or internal address (10.0.0.1); only public web "
                                    "addresses are allowed."), "fetch") == "fetch_blocked"
    assert error_kind(ServiceError("The captioning endpoint failed; try again."), "caption") == "caption_failed"
    try:
        raise ServiceError("The endpoint did not answer.") from TimeoutError("read timed out")
    except ServiceError as exc:
        assert error_kind(exc, "caption") == "caption_timeout"
    assert error_kind(KeyError("boom"), "caption") == "caption_unexpected"


def test_an_item_that_passes_its_deadline_is_saved_as_item_timeout(tmp_path, stages):
    """The runner stops waiting at ITEM_DEADLINE_S; the store and the item event say item_timeout."""
    import threading
    from dataclasses import replace

    from pipeline.batches.runner import LeaseOptions

    release = threading.Event()
    entered = threading.Event()

    class HeldCaptioner:
        model_id = stages.captioner.model_id

        def caption(self, image, questions):
            entered.set()
            release.wait(60)  # no model call after this: a thread still running torch at exit aborts the process
            return CaptionResult(caption="a shoe", answers={}, model_id=self.model_id), Usage("local", self.model_id)

    class StepClock:  # moves only when the runner has reached the caption call: no race with real work
        def __init__(self):
            self.now = 1000.0

        def __call__(self):
            if entered.is_set():
                self.now += 5.0
            return self.now

    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(seed=5))
    store = stages.store
    batch = store.create_batch("b", "t", IngestReport(items=[SourceItem(source="p.jpg", ref=SourceRef("file", str(tmp_path / "p.jpg")))]))
    held = replace(stages, captioner=HeldCaptioner(), leases=LeaseOptions(item_deadline_s=30, poll_s=0.01))
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    try:
        progress = run_batch(held, batch.id, clock=StepClock())
    finally:
        release.set()
        configure_logging("WARNING", "text", stream=io.StringIO())
    assert progress.timed_out == 1
    [item] = store.list_items(batch.id)
    assert item.error_kind == "item_timeout" and {"fetch", "normalize", "checks"} <= set(item.stage_ms)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["stage"], e["outcome"], e["error_kind"]) for e in events if e.get("stage") == "item"] == [("item", "error", "item_timeout")]


def test_nothing_is_logged_or_counted_before_an_entry_point_configures_it(capsys):
    configure_metrics("off")
    trace = ItemTrace(1, 2)
    with trace.stage("fetch"):
        time.sleep(0)
    trace.finish(ok=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "fetch" not in captured.err  # a library user sees nothing unless they ask
    assert trace.stage_ms.keys() == {"fetch"}


def test_log_settings_accept_any_case_and_refuse_unknown_values_in_one_line(tmp_path):
    from pydantic import ValidationError

    settings = Settings(_env_file=None, log_level="info", log_format="JSON", metrics_format="EMF")
    assert (settings.log_level, settings.log_format, settings.metrics_format) == ("INFO", "json", "emf")
    with pytest.raises(ValidationError):
        Settings(_env_file=None, log_format="xml")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update({"DATA_DIR": str(tmp_path / "data"), "LOG_FORMAT": "xml"})
    result = subprocess.run([sys.executable, "-m", "pipeline", "estimate", "--images-per-month", "10"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: setting LOG_FORMAT:") and "Traceback" not in result.stderr


def test_text_lines_carry_the_same_fields_for_a_person_at_a_terminal(unconfigure):
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    trace = ItemTrace(7, 42)
    with pytest.raises(BadInputError):
        with trace.stage("normalize"):
            raise BadInputError("The image file is damaged or incomplete and cannot be read.")
    [line] = out.getvalue().splitlines()
    assert " INFO pipeline.items: normalize error " in line
    for field in ("batch_id=7", "item_id=42", 'stage="normalize"', "duration_ms=", 'outcome="error"', 'error_kind="bad_image"'):
        assert field in line, field
    assert trace.error_kind == "bad_image" and trace.failed_stage == "normalize"


def test_a_batch_the_worker_cannot_run_is_logged_for_operators_with_its_traceback_redacted(stages, unconfigure, tmp_path):
    """The page shows one sentence; the operator's log gets the batch id, the error type and the traceback,
    with the secret the exception carried removed."""
    from dataclasses import replace

    from pipeline.batches.worker import BatchWorker

    class Exploding:
        model_id = "exploding"

        def warm_up(self):
            raise RuntimeError(f"loader crashed calling https://hub.example/m?token={SESSION_TOKEN} with {API_KEY}")

    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(seed=6))
    batch = stages.store.create_batch("b", "t", IngestReport(items=[SourceItem(source="p.jpg", ref=SourceRef("file", str(tmp_path / "p.jpg")))]))
    out = io.StringIO()
    configure_logging("WARNING", "json", stream=out)
    worker = BatchWorker(replace(stages, captioner=Exploding()), concurrency=1)
    worker.submit(batch.id)
    assert worker.wait_idle(60)
    assert worker.view(batch.id).problem.startswith("Processing stopped: Unexpected problem")  # the page's sentence
    [event] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (event["logger"], event["level"], event["batch_id"], event["error_type"]) == ("pipeline.batches", "WARNING", batch.id, "RuntimeError")
    assert "Traceback" in event["exception"] and "warm_up" in event["exception"]
    assert SESSION_TOKEN not in out.getvalue() and API_KEY not in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_basic_credentials_and_url_encoded_keys_are_redacted(fmt, unconfigure, monkeypatch):
    """`Authorization: Basic <base64 user:password>` loses the credential whatever the header's form, and a key
    written URL-encoded (sk%2D…, in a query or form body) goes like the plain one."""
    monkeypatch.setenv("OPENAI_API_KEY", "no-shape-but-SECRET-value-7")
    out = io.StringIO()
    configure_logging("DEBUG", fmt, stream=out)
    log = logging.getLogger("pipeline.anything")
    basic = "dXNlcjpwYXNzd29yZA=="  # user:password
    log.info("request headers Authorization: Basic %s", basic)
    log.info("headers %s", {"Authorization": f"Basic {basic}"})
    log.info("httpx pairs %s", [(b"authorization", f"Basic {basic}".encode())])
    log.info("proxy-authorization=Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgI")
    encoded = API_KEY.replace("-", "%2D")
    log.info("form body api%%5Fkey%%3D%s&x=1 and %s alone", encoded, encoded.replace("%2D", "%2d"))
    log.info("quoted secret %s", "no-shape-but-SECRET-value-7".replace("-", "%2D"))
    text = out.getvalue()
    for secret in (basic, "dXNlcjpwYXNzd29yZA", "PLANTEDkey0123456789", "YIIGhgYGKwYBBQUC", "SECRET%2Dvalue",
                   "SECRET-value"):
        assert secret not in text, (secret, text)
    assert "Basic [redacted]" in text and "form body" in text
    log.info("a basic white mug, basic colours")  # an ordinary word is not a scheme
    assert "a basic white mug, basic colours" in out.getvalue()


def test_a_newline_in_a_text_log_line_cannot_forge_another_entry(unconfigure):
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    log = logging.getLogger("pipeline.anything")
    forged = "12:00:00 ERROR pipeline.admin: admin rights granted to mallory"
    log.info("photo name %s", f"mug.jpg\n{forged}", extra={"source": f"a.jpg\r\n{forged}"})
    try:
        raise BadInputError(f"bad caption\n{forged}")
    except BadInputError:
        log.exception("caption refused\r%s", forged)
    lines = out.getvalue().splitlines()
    entries = [line for line in lines if not line.startswith(" ")]  # continuation lines (a traceback) are indented
    assert len(entries) == 2 and all(" INFO pipeline.anything: " in e or " ERROR pipeline.anything: " in e for e in entries), lines
    assert not any(line.startswith("12:00:00 ERROR pipeline.admin") for line in lines)
    assert "mug.jpg\\n12:00:00 ERROR pipeline.admin" in entries[0] and "caption refused\\r12:00:00" in entries[1]
    assert any("BadInputError: bad caption" in line for line in lines)


BROKEN_PAGE = '''
import logging

from streamlit.logger import get_logger

from dashboard.runtime import get_runtime

get_runtime()
get_logger("streamlit.made_after_start").warning("Streamlit logger with its own handler: key %s", "{key}")
logging.getLogger("dashboard.page").warning("page line one\\nforged second line with {key}")
raise ValueError("page broke with {key}\\nsecond line of the message")
'''


def test_the_dashboard_server_writes_only_redacted_json_lines_to_stderr_even_for_a_page_exception(tmp_path, tiny_model):
    """LOG_FORMAT=json on a real `streamlit run`, page opened in Chromium: the page's uncaught exception (printed by
    Streamlit with Rich and colours unless told otherwise) and Streamlit's own loggers come out as JSON lines, one
    object per line, with the key removed."""
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_FLAGS, REPO, free_port, wait_healthy

    page_file = tmp_path / "broken.py"
    page_file.write_text(BROKEN_PAGE.format(key=API_KEY))
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
           "AUTH_MODE": "dev", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "OPENAI_API_KEY": API_KEY, "PYTHONPATH": str(REPO),
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    command = [sys.executable, "-m", "streamlit", "run", str(page_file), "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            started = errors.stat().st_size  # Streamlit's start-up lines come before any of our code runs
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                page = browser.new_page()
                page.goto(url)
                page.get_by_test_id("stException").wait_for(timeout=60_000)  # the page ran and failed
                shown = page.get_by_test_id("stException").inner_text()
                browser.close()
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    text = errors.read_bytes()[started:].decode()
    assert "PLANTEDkey" not in errors.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines]  # every line is one JSON object
    assert "PLANTEDkey" not in text and "\x1b[" not in text
    [failure] = [row for row in rows if row["logger"] == "streamlit.error_util"]
    assert failure["level"] == "ERROR" and "ValueError: page broke with [redacted]" in failure["exception"]
    assert failure["error_type"] == "ValueError" and failure["error"].startswith("page broke with [redacted]")
    # the browser gets Streamlit's generic sentence only (client.showErrorDetails = "none"): no type, message, path
    assert "encountered an error" in shown and not any(t in shown for t in ("page broke", "ValueError", "broken.py", "Traceback"))
    assert any(row["logger"] == "streamlit.made_after_start" for row in rows)
    assert any(row["logger"] == "dashboard.page" and "forged second line" in row["message"] for row in rows)


def test_the_container_command_writes_only_json_lines_on_stdout_and_stderr(tmp_path):
    """The Dockerfile's CMD with its ENV (LOG_FORMAT=json, LOG_LEVEL=INFO, METRICS_FORMAT=emf, CAPTIONER=sagemaker,
    AUTH_MODE=alb), started here on a free port: from the first line (Streamlit prints a welcome text with the URLs)
    through a page view whose worker resumes a batch left unfinished (stage events, EMF metrics, a captioning failure
    against an unreachable endpoint) to SIGTERM (Streamlit prints "Stopping..."), every non-empty line on stdout and
    on stderr is one JSON object with a level and a message (or an EMF document), and no secret is in any."""
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_FLAGS, REPO, free_port
    from test_dockerfile import instructions

    from pipeline.ingest.sources import collect_sources
    from pipeline.service import ingest_limits

    [cmd] = [json.loads(rest) for keyword, rest in instructions() if keyword == "CMD"]
    image_env: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            image_env.update(word.split("=", 1) for word in rest.split() if "=" in word)
    port = free_port()
    assert cmd[0] == "python" and "--server.port=8501" in cmd
    command = [sys.executable, *(f"--server.port={port}" if arg == "--server.port=8501" else arg for arg in cmd[1:])]
    data = tmp_path / "data"
    secret = "PLANTEDsecretAccessKey0123456789"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LOG_", "METRICS_", "STREAMLIT_"))}
    env.update({name: value for name, value in image_env.items() if name not in ("PATH", "DATA_DIR")})
    env.update({"DATA_DIR": str(data), "OPENAI_API_KEY": API_KEY, "AWS_ACCESS_KEY_ID": "AKIAPLANTED000000000",
                "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert (env["LOG_FORMAT"], env["LOG_LEVEL"], env["CAPTIONER"]) == ("json", "INFO", "sagemaker")
    # A batch a previous server left unfinished: the first page view's worker resumes it (stage events, metrics).
    settings = Settings(_env_file=None, data_dir=data)
    data.mkdir()
    photo = data / "one.jpg"
    photo.write_bytes(jpeg_bytes())
    store = SqliteStore(settings.db_path)
    batch = store.create_batch("left over", "ann", collect_sources([photo], ingest_limits(settings)))

    out_file, err_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, err_file.read_text()[-3000:]
                assert time.monotonic() < deadline, "the dashboard did not answer /_stcore/health"
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.3)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                page = browser.new_page()
                page.goto(url)
                page.get_by_test_id("stAlert").first.wait_for(timeout=60_000)  # no ALB sign-in here: the page says so
                browser.close()
            deadline = time.monotonic() + 90
            while store.get_batch(batch.id).done < 1:  # ok + failed
                assert time.monotonic() < deadline, "the resumed batch did not finish"
                time.sleep(0.2)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    rows = {}
    for name, path in (("stdout", out_file), ("stderr", err_file)):
        text = path.read_text()
        assert secret not in text and "PLANTEDkey" not in text and "\x1b[" not in text
        rows[name] = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
        assert all(isinstance(row, dict) for row in rows[name])
        for row in rows[name]:
            assert "_aws" in row or (row["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") and row["message"]), row
    assert {"logger": "stdout", "level": "INFO", "message": "Stopping..."}.items() <= rows["stdout"][-1].items()
    stages = [row["stage"] for row in rows["stderr"] if row.get("logger") == "pipeline.items" and row["item_id"] == 1]
    assert stages[-1] == "item" and "caption" in stages
    assert any("_aws" in row for row in rows["stderr"])
    assert [row for row in rows["stderr"] if row.get("logger") == "stderr"] == []  # nothing known left to the catch-all
    assert rows["stderr"][0]["message"] == "dashboard server starting"


def test_json_line_stream_turns_printed_text_into_redacted_objects_and_passes_json_lines_through():
    """What dashboard/serve.py puts in place of stdout/stderr: a line printed in pieces (click's nl=False, then a
    flush) is one object, colours are stripped, blank lines dropped, secrets and query strings removed, a JSON line
    (a log record, an EMF document) is written as it is, an unterminated last line is written on close."""
    from pipeline.observability.logs import JsonLineStream, Redactor

    out = io.StringIO()
    stream = JsonLineStream(out, "stdout", "INFO", Redactor([API_KEY]))
    stream.write("\n  \x1b[34mURL: \x1b[0m")
    stream.flush()
    assert out.getvalue() == ""  # the line is not finished yet
    stream.write(f"http://h/p.jpg?X-Amz-Signature=abc\n\n{{\"_aws\": {{}}, \"x\": 1}}\nkey {API_KEY}")
    stream.close()
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [row.get("message") for row in rows] == ["URL: http://h/p.jpg?[query removed]", None, "key [redacted]"]
    assert rows[1] == {"_aws": {}, "x": 1, "printed_to": "stdout"} and {rows[0]["logger"], rows[2]["level"]} == {"stdout", "INFO"}
    assert rows[0]["printed_to"] == rows[2]["printed_to"] == "stdout"
    assert not out.closed  # the real stream stays usable


def test_the_container_command_with_a_bad_log_setting_says_so_in_one_line():
    """dashboard/serve.py reads the settings before Streamlit starts: a wrong value is one `error:` line, exit 2."""
    from test_browser import REPO

    env = {**os.environ, "LOG_FORMAT": "xml"}
    result = subprocess.run([sys.executable, "-m", "dashboard.serve", "--server.port=1"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: setting LOG_FORMAT:") and len(result.stderr.splitlines()) == 1, result.stderr


def test_items_summarized_through_the_batch_api_keep_their_stage_timings_and_error_kind(make_settings, local_captioner,
                                                                                        unconfigure, tmp_path):
    """A Cheapest run (summaries through OpenAI's Batch API: tests/support's fake with the real `openai` client) saves
    its items long after they were captioned: they keep their fetch .. caption timings for the Health page (the
    caption stage logged and counted as a real-time run's is), and the line OpenAI's filter refused fails its item
    with an error kind instead of `unclassified`."""
    from test_openai_batch import Clock, answer, new_batch

    from pipeline.service import build_stages

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    with FakeOpenAI() as server:
        lines = []

        def responder(request):
            if any(h == {} for h in server.state.headers[-1:]):  # a batch line
                lines.append(request)
                if len(lines) == 2:
                    return Reply(status=400, error_code="content_filter", error_type="invalid_request_error")
            return Reply(content=answer())

        server.state.responder = responder
        stages = build_stages(make_settings(summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                                            openai_batch_min_items=2, openai_max_retries=0), captioner=local_captioner)
        clock = Clock()
        stages.batch_summarizer.clock, stages.batch_summarizer.wait = clock, clock.wait
        batch = new_batch(stages, tmp_path)
        progress = run_batch(stages, batch.id, concurrency=2, cheapest=True)
    assert (progress.ok, progress.failed) == (3, 1)
    items = stages.store.list_items(batch.id)
    for item in items:
        assert {"fetch", "normalize", "checks", "caption"} <= set(item.stage_ms), item.stage_ms
    [refused] = [i for i in items if i.status == "error"]
    assert refused.error_kind == "summary_refused"
    captions = [r for r in lines_of(out) if r.get("stage") == "caption"]
    assert sorted(r["item_id"] for r in captions) == sorted(i.id for i in items) and all("cached" in r for r in captions)


def _save_chain(rows: list[dict]) -> list[tuple[int, float]]:
    """(item id, duration) of each save that ended well, in the order they were logged."""
    return [(r["item_id"], r["duration_ms"]) for r in rows if r.get("stage") == "save" and r["outcome"] == "ok"]


def _assert_each_save_stores_the_previous_one(chain: list[tuple[int, float]], items: dict) -> None:
    """Saves one after another in one process run: the first stores no `save`, each later one the one before it."""
    assert chain
    assert "save" not in items[chain[0][0]].stage_ms, items[chain[0][0]].stage_ms
    for (_, before_ms), (item_id, _) in zip(chain, chain[1:]):
        assert items[item_id].stage_ms.get("save") == before_ms, (item_id, items[item_id].stage_ms, before_ms)


def test_batch_api_items_get_their_item_event_and_counters_once_across_a_crash_and_a_resume(make_settings, local_captioner,
                                                                                          unconfigure, tmp_path):
    """A Cheapest run saves its items when OpenAI's batch answers: each then gets its `save` stage, its `item` event and
    ItemsOk / ItemsFailed (by kind), once. The process dies in the middle of those saves (two saved, the third's write
    killed); the resumed run collects the same OpenAI batch for the other two. Over both runs (the EMF lines both
    wrote): 3 ok and 1 summary_refused, one `item` event per item, the summaries' tokens as the ledger has them, and
    each stored `save` is the duration of the save before it in the same run (tests/support's fake OpenAI with the
    real `openai` client)."""
    from test_openai_batch import Clock, Killed, answer, new_batch

    from pipeline.service import build_stages

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    reg = configure_metrics("off")
    with FakeOpenAI() as server:
        lines = []

        def responder(request):
            if any(h == {} for h in server.state.headers[-1:]):  # a batch line
                lines.append(request)
                if len(lines) == 2:
                    return Reply(status=400, error_code="content_filter", error_type="invalid_request_error")
            return Reply(content=answer(), prompt_tokens=300, completion_tokens=40)

        server.state.responder = responder

        def new_process():
            stages = build_stages(make_settings(summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                                                openai_batch_min_items=2, openai_max_retries=0), captioner=local_captioner)
            clock = Clock()
            stages.batch_summarizer.clock, stages.batch_summarizer.wait = clock, clock.wait
            return stages

        first = new_process()
        batch = new_batch(first, tmp_path)
        writes: list[int] = []
        save_result, save_error = first.store.save_result, first.store.save_error

        def dies_at_the_third_write(real):
            def write(item_id, *args, **kwargs):
                writes.append(item_id)
                if len(writes) == 3:
                    raise Killed  # the process dies inside the third item's save
                return real(item_id, *args, **kwargs)
            return write

        first.store.save_result, first.store.save_error = dies_at_the_third_write(save_result), dies_at_the_third_write(save_error)
        with pytest.raises(Killed):
            run_batch(first, batch.id, concurrency=2, cheapest=True, owner="gone-host/1/a")
        crashed_at = len(out.getvalue())
        assert [i.status for i in first.store.list_items(batch.id)].count("pending") == 2
        assert reg.counter(metrics.ITEMS_OK) + reg.counter(metrics.ITEMS_FAILED) == 2

        resumed = new_process()  # after a restart, as a plain resume (leases of the dead run expired)
        progress = run_batch(resumed, batch.id, concurrency=2, clock=lambda: time.time() + 3600)
    assert (progress.ok, progress.failed) == (2, 0) and len(server.state.batch_creates) == 1
    items = {i.id: i for i in resumed.store.list_items(batch.id)}
    [refused] = [i for i in items.values() if i.status == "error"]
    assert refused.error_kind == "summary_refused" and sum(i.status == "ok" for i in items.values()) == 3

    rows = lines_of(out)
    ended = [r for r in rows if r.get("stage") == "item"]
    assert sorted(r["item_id"] for r in ended) == sorted(items)  # one each, over both runs
    for row in ended:
        item = items[row["item_id"]]
        assert row["outcome"] == ("ok" if item.status == "ok" else "error") and row["error_kind"] == item.error_kind
        assert {"fetch", "normalize", "checks", "caption", "save"} <= set(row["stage_ms"])
    assert reg.counter(metrics.ITEMS_OK) == 3 and reg.counter(metrics.ITEMS_FAILED) == 1
    assert reg.counter(metrics.ITEMS_FAILED, ErrorKind="summary_refused") == 1
    ledger = [u for u in resumed.store.usage(batch.id) if u.kind in ("llm", "llm_batch")]
    assert ledger and reg.counter(metrics.OPENAI_INPUT_TOKENS) == sum(u.input_tokens for u in ledger)
    assert reg.counter(metrics.OPENAI_OUTPUT_TOKENS) == sum(u.output_tokens for u in ledger)

    # Health's save stage: each run's saves one after another, each storing the one before it
    first_run = json.loads("[" + ",".join(out.getvalue()[:crashed_at].splitlines()) + "]")
    second_run = json.loads("[" + ",".join(out.getvalue()[crashed_at:].splitlines()) + "]")
    assert len(_save_chain(first_run)) == 2 and len(_save_chain(second_run)) == 2
    for run_rows in (first_run, second_run):
        _assert_each_save_stores_the_previous_one(_save_chain(run_rows), items)
        # each item reaching its save logged its summary's outcome first (the run's round with OpenAI as its time)
        summarized = [r for r in run_rows if r.get("stage") == "summarize"]
        assert [r["item_id"] for r in summarized] == [r["item_id"] for r in run_rows if r.get("stage") == "save"]
        for row in summarized:
            refused_line = row["item_id"] == refused.id
            assert (row["outcome"], row["error_kind"], row["openai_batch"]) == (
                ("error", "summary_refused", True) if refused_line else ("ok", None, True))
    assert reg.histogram(metrics.STAGE_LATENCY, Stage="summarize") is None  # not the item's own time: no sample
    for item in items.values():
        assert {"fetch", "normalize", "checks", "caption"} <= set(item.stage_ms), item.stage_ms


@pytest.fixture
def transform_aws(monkeypatch):
    from support import moto_sagemaker

    with moto_sagemaker.endpoint_in_moto(monkeypatch) as clients:
        yield clients


def test_batch_transform_items_store_the_previous_saves_time_and_count_once(transform_aws, make_settings, monkeypatch,
                                                                              responder, unconfigure, tmp_path):
    """A batch transform job's items (saved when the job's answers are ingested, or when the job is prepared for a cached
    or unreadable photo) follow the runner's save design: each save is a `save` stage, the item stores the previous save's
    duration of the same process run, then one `item` event and ItemsOk / ItemsFailed (the job failed before its third
    photo: caption_failed); each photo the job captioned is one EndpointInvocations. Ingesting the job again (a crash
    right after) counts nothing twice. moto + the emulated job running the real SageMaker handler; one photo at a time,
    so the saves follow one another."""
    from test_batch_transform import TRANSFORM_S3, photos

    from pipeline.batches.batch_transform import BatchTransformRunner
    from pipeline.service import build_stages, create_batch
    from support.sagemaker_emulator import TransformEmulator

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    reg = configure_metrics("off")
    settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05, concurrency=1)
    stages = build_stages(settings)
    runner = BatchTransformRunner.from_settings(settings, stages)
    TransformEmulator(responder, fail_after=2).install(monkeypatch)  # the job fails before its third photo

    batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2, 3, 1]), name="big", created_by="ann")
    prepared_at = len(out.getvalue())
    job = runner.run(batch.id)
    assert job.status == "Ingested"
    items = {i.id: i for i in stages.store.list_items(batch.id)}
    failed = {i.id for i in items.values() if i.status == "error"}
    assert failed and all(items[i].error_kind == "caption_failed" for i in failed)
    rows = lines_of(out)
    ended = [r for r in rows if r.get("stage") == "item"]
    assert sorted(r["item_id"] for r in ended) == sorted(items)
    assert all(r["outcome"] == ("error" if r["item_id"] in failed else "ok") for r in ended)
    assert reg.counter(metrics.ITEMS_OK) == 4 - len(failed) and reg.counter(metrics.ITEMS_FAILED, ErrorKind="caption_failed") == len(failed)
    invocations = sum(u.invocations for u in stages.store.usage(batch.id) if u.kind == "transform")
    assert invocations == 2 and reg.counter(metrics.ENDPOINT_INVOCATIONS) == invocations  # a copy shares its photo's
    for item in items.values():
        assert {"fetch", "normalize", "checks", "caption"} | ({"summarize"} if item.status == "ok" else set()) <= set(item.stage_ms)
    _assert_each_save_stores_the_previous_one(_save_chain(rows), items)
    assert sum("save" in i.stage_ms for i in items.values()) == 3

    runner.ingest(job)  # again, as after a crash right after the ingest
    assert [r for r in lines_of(out) if r.get("stage") == "item"] == ended
    assert (reg.counter(metrics.ITEMS_OK), reg.counter(metrics.ITEMS_FAILED)) == (4 - len(failed), len(failed))

    # photos finished while the job is prepared: one cached, one unreadable (no job started)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes(size=(640, 480), seed=9)[:2000])  # a JPEG header, the picture cut off
    again = create_batch(stages.store, settings, photos(tmp_path, [2], name="q") + [broken], name="again", created_by="ann")
    before = len(out.getvalue())
    assert runner.run(again.id) is None
    items = {i.id: i for i in stages.store.list_items(again.id)}
    rows = lines_of(io.StringIO(out.getvalue()[before:]))
    by_id = {r["item_id"]: r for r in rows if r.get("stage") == "item"}
    assert sorted(by_id) == sorted(items)
    assert sorted((r["outcome"], r["error_kind"]) for r in by_id.values()) == [("error", "bad_image"), ("ok", None)]
    assert reg.counter(metrics.ITEMS_OK) == 5 - len(failed) and reg.counter(metrics.ITEMS_FAILED, ErrorKind="bad_image") == 1
    _assert_each_save_stores_the_previous_one(_save_chain(rows), items)
    assert prepared_at < before


def test_transform_items_summarized_through_the_batch_api_count_once_across_a_stop_and_restart(
        transform_aws, make_settings, monkeypatch, responder, unconfigure, tmp_path):
    """A job whose summaries go through OpenAI's Batch API (OPENAI_BATCH_FOR_JOBS) stops while OpenAI works and a new
    process picks it up. The job stopped before its third photo: those items fail (caption_failed) when the answers are
    read, once, although the restart reads them again; the others are saved with their summaries. Over both processes:
    one `item` event per item, ItemsOk / ItemsFailed as the store has them, one EndpointInvocations per photo captioned,
    and fetch .. caption plus each save storing the one before it in the restarted run."""
    from test_openai_batch import Clock, answer
    from test_batch_transform import TRANSFORM_S3, photos

    from pipeline.batches.batch_transform import BatchTransformRunner
    from pipeline.service import build_stages, create_batch
    from support.sagemaker_emulator import TransformEmulator
    from support.servers import BatchPlan

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    reg = configure_metrics("off")
    TransformEmulator(responder, fail_after=2).install(monkeypatch)
    with FakeOpenAI() as server:
        server.state.default = Reply(content=answer(), prompt_tokens=300, completion_tokens=40)
        server.state.batch_plan = BatchPlan(end="hold")
        settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05,
                                 summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                                 openai_batch_min_items=2, concurrency=1)
        stages = build_stages(settings)
        stop = threading.Event()

        def stop_while_waiting(cancel, seconds):
            stop.set()  # the dashboard goes away while OpenAI works on the summaries
            return True

        stages.batch_summarizer.clock, stages.batch_summarizer.wait = Clock(), stop_while_waiting
        batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2, 3, 4]), name="big", created_by="ann")
        job = BatchTransformRunner.from_settings(settings, stages).run(batch.id, cancel=stop)
        assert job.status == "Summarizing"
        failed_first = {i.id for i in stages.store.list_items(batch.id) if i.status == "error"}
        assert len(failed_first) == 2 and reg.counter(metrics.ITEMS_FAILED, ErrorKind="caption_failed") == 2
        assert reg.counter(metrics.ITEMS_OK) == 0
        restarted_at = len(out.getvalue())

        for openai_batch in server.state.batches.values():
            openai_batch["_plan"] = BatchPlan(looks_in_progress=0)
        restarted = build_stages(settings)
        clock = Clock()
        restarted.batch_summarizer.clock, restarted.batch_summarizer.wait = clock, clock.wait
        assert BatchTransformRunner.from_settings(settings, restarted).run(batch.id).status == "Ingested"
    items = {i.id: i for i in restarted.store.list_items(batch.id)}
    assert {i.id for i in items.values() if i.status == "error"} == failed_first
    assert all(items[i].error_kind == "caption_failed" for i in failed_first)
    rows = lines_of(out)
    ended = [r for r in rows if r.get("stage") == "item"]
    assert sorted(r["item_id"] for r in ended) == sorted(items)  # one each, over both processes
    assert all(r["outcome"] == ("error" if r["item_id"] in failed_first else "ok") for r in ended)
    assert reg.counter(metrics.ITEMS_OK) == 2 and reg.counter(metrics.ITEMS_FAILED) == 2
    invocations = sum(u.invocations for u in restarted.store.usage(batch.id) if u.kind == "transform")
    assert invocations == 2 and reg.counter(metrics.ENDPOINT_INVOCATIONS) == invocations
    for item in items.values():  # a failed read of the job's answer is a failed caption stage, timed as well
        assert {"fetch", "normalize", "checks", "caption"} <= set(item.stage_ms), item.stage_ms
    second_run = lines_of(io.StringIO(out.getvalue()[restarted_at:]))
    assert len(_save_chain(second_run)) == 2
    _assert_each_save_stores_the_previous_one(_save_chain(second_run), items)


class PageBroke(RuntimeError):
    """An exception class of a module of ours: `error_type` names its module too."""


def _deep(n: int) -> None:
    """A traceback longer than a log line's field: many frames (as Streamlit's own before the page's), two functions
    in turn so Python does not fold them into "[Previous line repeated …]"; a message longer than the field too."""
    if n:
        _deeper(n - 1)
    raise PageBroke(f"the innermost call broke with {API_KEY} at https://b.s3.amazonaws.com/p.jpg?{PRESIGNED_QUERY}\n"
                    + "second line" + " word" * 600)


def _deeper(n: int) -> None:
    _deep(n)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_logged_exception_keeps_its_type_message_and_most_recent_call(fmt, unconfigure):
    """Review item 1: the traceback's head is Streamlit's frames; its tail is the page's call and the exception line. A
    JSON line keeps the tail (bounded) and adds error_type and error (its message, redacted, bounded)."""
    from pipeline.observability.logs import MAX_ERROR, MAX_TEXT

    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out, secrets=[API_KEY])
    try:
        _deep(40)
    except PageBroke:
        logging.getLogger("dashboard.page").exception("Uncaught app execution")
    text = out.getvalue()
    assert not any(planted in text for planted in PLANTED)
    if fmt == "text":
        assert "PageBroke: the innermost call broke with [redacted]" in text and "raise PageBroke(" in text
        return
    [row] = lines_of(out)
    assert row["error_type"] == f"{__name__}.PageBroke"
    assert row["error"].startswith("the innermost call broke with [redacted] at https://b.s3.amazonaws.com/p.jpg?[query removed]")
    assert len(row["error"]) <= MAX_ERROR + 40
    trace = row["exception"]
    assert trace.startswith("Traceback (most recent call last):") and "characters cut]" in trace
    assert "raise PageBroke(" in trace and f"{__name__}.PageBroke: the innermost call broke with [redacted]" in trace
    assert len(trace) <= MAX_TEXT + 300


def test_json_printed_by_anyone_is_redacted_at_every_depth_and_emf_stays_valid_emf():
    """Review item 3: a printed line that is a JSON object used to pass verbatim (a key, a presigned URL survived)."""
    from pipeline.observability.logs import JsonLineStream, Redactor
    from pipeline.observability.metrics import Observation, emf_document

    out = io.StringIO()
    stream = JsonLineStream(out, "stdout", "INFO", Redactor([API_KEY]))
    forged = {"level": "INFO", "logger": "pipeline.items", "message": f"key {API_KEY}",
              "nested": {"url": f"https://b.s3.amazonaws.com/p.jpg?{PRESIGNED_QUERY}", "list": [API_KEY, 3, None, True]},
              "password": "hunter2hunter2", "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    emf = emf_document(Observation("OpenAiInputTokens", 123, "Count", "counter", {"Model": "gpt-4o"}, (("Model",),),
                                   {"batch_id": 7}), namespace="ProductTagger", timestamp_ms=int(time.time() * 1000))
    stream.write(json.dumps(forged) + "\n" + json.dumps(emf) + "\n")
    stream.close()
    text = out.getvalue()
    assert not any(planted in text for planted in [*PLANTED, "hunter2"]), text
    printed, metric = [json.loads(line) for line in text.splitlines()]
    assert printed["message"] == "key [redacted]" and printed["nested"]["list"] == ["[redacted]", 3, None, True]
    assert printed["nested"]["url"] == "https://b.s3.amazonaws.com/p.jpg?[query removed]"
    assert printed["password"] == printed["AWS_SECRET_ACCESS_KEY"] == "[redacted]"
    assert metric == {**emf, "printed_to": "stdout"} and metric["OpenAiInputTokens"] == 123  # …Tokens keeps its number
    assert_emf(metric)
    assert printed["printed_to"] == "stdout"  # a forged event is told apart from ours (next test)


def test_our_own_log_and_emf_lines_pass_the_stand_in_and_only_printed_objects_are_marked(unconfigure, monkeypatch):
    """Review item 3, forging: with the stand-ins in place (dashboard/serve.py), our handlers write past them, so a JSON
    object someone prints, shaped like an item event, carries `printed_to` and a real event does not."""
    from pipeline.observability.logs import JsonLineStream, Redactor

    real = io.StringIO()
    stand_in = JsonLineStream(real, "stderr", "WARNING", Redactor([API_KEY]))
    monkeypatch.setattr(sys, "stderr", stand_in)
    configure_logging("INFO", "json")
    configure_metrics("emf")
    logging.getLogger("pipeline.items").info("stage", extra={"batch_id": 1, "item_id": 2, "stage": "save", "outcome": "ok"})
    metrics.count("ItemsOk", 1)
    print(json.dumps({"level": "INFO", "logger": "pipeline.items", "message": "stage", "batch_id": 1, "item_id": 3,
                      "stage": "save", "outcome": "ok"}), file=sys.stderr)
    stand_in.close()
    rows = [json.loads(line) for line in real.getvalue().splitlines()]
    ours = [row for row in rows if row.get("item_id") == 2]
    forged = [row for row in rows if row.get("item_id") == 3]
    assert len(ours) == 1 and "printed_to" not in ours[0]
    assert len(forged) == 1 and forged[0]["printed_to"] == "stderr"
    [emf] = [row for row in rows if "_aws" in row]
    assert emf["ItemsOk"] == 1 and "printed_to" not in emf


def test_a_settings_error_before_the_server_starts_is_one_json_object_under_log_format_json(monkeypatch, capsys):
    """Review item 4: LOG_FORMAT=json CONCURRENCY=abc printed a plain line among JSON ones."""
    from dashboard import serve

    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("CONCURRENCY", "abc")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    assert serve.main(["--server.port=1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    row = json.loads(captured.err)
    assert row["level"] == "ERROR" and row["logger"] == "dashboard.serve"
    assert row["message"] == "setting CONCURRENCY: Input should be a valid integer, unable to parse string as an integer"


def test_a_settings_rule_across_variables_is_its_own_sentence_without_an_empty_name(monkeypatch, capsys):
    """Review item 5: STORE=dynamodb without IMAGE_BUCKET read `error: setting : Value error, STORE=…`."""
    from dashboard import serve

    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("STORE", "dynamodb")
    monkeypatch.delenv("IMAGE_BUCKET", raising=False)
    assert serve.main(["--server.port=1"]) == 2
    assert capsys.readouterr().err == "error: STORE=dynamodb needs IMAGE_BUCKET: every task must see the same photos.\n"


def test_the_server_start_event_hides_the_value_of_any_secret_looking_option():
    """Review item 7: `--server.cookieSecret hunter2` is two argv items; only the `--x=y` form was redacted."""
    from dashboard.serve import redacted_options

    argv = ["--server.cookieSecret", "hunter2a", "--server.port", "8501", "--x.apiKey=hunter2b", "--auth.password",
            "hunter2c", "--server.sslKeyFile=/run/k.pem", "--client.token", "--oops", "--server.headless=true"]
    shown = redacted_options(argv)
    assert not any("hunter2" in part for part in shown)
    assert shown == ["--server.cookieSecret", "[redacted]", "--server.port", "8501", "--x.apiKey=[redacted]", "--auth.password",
                     "[redacted]", "--server.sslKeyFile=[redacted]", "--client.token", "[redacted]", "--server.headless=true"]


def test_a_page_exception_sends_no_traceback_type_or_message_to_the_browser(tmp_path):
    """Review item 2: .streamlit/config.toml's client.showErrorDetails = "none": Streamlit strips the exception element
    server-side (exception_utils.marshall with apply_show_error_details) to its generic sentence. Run from the repository
    (where Streamlit reads the config file) with AppTest, which takes the same marshalling path."""
    from test_browser import REPO

    script = tmp_path / "check.py"
    script.write_text(
        "import json\nfrom streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_string(\"raise ValueError('PLANTED detail at /srv/app/secret_module.py')\").run()\n"
        "e = at.exception[0]\nprint(json.dumps({'message': e.message, 'trace': list(e.stack_trace), 'type': e.proto.type,"
        " 'proto': str(e.proto)}))\n")
    env = {**os.environ, "STREAMLIT_CLIENT_SHOW_ERROR_DETAILS": ""}
    env.pop("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS")
    result = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["trace"] == [] and shown["type"] == ""
    assert "PLANTED" not in shown["proto"] and "ValueError" not in shown["proto"] and "/srv/app" not in shown["proto"]
    assert "error" in shown["message"]  # Streamlit's generic sentence is still shown


def test_an_error_type_the_caller_passes_is_kept_beside_the_exception(unconfigure):
    """The worker and the trace pass `error_type` themselves: the exception's fields add to a line, never replace."""
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    try:
        raise KeyError("batch 7")
    except KeyError:
        logging.getLogger("pipeline.batches").exception("batch failed", extra={"error_type": "WorkerCrash"})
    [row] = lines_of(out)
    assert row["error_type"] == "WorkerCrash" and row["error"] == "'batch 7'" and "KeyError: 'batch 7'" in row["exception"]
