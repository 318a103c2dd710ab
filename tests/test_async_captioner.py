"""CAPTIONER=sagemaker-async against moto + the emulated async endpoint running the real handler."""

from __future__ import annotations

import base64
import json
import threading
import time

import boto3
import pytest
from botocore.config import Config

from pipeline.captioners.sagemaker_async import SageMakerAsyncCaptioner, SqsNotifications
from pipeline.images.normalize import normalize_image
from pipeline.batches.runner import run_batch
from pipeline.service import build_stages, create_batch
from pipeline.store.dynamo_store import DynamoStore
from pipeline.batches.worker import BatchWorker
from support import moto_sagemaker
from support.faults import FailFirst
from support.images import jpeg_bytes
from support.sagemaker_emulator import AsyncEndpointEmulator

NAME = moto_sagemaker.ENDPOINT_NAME
ASYNC_S3 = "s3://results/async"
FAST = Config(region_name="us-east-1", retries={"max_attempts": 4, "mode": "standard"})


@pytest.fixture
def aws(monkeypatch):
    with moto_sagemaker.endpoint_in_moto(monkeypatch, "async") as clients:
        yield clients


def make_captioner(store, **overrides) -> SageMakerAsyncCaptioner:
    values = dict(
        runtime=boto3.client("sagemaker-runtime", config=FAST), s3=boto3.client("s3", config=FAST),
        control=boto3.client("sagemaker", config=FAST), journal=store, endpoint_name=NAME, s3_uri=ASYNC_S3,
        timeout_s=20, poll_min_s=0.05, poll_max_s=0.2, warmup_s=30, max_in_flight=4, max_new_tokens=8,
    )
    values.update(overrides)
    return SageMakerAsyncCaptioner(**values)


def photos(folder, count, *, same=False):
    paths = []
    for i in range(count):
        path = folder / f"p{i}.jpg"
        path.write_bytes(jpeg_bytes(size=(320, 240), seed=0 if same else i))
        paths.append(path)
    return paths


def new_batch(make_settings, tmp_path, count, store=None, captioner=None, *, same=False, **settings):
    settings = make_settings(**settings)
    stages = build_stages(settings, store=store, captioner=captioner)
    if captioner is None:
        stages.captioner = make_captioner(stages.store)
    batch = create_batch(stages.store, settings, photos(tmp_path, count, same=same), name="async", created_by="ann")
    return stages, batch


class EmulatorPacedClock:
    """The captioner's clock and sleep, moved by the emulator instead of by wall time.

    While the emulator still has a request to handle, a pause waits (in real time) for it to make
    progress and the clock stands still, so no photo can time out however slow the machine is. Once
    every request sent is handled, an output not written by now never will be: pauses then pass at
    once on this clock, and a lost result reaches its timeout without a real wait. `waiting` is set
    at the first pause (a photo was sent and is waiting for its result). A captioner still waiting
    `give_up_after_s` into this clock fails that photo here (it would otherwise wait forever)."""

    def __init__(self, emulator: AsyncEndpointEmulator, give_up_after_s: float = 7200.0) -> None:
        self.emulator, self.now_s, self.waiting = emulator, time.time(), threading.Event()
        self.lock = threading.Lock()
        self.give_up_at = self.now_s + give_up_after_s

    def now(self) -> float:
        with self.lock:
            return self.now_s

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")  # as time.sleep
        self.waiting.set()
        seen = self.emulator.handled
        if self.emulator.settled():
            with self.lock:
                self.now_s += max(seconds, 0.001)  # time moves on, even over a zero-length sleep
                if self.now_s > self.give_up_at:
                    raise AssertionError("the captioner kept waiting for a result that will never come")
        else:
            self.emulator.wait_for_progress(seen, seconds)


def paced(store, emulator: AsyncEndpointEmulator, **overrides) -> tuple[SageMakerAsyncCaptioner, EmulatorPacedClock]:
    clock = EmulatorPacedClock(emulator)
    return make_captioner(store, clock=clock.now, sleep=clock.sleep, **overrides), clock


def failing(respond, numbers: set[int]):
    """Wraps the real handler: the listed requests (0-based, in arrival order) carry a corrupt photo, so
    the handler inside the serving stack refuses them."""
    seen = {"n": 0}
    lock = threading.Lock()

    def respond_or_fail(body):
        with lock:
            number = seen["n"]
            seen["n"] += 1
        if number in numbers:
            request = json.loads(body)
            request["image"] = base64.b64encode(b"not a photo").decode()
            body = json.dumps(request).encode()
        return respond(body)

    return respond_or_fail


