"""How many log bytes the app writes to CloudWatch Logs, measured (issue 17): per photo, per batch run and per
task start, the figures behind `Assumptions.log_bytes_per_photo` / `log_bytes_per_task_start` in
pipeline/admin/costs.py.

    .venv/bin/python bench/log_volume.py [--photos 40]

What runs is the app's own code as the container runs it (Dockerfile: LOG_LEVEL=INFO, LOG_FORMAT=json):

- a batch: `run_batch` over N generated photos with the tiny BLIP-2 on CPU (the test model) and the offline
  summarizer, every line the handlers write counted, METRICS_FORMAT off (the stack's default) and emf
  (pipeline_monitoring: true); measured at N and 2N photos, so per photo = (bytes(2N) - bytes(N)) / N and the
  rest is the per-run part;
- a scheduled task: `python -m pipeline endpoint autostop --idle-minutes 30` (what the auto-stop schedule runs),
  in-process against moto with no endpoint deployed, its stdout and stderr counted (the awslogs driver ships both);
- a dashboard start: `python -m dashboard.serve` (the image's CMD) with LOG_FORMAT=json until /_stcore/health answers, its
  stdout and stderr counted.

CloudWatch Logs bills each event's UTF-8 bytes plus 26 bytes of metadata, so every line adds 26 bytes here.
Not measured: SageMaker's own containers (endpoint, batch transform) write to /aws/sagemaker/... log groups;
pipeline/admin/costs.py adds an assumed allowance for them, labelled as such.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENT_OVERHEAD = 26  # bytes CloudWatch Logs counts per log event besides its message


def billed_bytes(text: str) -> int:
    """What CloudWatch Logs ingests for this output: each line's UTF-8 bytes + 26 per event."""
    lines = [line for line in text.splitlines() if line.strip()]
    return sum(len(line.encode("utf-8")) + EVENT_OVERHEAD for line in lines)


def make_photos(folder: Path, count: int) -> list[Path]:
    """Product-like JPEGs with catalogue-like file names (names reach some log lines)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
        path = folder / f"SKU-{100000 + i}-front-view.jpg"
        Image.fromarray(pixels).save(path, quality=85)
        paths.append(path)
    return paths


def batch_log_bytes(workdir: Path, photos: int, *, model_dir: Path, metrics_format: str = "off", captioner=None) -> int:
    """Billed log bytes of one `run_batch` over `photos` new photos, LOG_LEVEL=INFO, LOG_FORMAT=json."""
    from pipeline.observability import configure
    from pipeline.service import build_stages, create_batch
    from pipeline.batches.runner import run_batch
    from pipeline.settings import Settings

    workdir.mkdir(parents=True, exist_ok=True)
    folder = workdir / "photos"
    folder.mkdir(exist_ok=True)
    paths = make_photos(folder, photos)
    settings = Settings(_env_file=None, data_dir=workdir / "data", caption_model=str(model_dir), summarizer="offline",
                        max_new_tokens=8, concurrency=2, log_level="INFO", log_format="json", metrics_format=metrics_format,
                        caption_cache=False)
    stages = build_stages(settings, captioner=captioner)
    batch = create_batch(stages.store, settings, paths, name="log volume", created_by="bench@example.com")
    out = io.StringIO()
    configure(settings, stream=out)
    try:
        progress = run_batch(stages, batch.id, concurrency=2)
    finally:
        configure(Settings(_env_file=None))  # back to the defaults (WARNING, text, no metrics) on stderr
    if progress.ok != photos:
        raise RuntimeError(f"the batch should tag every photo: {progress}")
    return billed_bytes(out.getvalue())


def per_photo_and_run(workdir: Path, photos: int, *, model_dir: Path, metrics_format: str = "off", captioner=None) -> tuple[float, float]:
    """(bytes per photo, bytes per batch run) from runs over `photos` and 2 x `photos` photos."""
    small = batch_log_bytes(workdir / f"{metrics_format}-{photos}", photos, model_dir=model_dir, metrics_format=metrics_format,
                            captioner=captioner)
    large = batch_log_bytes(workdir / f"{metrics_format}-{2 * photos}", 2 * photos, model_dir=model_dir,
                            metrics_format=metrics_format, captioner=captioner)
    per_photo = (large - small) / photos
    return per_photo, max(0.0, small - per_photo * photos)


def scheduled_task_bytes() -> int:
    """`python -m pipeline endpoint autostop --idle-minutes 30` (the auto-stop schedule's command) against moto."""
    from moto import mock_aws

    from pipeline.cli import main

    env = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "METRICS_FORMAT": "off", "CAPTIONER": "sagemaker", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with tempfile.TemporaryDirectory() as data, mock_aws(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.environ["DATA_DIR"] = data
            main(["endpoint", "autostop", "--idle-minutes", "30"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ.pop("DATA_DIR", None)
    return billed_bytes(out.getvalue() + "\n" + err.getvalue())


def dashboard_start_bytes(timeout_s: float = 120.0) -> int:
    """`python -m dashboard.serve` (the container's command) with LOG_FORMAT=json, until it answers /_stcore/health."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "METRICS_FORMAT": "off", "DATA_DIR": data, "HOME": data,
               "SUMMARIZER": "offline", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        with open(Path(data) / "out", "w+b") as out:
            process = subprocess.Popen([sys.executable, "-m", "dashboard.serve", f"--server.port={port}",
                                        "--server.address=127.0.0.1", "--server.headless=true"],
                                       cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                            if reply.status == 200:
                                break
                    except OSError:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError("the dashboard did not start") from None
                        time.sleep(0.5)
            finally:
                process.terminate()
                process.wait(timeout=30)
            out.seek(0)
            return billed_bytes(out.read().decode("utf-8", "replace"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    args = parser.parse_args()
    figures = measure(args.photos)
    print(json.dumps(figures, indent=2))
    results = ROOT / "bench" / "results.json"  # as `make bench` records it (benchmark 13)
    existing = json.loads(results.read_text()) if results.exists() else {}
    existing["log_volume"] = figures
    results.write_text(json.dumps(existing, indent=2) + "\n")
    return 0


def measure(photos: int = 40) -> dict:
    """Every figure above, as `bench/run_all.py` records it (benchmark 13)."""
    sys.path.insert(0, str(ROOT))
    from pipeline.captioners.local import LocalCaptioner
    from pipeline.testmodel import make_test_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = make_test_model(work / "tiny-blip2")
        captioner = LocalCaptioner(str(model_dir), max_new_tokens=8)
        captioner.warm_up()
        figures = {}
        for metrics_format in ("off", "emf"):
            per_photo, per_run = per_photo_and_run(work, photos, model_dir=model_dir, metrics_format=metrics_format, captioner=captioner)
            figures[f"metrics_{metrics_format}"] = {"bytes_per_photo": round(per_photo, 1), "bytes_per_batch_run": round(per_run, 1)}
        figures["scheduled_task_bytes"] = scheduled_task_bytes()
        figures["dashboard_start_bytes"] = dashboard_start_bytes()
    return {"photos": photos, **figures}


if __name__ == "__main__":
    sys.exit(main())
