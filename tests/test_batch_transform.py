"""Batch transform for large batches, against moto + the emulated job running the real handler."""

from __future__ import annotations

import threading

import boto3
import pytest

from pipeline.batches.batch_transform import BatchTransformRunner
from pipeline.admin.costs import Assumptions, PriceTable, estimate_transform_job
from pipeline.service import build_stages, create_batch
from pipeline.batches.worker import BatchWorker
from support import moto_sagemaker
from support.images import jpeg_bytes
from support.sagemaker_emulator import TransformEmulator

TRANSFORM_S3 = "s3://results/transform"


@pytest.fixture
def aws(monkeypatch):
    with moto_sagemaker.endpoint_in_moto(monkeypatch) as clients:
        yield clients


@pytest.fixture
def setup(aws, make_settings, tmp_path):
    settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05)
    stages = build_stages(settings)
    runner = BatchTransformRunner.from_settings(settings, stages)
    return settings, stages, runner


def photos(folder, seeds, name="p"):
    paths = []
    for number, seed in enumerate(seeds):
        path = folder / f"{name}{number}.jpg"
        path.write_bytes(jpeg_bytes(size=(320, 240), seed=seed))
        paths.append(path)
    return paths


def kinds(store, batch_id):
    return sorted(u.kind for u in store.usage(batch_id))


def test_job_captions_every_photo_and_maps_outputs_back(setup, monkeypatch, responder, tmp_path):
    settings, stages, runner = setup
    emulator = TransformEmulator(responder).install(monkeypatch)
    batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2, 3, 1]), name="big", created_by="ann")
    job = runner.run(batch.id)
    assert (job.status, job.total, job.done) == ("Ingested", 3, 3)  # identical photos are sent once
    items = stages.store.list_items(batch.id)
    assert all(i.status == "ok" and i.caption and len(i.attributes) == 5 for i in items)
    assert items[0].caption == items[3].caption and items[0].content_key == items[3].content_key
    assert all(i.caption_model == "sagemaker:blip2-endpoint" for i in items)
    assert kinds(stages.store, batch.id) == ["transform"] * 3 + ["transform_job"]
    assert emulator.jobs == [job.job_name]
    described = boto3.client("sagemaker", region_name="us-east-1").describe_transform_job(TransformJobName=job.job_name)
    assert described["ModelName"].startswith("blip2-endpoint-") and described["TransformResources"]["InstanceType"] == "ml.g4dn.xlarge"
    # Ingesting again (a crash right after ingest) bills nothing twice.
    runner.ingest(job)
    assert kinds(stages.store, batch.id) == ["transform"] * 3 + ["transform_job"]


def test_cached_and_unreadable_photos_never_reach_the_job(setup, monkeypatch, responder, tmp_path):
    settings, stages, runner = setup
    emulator = TransformEmulator(responder).install(monkeypatch)
    first = create_batch(stages.store, settings, photos(tmp_path, [1, 2]), name="first", created_by="ann")
    runner.run(first.id)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    again = create_batch(stages.store, settings, photos(tmp_path, [1, 2], name="q") + [broken], name="again", created_by="ann")
    assert runner.run(again.id) is None  # everything cached or unreadable: no job started
    assert len(emulator.jobs) == 1
    items = stages.store.list_items(again.id)
    assert [i.status for i in items] == ["ok", "ok", "error"]
    assert "image" in items[2].error.lower() and "Traceback" not in items[2].error


def test_job_failing_part_way_keeps_finished_photos_and_retry_redoes_the_rest(setup, monkeypatch, responder, tmp_path):
    settings, stages, runner = setup
    emulator = TransformEmulator(responder, fail_after=2).install(monkeypatch)
    batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2, 3, 4]), name="big", created_by="ann")
    job = runner.run(batch.id)
    assert job.status == "Ingested" and job.done == 2
    items = stages.store.list_items(batch.id)
    assert sorted(i.status for i in items) == ["error", "error", "ok", "ok"]
    failed = [i for i in items if i.status == "error"]
    assert all(i.error.startswith("The batch job stopped before this photo (ClientError") and "Retry failed" in i.error for i in failed)
    emulator.fail_after = None
    retry = runner.run(batch.id, retry_failed=True)
    assert retry.total == 2 and retry.job_name != job.job_name
    assert all(i.status == "ok" for i in stages.store.list_items(batch.id))
    assert kinds(stages.store, batch.id).count("transform") == 4  # each photo billed once over both jobs