def test_async_batch_lands_in_the_store_like_any_other(aws, monkeypatch, responder, make_settings, tmp_path):
    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 3)
    progress = run_batch(stages, batch.id, concurrency=2)
    assert (progress.ok, progress.failed) == (3, 0)
    items = stages.store.list_items(batch.id)
    assert all(i.status == "ok" and i.caption and len(i.attributes) == 5 and i.caption_model == f"sagemaker:{NAME}" for i in items)
    assert emulator.invocations == 3
    assert [u.kind for u in stages.store.usage(batch.id)] == ["endpoint"] * 3
    requests = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket="results", Prefix="async/input/")["Contents"]
    assert len(requests) == 3 and all(r["Key"].endswith(".json") for r in requests)
    assert all(stages.store.pending_invocation(i.content_key, f"sagemaker:{NAME}") is None for i in items)


def test_identical_photos_are_invoked_once(aws, monkeypatch, responder, make_settings, tmp_path):
    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 4, same=True)
    assert run_batch(stages, batch.id, concurrency=4).ok == 4
    assert emulator.invocations == 1 and len(stages.store.usage(batch.id)) == 1


def test_failure_file_becomes_that_items_error(aws, monkeypatch, responder, make_settings, tmp_path):
    AsyncEndpointEmulator(failing(responder, {1}), s3_uri=ASYNC_S3, capacity=1).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 3)
    stages.captioner.max_in_flight = 1  # one at a time: request number 1 is the second photo
    progress = run_batch(stages, batch.id, concurrency=1)
    assert (progress.ok, progress.failed) == (2, 1)
    failed = [i for i in stages.store.list_items(batch.id) if i.status == "error"]
    assert failed[0].error == "The captioning model refused this photo: The image could not be decoded."


def test_lost_output_times_out_and_retry_redoes_only_that_photo(aws, monkeypatch, responder, make_settings, tmp_path):
    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3, capacity=1, lose={0}).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 3)
    # The production timeout (15 min) on a clock that only moves once the emulator has handled every
    # request: the lost photo times out without a real wait, the others cannot, however loaded the machine.
    stages.captioner, clock = paced(stages.store, emulator, timeout_s=900, poll_max_s=60)
    first = run_batch(stages, batch.id, concurrency=1)
    assert (first.ok, first.failed) == (2, 1)
    lost = next(i for i in stages.store.list_items(batch.id) if i.status == "error")
    assert lost.error.startswith("No caption came back from the endpoint within 15 minutes") and "Retry" in lost.error
    assert clock.now() - time.time() >= 900 - 60  # it waited its timeout on that clock (the first look is after a pause)
    assert emulator.invocations == 3
    again = run_batch(stages, batch.id, concurrency=1, retry_failed=True)
    assert (again.total, again.ok) == (1, 1)
    assert emulator.invocations == 4  # only the lost photo was sent again
    assert len(stages.store.usage(batch.id)) == 3  # billed once per photo that produced a caption


@pytest.mark.parametrize("store_kind", ["sqlite", "dynamodb"])
def test_restart_collects_paid_requests_instead_of_invoking_again(store_kind, aws, monkeypatch, responder, make_settings, tmp_path):
    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3, instances=0).install(monkeypatch)
    store = None
    if store_kind == "dynamodb":
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "tagging")
        store.create_table()
    stages, batch = new_batch(make_settings, tmp_path, 2, store=store)
    # The first process sent both photos and was killed before any result came back.
    for item in stages.store.items_to_process(batch.id):
        image = normalize_image((tmp_path / item.source).read_bytes(), max_side=768, max_pixels=50_000_000, quality=85)
        stages.captioner._invoke(image, stages.schema.attributes)
    assert emulator.invocations == 2
    emulator.scale_out()
    restarted, _ = paced(stages.store, emulator)  # a new process: fresh captioner, same store (never times out while work is queued)
    stages.captioner = restarted
    assert run_batch(stages, batch.id, concurrency=2).ok == 2
    assert emulator.invocations == 2  # nothing paid twice
    assert len(stages.store.usage(batch.id)) == 2


