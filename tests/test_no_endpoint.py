"""ENDPOINT_ENABLED=false (profile own-alb-ipv6-batch): no SageMaker endpoint, so a SageMaker captioner can only caption
through batch transform jobs. The Tag page, the CLI and the worker offer and run only that; the local captioner (no
endpoint either) still captions photo by photo. Against moto + the emulated job running the real handler."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.text import shown
from pipeline.batches.worker import BatchWorker
from pipeline.captioners import NO_ENDPOINT_PHOTO_BY_PHOTO, photo_by_photo_problem
from pipeline.service import build_stages, build_transform_runner, create_batch
from support import moto_sagemaker
from support.images import jpeg_bytes
from support.sagemaker_emulator import TransformEmulator

TRANSFORM_S3 = "s3://results/transform"
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture
def aws(monkeypatch):
    with moto_sagemaker.endpoint_in_moto(monkeypatch) as clients:
        yield clients


@pytest.fixture
def env(monkeypatch, tmp_path, tiny_model):
    """The no-endpoint deployment's settings, except TRANSFORM_THRESHOLD=0 ("jobs only on request"): photo by photo
    would be the default, so only the missing endpoint can make these runs jobs."""
    values = {"DATA_DIR": str(tmp_path / "data"), "CAPTIONER": "sagemaker", "SUMMARIZER": "offline", "AUTH_MODE": "dev",
              "CAPTION_MODEL": str(tiny_model), "MAX_NEW_TOKENS": "8", "CONCURRENCY": "2", "ENDPOINT_ENABLED": "false",
              "SAGEMAKER_TRANSFORM_S3": TRANSFORM_S3, "TRANSFORM_POLL_S": "0.05", "TRANSFORM_THRESHOLD": "0"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    st.cache_resource.clear()  # one runtime (store, worker) per test
    yield monkeypatch
    st.cache_resource.clear()


def photo_paths(folder: Path, count: int) -> list[Path]:
    paths = []
    for seed in range(count):
        path = folder / f"p{seed}.jpg"
        path.write_bytes(jpeg_bytes(size=(320, 240), seed=seed + 1))
        paths.append(path)
    return paths


def two_photo_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in range(2):
            archive.writestr(f"shirt-{seed}.jpg", jpeg_bytes(size=(320, 240), seed=seed + 1))
    return buffer.getvalue()


def kinds(store, batch_id: int) -> list[str]:
    return sorted(u.kind for u in store.usage(batch_id))


@pytest.mark.parametrize(("captioner", "enabled", "unavailable"), [
    ("sagemaker", False, True), ("sagemaker-async", False, True),  # the endpoint captioners: no endpoint, no photo by photo
    ("local", False, False), ("openai-vision", False, False),  # these never needed one
    ("sagemaker", True, False), ("sagemaker-async", True, False), ("local", True, False), ("openai-vision", True, False),
])
def test_only_the_sagemaker_captioners_lose_photo_by_photo_without_the_endpoint(make_settings, captioner, enabled, unavailable):
    settings = make_settings(captioner=captioner, endpoint_enabled=enabled)
    assert (photo_by_photo_problem(settings) == NO_ENDPOINT_PHOTO_BY_PHOTO) is unavailable


def test_tag_page_offers_only_the_batch_job_and_says_why(aws, env, responder):
    emulator = TransformEmulator(responder).install(env)
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.file_uploader[0].set_value([("photos.zip", two_photo_zip(), "application/zip")]).run()
    assert not app.exception, app.exception
    assert not [radio for radio in app.radio if radio.key == "run-mode"]  # no "Photo by photo" to pick
    captions = [shown(caption.value) for caption in app.caption]
    assert f"{NO_ENDPOINT_PHOTO_BY_PHOTO}: every batch runs as a batch job, with results at the end." in captions
    assert any(caption.startswith("Batch job estimate: about 12") for caption in captions)
    [run] = [button for button in app.button if button.label == "Run"]
    assert not run.disabled
    run.click().run()
    assert not app.exception, app.exception
    from dashboard.runtime import get_runtime

    worker = get_runtime().worker
    assert worker.wait_idle(120)
    batch_id = app.session_state["batch_id"]
    store = worker.stages.store
    assert len(emulator.jobs) == 1 and kinds(store, batch_id) == ["transform", "transform", "transform_job"]  # no endpoint call
    assert [item.status for item in store.list_items(batch_id)] == ["ok", "ok"]


def test_tag_page_with_the_endpoint_still_offers_photo_by_photo(aws, env):
    env.setenv("ENDPOINT_ENABLED", "true")
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.file_uploader[0].set_value([("photos.zip", two_photo_zip(), "application/zip")]).run()
    assert not app.exception, app.exception
    assert app.radio(key="run-mode").options == ["Photo by photo", "Batch job"]
    assert app.radio(key="run-mode").value == "Photo by photo"  # TRANSFORM_THRESHOLD=0: jobs only on request


def test_tag_page_without_endpoint_or_jobs_refuses_to_run_in_one_sentence(aws, env):
    env.delenv("SAGEMAKER_TRANSFORM_S3")
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.file_uploader[0].set_value([("photos.zip", two_photo_zip(), "application/zip")]).run()
    assert not app.exception, app.exception
    [error] = [shown(e.value) for e in app.error]
    assert error.startswith(NO_ENDPOINT_PHOTO_BY_PHOTO) and "SAGEMAKER_TRANSFORM_S3" in error and "Traceback" not in error
    [run] = [button for button in app.button if button.label == "Run"]
    assert run.disabled


def test_tag_page_with_the_local_captioner_and_no_endpoint_runs_photo_by_photo(env):
    env.setenv("CAPTIONER", "local")  # ENDPOINT_ENABLED=false stays: the local captioner never needed the endpoint
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.file_uploader[0].set_value([("photos.zip", two_photo_zip(), "application/zip")]).run()
    assert not app.exception, app.exception
    assert not app.error and not any(NO_ENDPOINT_PHOTO_BY_PHOTO in shown(c.value) for c in app.caption)
    [run] = [button for button in app.button if button.label == "Run"]
    run.click().run()
    from dashboard.runtime import get_runtime

    worker = get_runtime().worker
    assert worker.wait_idle(120)
    store = worker.stages.store
    batch_id = app.session_state["batch_id"]
    assert [item.status for item in store.list_items(batch_id)] == ["ok", "ok"]
    assert kinds(store, batch_id) == ["local", "local"]  # captioned here, one by one


def test_cli_refuses_job_never_in_one_sentence_before_staging_anything(aws, env, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.settings import Settings

    out = tmp_path / "report.csv"
    assert main(["tag", *map(str, photo_paths(tmp_path, 2)), "--out", str(out), "--job", "never"]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line == ("error: --job never cannot run here: photo by photo needs the SageMaker captioning endpoint, which this "
                    "deployment does not have (ENDPOINT_ENABLED=false); use --job auto or always (a batch transform job), "
                    "or --captioner local.")
    assert not out.exists()
    assert build_stages(Settings()).store.list_batches() == []  # nothing staged or recorded


def test_cli_without_endpoint_runs_auto_as_a_job_and_the_local_captioner_photo_by_photo(aws, env, responder, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.settings import Settings

    emulator = TransformEmulator(responder).install(env)
    out = tmp_path / "report.csv"
    assert main(["tag", *map(str, photo_paths(tmp_path, 2)), "--out", str(out)]) == 0  # --job auto, TRANSFORM_THRESHOLD=0
    captured = capsys.readouterr()
    assert "batch job for 2 photos" in captured.err and "2 tagged, 0 failed" in captured.out
    store = build_stages(Settings()).store
    [first] = store.list_batches()
    assert len(emulator.jobs) == 1 and kinds(store, first.id) == ["transform", "transform", "transform_job"]

    assert main(["tag", str(photo_paths(tmp_path, 1)[0]), "--out", str(out), "--job", "never", "--captioner", "local",
                 "--no-reuse-near-duplicates"]) == 0
    assert "1 tagged, 0 failed" in capsys.readouterr().out and len(emulator.jobs) == 1
    second = max(store.list_batches(), key=lambda batch: batch.id)
    assert kinds(store, second.id) == ["local"]  # captioned here, photo by photo


def test_cli_without_endpoint_or_jobs_refuses_in_one_sentence(aws, env, tmp_path, capsys):
    from pipeline.cli import main

    env.delenv("SAGEMAKER_TRANSFORM_S3")
    assert main(["tag", *map(str, photo_paths(tmp_path, 1)), "--out", str(tmp_path / "r.csv")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {NO_ENDPOINT_PHOTO_BY_PHOTO}, and batch jobs need SAGEMAKER_TRANSFORM_S3")


def test_worker_without_endpoint_resumes_and_restarts_as_a_job(aws, make_settings, responder, tmp_path, monkeypatch):
    """Resume (submit without as_job) and a restarted server (resume_unfinished) must not go photo by photo."""
    emulator = TransformEmulator(responder).install(monkeypatch)
    settings = make_settings(captioner="sagemaker", endpoint_enabled=False, sagemaker_transform_s3=TRANSFORM_S3,
                             transform_poll_s=0.05, transform_threshold=0)
    stages = build_stages(settings)
    batch = create_batch(stages.store, settings, photo_paths(tmp_path, 2), name="b", created_by="ann")
    worker = BatchWorker(stages, concurrency=2, transform=build_transform_runner(settings, stages),
                         no_photo_by_photo=photo_by_photo_problem(settings))
    assert worker.resume_unfinished() == [batch.id]
    assert worker.wait_idle(120)
    assert len(emulator.jobs) == 1 and kinds(stages.store, batch.id) == ["transform", "transform", "transform_job"]
    assert worker.view(batch.id).state == "finished"


def test_worker_without_endpoint_or_jobs_tries_no_photo_and_says_why(make_settings, tmp_path):
    settings = make_settings(captioner="sagemaker", endpoint_enabled=False)
    stages = build_stages(settings)
    batch = create_batch(stages.store, settings, photo_paths(tmp_path, 2), name="b", created_by="ann")
    worker = BatchWorker(stages, concurrency=2, transform=None, no_photo_by_photo=photo_by_photo_problem(settings))
    worker.submit(batch.id)
    assert worker.wait_idle(60)
    view = worker.view(batch.id)
    assert view.state == "stopped" and view.batch.failed == 0  # not one row failed against a missing endpoint
    assert view.problem.startswith(NO_ENDPOINT_PHOTO_BY_PHOTO) and "SAGEMAKER_TRANSFORM_S3" in view.problem
    assert all(item.status == "pending" for item in stages.store.list_items(batch.id))