def test_restarted_dashboard_picks_a_running_job_back_up(setup, monkeypatch, responder, tmp_path):
    settings, stages, runner = setup
    hold = threading.Event()  # the job stays InProgress until the test lets it run
    TransformEmulator(responder, hold=hold, hold_timeout_s=600).install(monkeypatch)
    batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2]), name="big", created_by="ann")
    following = threading.Event()

    def pause(seconds: float) -> None:  # the runner pauses between looks only after saving what it saw
        following.set()
        threading.Event().wait(seconds)

    runner.sleep = pause
    first = BatchWorker(stages, concurrency=2, transform=runner)
    first.submit(batch.id, as_job=True)
    assert following.wait(120)  # the job was started and looked at once
    view = first.view(batch.id)
    assert view.job.status == "InProgress" and view.job.total == 2 and view.batch.done == 0
    first.stop_current()  # the server goes away; the job keeps running in AWS
    assert first.wait_idle(120)
    assert "keeps running in AWS" in first.view(batch.id).problem

    restarted_stages = build_stages(settings)
    second = BatchWorker(restarted_stages, concurrency=2, transform=BatchTransformRunner.from_settings(settings, restarted_stages))
    assert second.resume_unfinished() == [batch.id]
    hold.set()
    assert second.wait_idle(120)
    view = second.view(batch.id)
    assert view.state == "finished" and view.batch.failed == 0 and view.job.status == "Ingested"
    assert len(restarted_stages.store.transform_jobs(batch.id)) == 1  # followed, not started again


def test_estimate_before_starting_matches_hand_computation():
    prices = PriceTable.load()
    estimate = estimate_transform_job(1000, "ml.g4dn.xlarge", 1, prices, Assumptions())
    # 12 min overhead + 1000 × 1.5 s = 37 min on one instance at $0.7364/h
    assert (estimate.minutes, estimate.usd) == (37.0, round(37 / 60 * 0.7364, 2))
    two = estimate_transform_job(1000, "ml.g4dn.xlarge", 2, prices, Assumptions())
    # 12 + 12.5 = 24.5 min, but two instances are billed
    assert (two.minutes, two.usd) == (24.5, round(2 * 24.5 / 60 * 0.7364, 2))


def test_no_job_without_a_transform_location(make_settings):
    from pipeline.errors import ConfigError

    settings = make_settings(captioner="sagemaker")
    with pytest.raises(ConfigError, match="SAGEMAKER_TRANSFORM_S3"):
        BatchTransformRunner.from_settings(settings, build_stages(settings))


def test_cli_runs_a_large_batch_as_a_job_and_writes_the_report(aws, monkeypatch, responder, make_settings, tmp_path, capsys):
    from pipeline.cli import main

    TransformEmulator(responder).install(monkeypatch)
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTIONER": "sagemaker", "SUMMARIZER": "offline",
                       "SAGEMAKER_TRANSFORM_S3": TRANSFORM_S3, "TRANSFORM_POLL_S": "0.05", "TRANSFORM_THRESHOLD": "3"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "report.csv"
    assert main(["tag", *map(str, photos(tmp_path, [1, 2, 3])), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "batch job for 3 photos: about 12.1 min, estimated $0.15 (1 x ml.g4dn.xlarge)" in captured.err
    assert "3 tagged, 0 failed" in captured.out and "Traceback" not in captured.err
    assert out.read_text().count("sagemaker:blip2-endpoint") == 3


def test_tag_page_offers_the_job_with_its_estimate_and_shows_its_progress(aws, monkeypatch, responder, tiny_model, tmp_path):
    import io
    import zipfile
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    TransformEmulator(responder).install(monkeypatch)
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTIONER": "sagemaker", "SUMMARIZER": "offline", "AUTH_MODE": "dev",
                       "SAGEMAKER_TRANSFORM_S3": TRANSFORM_S3, "TRANSFORM_POLL_S": "0.05", "TRANSFORM_THRESHOLD": "3"}.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in range(3):
            archive.writestr(f"shirt-{seed}.jpg", jpeg_bytes(size=(320, 240), seed=seed))
        archive.writestr("broken.jpg", b"not really a jpeg")
    try:
        app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=60).run()
        app.file_uploader[0].set_value([("photos.zip", buffer.getvalue(), "application/zip")]).run()
        assert not app.exception, app.exception
        assert app.radio(key="run-mode").value == "Batch job"  # 4 photos >= TRANSFORM_THRESHOLD
        assert any("Batch job estimate: about 12.1 min and $0.15 on 1 × ml.g4dn.xlarge" in c.value for c in app.caption)
        [run] = [b for b in app.button if b.label == "Run"]
        run.click().run()
        from dashboard.runtime import get_runtime

        worker = get_runtime().worker
        assert worker.wait_idle(60)
        app.run()
        assert not app.exception, app.exception
        batch_id = app.session_state["batch_id"]
        job = worker.stages.store.transform_jobs(batch_id)[0]
        assert any(f"Batch job {job.job_name}: done, 3 of 3 photos captioned" in c.value for c in app.caption)
        assert "4 of 4 done · 1 failed · finished" in app.get("progress")[0].proto.text
        assert [b.label for b in app.button if b.label.startswith("Retry failed")] == ["Retry failed (1)"]
    finally:
        st.cache_resource.clear()


