"""Scale benchmarks (sections 8 and 9 of `make bench`), all against moto in this process.

8. A 2,000-photo batch through CAPTIONER=sagemaker-async with a simulated endpoint (latency L per
   photo, C photos at once): wall time vs the ideal ceil(N/C)*L, and AWS calls per photo, for
   S3 polling with backoff and for SNS -> SQS notifications side by side.
9. Listing a 5,000-item processed batch: DynamoStore (moto) vs SqliteStore.

moto runs in this process and costs CPU per call, so wall times include its overhead (they are an
upper bound on the orchestration's own cost); calls per photo are exact.
"""

from __future__ import annotations

import io
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent / "tests"))  # the emulators live with the tests; appended, never first

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402
from PIL import Image  # noqa: E402


def small_photo(seed: int) -> bytes:
    image = Image.new("RGB", (96, 72), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    image.putpixel((seed % 96, (seed // 96) % 72), (255, 255, 255))  # every photo distinct: no cache hits
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, model, **_kwargs) -> None:
        with self.lock:
            self.calls[f"{model.service_model.service_name}.{model.name}"] += 1


def _async_run(workdir: Path, count: int, latency_s: float, capacity: int, in_flight: int, notify: bool) -> dict:
    from _pytest.monkeypatch import MonkeyPatch

    from pipeline.captioners.sagemaker_async import SageMakerAsyncCaptioner, SqsNotifications
    from pipeline.batches.runner import run_batch
    from pipeline.service import build_stages, create_batch
    from pipeline.settings import Settings
    from support import moto_sagemaker
    from support.sagemaker_emulator import AsyncEndpointEmulator, simulated_responder

    patch = MonkeyPatch()
    try:
        with moto_sagemaker.endpoint_in_moto(patch, "async"):
            topic = queue = None
            if notify:
                sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
                topic = sns.create_topic(Name="results")["TopicArn"]
                queue = sqs.create_queue(QueueName="results")["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
            AsyncEndpointEmulator(simulated_responder(latency_s), s3_uri="s3://results/async", capacity=capacity,
                                  sns_topic=topic).install(patch)
            data = workdir / ("notify" if notify else "poll")
            (data / "photos").mkdir(parents=True)
            paths = []
            for seed in range(count):
                path = data / "photos" / f"p{seed:05d}.jpg"
                path.write_bytes(small_photo(seed))
                paths.append(path)
            settings = Settings(_env_file=None, data_dir=data, summarizer="offline", concurrency=4)
            counter = CallCounter()
            session = boto3.Session(region_name="us-east-1")
            session.events.register("before-call", counter)
            from botocore.config import Config

            config = Config(retries={"max_attempts": 4, "mode": "adaptive"}, max_pool_connections=in_flight + 8)
            stages = build_stages(settings, captioner=_NoCaptioner())
            notifications = SqsNotifications(session.client("sqs", config=config), queue) if notify else None
            stages.captioner = SageMakerAsyncCaptioner(
                runtime=session.client("sagemaker-runtime", config=config), s3=session.client("s3", config=config),
                control=session.client("sagemaker", config=config), journal=stages.store,
                endpoint_name=moto_sagemaker.ENDPOINT_NAME, s3_uri="s3://results/async", max_in_flight=in_flight,
                timeout_s=600, notifications=notifications, poll_min_s=1.0, poll_max_s=20.0,
            )
            batch = create_batch(stages.store, settings, paths, name="bench", created_by="bench")
            started = time.perf_counter()
            progress = run_batch(stages, batch.id, concurrency=4)
            wall = time.perf_counter() - started
    finally:
        patch.undo()
    ideal = math.ceil(count / capacity) * latency_s
    total_calls = sum(counter.calls.values())
    return {
        "photos": count, "ok": progress.ok, "latency_s": latency_s, "capacity": capacity, "in_flight": in_flight,
        "wall_s": round(wall, 1), "ideal_s": round(ideal, 1), "ratio_to_ideal": round(wall / ideal, 2),
        "aws_calls_per_photo": round(total_calls / count, 2),
        "calls": dict(sorted(counter.calls.items())),
    }


def _fill_processed(store, batch_id: int) -> None:
    """The same processed rows save_result writes, put in batches: moto's TransactWriteItems copies
    the whole table on every call (quadratic), and the listing measure only needs the rows."""
    import json

    from review_grid import processed_result

    rows = []
    for item in store._query(f"BATCH#{batch_id}", prefix="ITEM#"):
        result = processed_result(item["id"])
        item.update(status="ok", content_key=result.content_key, image_path=result.image_path, caption=result.caption.caption,
                    attributes=json.dumps([a.__dict__ for a in result.attributes]), title=result.summary.title,
                    tags=json.dumps(result.summary.tags), summary=result.summary.summary,
                    word_count=result.word_count, checks=json.dumps(result.checks.to_dict()),
                    caption_model="bench", summary_model="offline", summary_offline=1)
        rows.append(item)
    store._batch_put(rows)


class _NoCaptioner:
    model_id = "unused"

    def warm_up(self) -> None: ...


def bench_async(workdir: Path, count: int = 2000, latency_s: float = 1.0, capacity: int = 32, in_flight: int = 128) -> dict:
    return {
        "s3_polling": _async_run(workdir, count, latency_s, capacity, in_flight, notify=False),
        "sns_sqs": _async_run(workdir, count, latency_s, capacity, in_flight, notify=True),
    }


def bench_store_listing(workdir: Path, count: int = 5000) -> dict:
    from pipeline.models import IngestReport, SourceItem, SourceRef
    from pipeline.store.dynamo_store import DynamoStore
    from pipeline.store.sqlite_store import SqliteStore
    from review_grid import processed_result

    report = IngestReport(items=[SourceItem(source=f"photos.zip:item-{i:05d}.jpg", ref=SourceRef("file", f"/x/{i}.jpg"),
                                            sku=f"SKU-{i:05d}") for i in range(count)])
    timings = {}
    with mock_aws():
        dynamo = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "bench")
        dynamo.create_table()
        for name, store in (("sqlite", SqliteStore(workdir / "list.sqlite3")), ("dynamodb", dynamo)):
            batch = store.create_batch("bench", "bench", report)
            if name == "sqlite":
                for record in store.list_items(batch.id):
                    store.save_result(record.id, processed_result(record.id), [])
            else:
                _fill_processed(dynamo, batch.id)
            best = math.inf
            for _ in range(3):
                started = time.perf_counter()
                items = store.list_items(batch.id)
                best = min(best, time.perf_counter() - started)
            assert len(items) == count and all(i.status == "ok" for i in items)
            timings[name] = round(best, 3)
    return {"items": count, "sqlite_s": timings["sqlite"], "dynamodb_moto_s": timings["dynamodb"],
            "ratio": round(timings["dynamodb"] / timings["sqlite"], 1)}


def report(listing: dict, async_batch: dict) -> None:
    for name, run in async_batch.items():
        print(f"8. async {run['photos']:,} photos ({name}), L={run['latency_s']}s, C={run['capacity']}, {run['in_flight']} in flight: "
              f"{run['wall_s']}s vs ideal {run['ideal_s']}s -> {run['ratio_to_ideal']}x; {run['aws_calls_per_photo']} AWS calls per photo")
    print(f"9. list {listing['items']:,} items: SQLite {listing['sqlite_s']}s, DynamoDB (moto) {listing['dynamodb_moto_s']}s -> x{listing['ratio']}")


if __name__ == "__main__":  # sections 8 and 9 alone: `python bench/scale.py`
    import json

    with tempfile.TemporaryDirectory() as tmp:
        listing = bench_store_listing(Path(tmp))
        async_batch = bench_async(Path(tmp))
    results_file = HERE / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results["scale"] = {"async_2000": async_batch, "list_5000": listing}
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    report(listing, async_batch)