def test_endpoint_at_zero_instances_says_warming_up_then_finishes(aws, monkeypatch, responder, make_settings, tmp_path):
    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3, instances=0).install(monkeypatch)
    boto3.client("sagemaker", region_name="us-east-1").update_endpoint_weights_and_capacities(
        EndpointName=NAME, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}])
    stages, batch = new_batch(make_settings, tmp_path, 2)
    stages.captioner, clock = paced(stages.store, emulator)  # no photo times out while the endpoint has no instance
    readiness = stages.captioner.readiness()
    assert not readiness.ready and readiness.expected_wait_s == 30
    assert "warming up" in readiness.message and "finish on their own" in readiness.message
    worker = BatchWorker(stages, concurrency=2)
    worker.submit(batch.id)
    assert clock.waiting.wait(120)  # a photo was sent and waits for its result: the batch is running now
    view = worker.view(batch.id)
    assert view.state == "running" and "warming up" in view.notice and view.problem is None
    assert emulator.invocations >= 1 and emulator.handled == 0  # queued at SageMaker, nothing answered yet
    emulator.scale_out()
    assert worker.wait_idle(120)
    finished = worker.view(batch.id)
    assert finished.state == "finished" and finished.batch.failed == 0 and finished.notice is None


def test_missing_endpoint_fails_each_photo_with_a_clear_message(aws, monkeypatch, responder, make_settings, tmp_path):
    AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 2)
    stages.captioner.endpoint_name = "not-there"
    assert not stages.captioner.readiness().ready
    progress = run_batch(stages, batch.id, concurrency=2)
    assert progress.failed == 2
    assert all("not deployed" in i.error for i in stages.store.list_items(batch.id))


def test_throttling_and_5xx_from_sagemaker_and_s3_are_retried(aws, monkeypatch, responder, make_settings, tmp_path):
    refusals = [(400, "ThrottlingException"), (400, "ThrottlingException"), (500, "InternalFailure")]
    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3, refuse=refusals).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 3)
    captioner = stages.captioner
    faults = [FailFirst(captioner.s3, "PutObject", 2, status=503, code="SlowDown"),
              FailFirst(captioner.s3, "GetObject", 2, status=500, code="InternalError")]
    assert run_batch(stages, batch.id, concurrency=3).ok == 3
    assert emulator.refused == 3 and [f.injected for f in faults] == [2, 2]
    assert emulator.invocations == 3 and len(stages.store.usage(batch.id)) == 3


def test_sns_to_sqs_notifications_wake_the_waiting_photo(aws, monkeypatch, responder, make_settings, tmp_path):
    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="async-results")["TopicArn"]
    queue = sqs.create_queue(QueueName="async-results")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3, sns_topic=topic).install(monkeypatch)
    stages, batch = new_batch(make_settings, tmp_path, 3)
    notifications = SqsNotifications(boto3.client("sqs", config=FAST), queue)
    # Long S3 backoff: without the notifications each photo would wait its full first pause.
    stages.captioner = make_captioner(stages.store, notifications=notifications, poll_min_s=30, poll_max_s=30)
    assert run_batch(stages, batch.id, concurrency=3).ok == 3
    assert notifications.received == 3


def test_cli_says_the_endpoint_is_warming_up_and_then_finishes(aws, monkeypatch, responder, tmp_path, capsys):
    from pipeline.cli import main

    emulator = AsyncEndpointEmulator(responder, s3_uri=ASYNC_S3, instances=0).install(monkeypatch)
    boto3.client("sagemaker", region_name="us-east-1").update_endpoint_weights_and_capacities(
        EndpointName=NAME, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}])
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "SAGEMAKER_ASYNC_S3": ASYNC_S3,
                       "ENDPOINT_WARMUP_MINUTES": "7", "MAX_NEW_TOKENS": "8"}.items():
        monkeypatch.setenv(key, value)
    submit = emulator.submit

    def submit_then_scale_out(*args):  # both photos queued at zero instances, then the alarm brings one up
        answer = submit(*args)
        if emulator.invocations == 2:
            emulator.scale_out()
        return answer

    emulator.submit = submit_then_scale_out
    out = tmp_path / "report.csv"
    assert main(["tag", *map(str, photos(tmp_path, 2)), "--captioner", "sagemaker-async", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "note: The captioning endpoint is warming up (starting from zero instances). Expected wait about 7 minutes" in captured.err
    assert "2 tagged, 0 failed" in captured.out and "Traceback" not in captured.err