def test_a_second_task_cannot_start_a_second_job_while_one_is_being_prepared(setup, monkeypatch, responder, tmp_path):
    """Two tasks pressing Run together: the one that holds the batch prepares it, the other is told who."""
    import time

    from pipeline.store import BatchBusyError

    settings, stages, runner = setup
    emulator = TransformEmulator(responder).install(monkeypatch)
    batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2]), name="big", created_by="ann")
    stages.store.claim_batch(batch.id, "other-host/123/abc", stages.leases.lease_s, now=time.time())  # a live runner elsewhere
    with pytest.raises(BatchBusyError, match="other-host"):
        runner.start(batch.id)
    assert emulator.jobs == [] and stages.store.transform_jobs(batch.id) == []
    stages.store.release_batch(batch.id, "other-host/123/abc")
    job = runner.run(batch.id)  # free again: this task runs it
    assert job.status == "Ingested" and len(emulator.jobs) == 1


def test_a_job_asks_the_active_taxonomys_questions_and_records_its_version(setup, monkeypatch, responder, tmp_path):
    """A batch transform job follows the taxonomy active when it starts, as a plain run does: the new attribute is
    asked in every request and answered on every item, and the items record the version (fails when the job uses
    the default schema)."""
    import json
    from pathlib import Path

    from pipeline.admin.taxonomy import activate_taxonomy, save_taxonomy

    settings, stages, runner = setup
    document = json.loads((Path(__file__).resolve().parent.parent / "pipeline" / "attribute_schema.json").read_text())
    document["attributes"].append({"name": "sleeve", "question": "How long are the sleeves?", "prefix": "sleeves are",
                                   "vocabulary": ["short", "long", "sleeveless"], "synonyms": {}})
    save_taxonomy(stages.store, json.dumps(document), "ana@example.com", based_on=0)
    activate_taxonomy(stages.store, 1, "ana@example.com")
    TransformEmulator(responder).install(monkeypatch)
    batch = create_batch(stages.store, settings, photos(tmp_path, [1, 2]), name="big", created_by="ann")
    job = runner.run(batch.id)
    assert job.status == "Ingested"
    items = stages.store.list_items(batch.id)
    assert all(i.status == "ok" and [a.name for a in i.attributes][-1] == "sleeve" for i in items), items
    assert [i.taxonomy_version for i in items] == [1, 1]


def test_job_items_carry_stage_timings_and_error_kinds_like_a_run(setup, monkeypatch, responder, tmp_path):
    """Health reads ItemRecord.stage_ms / error_kind: a job's photos get them too (fetch .. checks when the job is
    prepared, caption = reading the job's answer, summarize, save), a cached photo and an unreadable one as well."""
    settings, stages, runner = setup
    TransformEmulator(responder).install(monkeypatch)
    first = create_batch(stages.store, settings, photos(tmp_path, [1, 2]), name="first", created_by="ann")
    assert runner.run(first.id).status == "Ingested"
    for item in stages.store.list_items(first.id):
        assert {"fetch", "normalize", "checks", "caption", "summarize"} <= set(item.stage_ms), item.stage_ms
        assert item.error_kind is None
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes(size=(640, 480), seed=9)[:2000])  # a JPEG header, the picture cut off: fails when decoded
    again = create_batch(stages.store, settings, photos(tmp_path, [1], name="q") + [broken], name="again", created_by="ann")
    assert runner.run(again.id) is None
    cached, bad = stages.store.list_items(again.id)
    assert cached.status == "ok" and {"fetch", "normalize", "summarize"} <= set(cached.stage_ms)
    assert bad.status == "error" and bad.error_kind == "bad_image" and "fetch" in bad.stage_ms
