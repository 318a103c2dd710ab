"""Issue 19: photos captioned by a SageMaker batch transform job get their perceptual hash (taken where the job's
photos are normalized, saved with the result), so a look-alike uploaded later is flagged against them at staging; and a job flags its own look-alikes as a run does. moto + the emulated job running the real handler."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from pipeline.batches.batch_transform import BatchTransformRunner
from pipeline.images.staging_hashes import near_duplicate_notices
from pipeline.ingest.sources import collect_sources, stage_sources
from pipeline.service import build_stages, create_batch, ingest_limits
from support import moto_sagemaker
from support.sagemaker_emulator import TransformEmulator
from test_near_duplicates import encoded, product  # products on a white studio background

TRANSFORM_S3 = "s3://results/transform"


@pytest.fixture
def setup(monkeypatch, make_settings):
    with moto_sagemaker.endpoint_in_moto(monkeypatch):
        settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05)
        stages = build_stages(settings)
        yield settings, stages, BatchTransformRunner.from_settings(settings, stages)


def photo(tmp_path, name: str, kind: str) -> None:
    (tmp_path / name).write_bytes(encoded(product(kind, size=400)))


@pytest.mark.parametrize("cached", [False, True], ids=["captioned-by-the-job", "caption-cached"])
def test_a_job_records_each_photos_hash_and_a_later_look_alike_is_flagged_against_it(setup, monkeypatch, responder, tmp_path, cached):
    settings, stages, runner = setup
    TransformEmulator(responder).install(monkeypatch)
    photo(tmp_path, "red.jpg", "shirt")
    photo(tmp_path, "blue.jpg", "mug")
    photo(tmp_path, "red-again.jpg", "shirt")  # the same photo twice in the job: flagged as a run flags it
    if cached:  # every caption already known: the job's prepare step finishes the items itself
        warm = create_batch(stages.store, settings, [tmp_path / "red.jpg", tmp_path / "blue.jpg"], name="warm", created_by="ann")
        runner.run(warm.id)
    job_batch = create_batch(stages.store, settings, [tmp_path / n for n in ("red.jpg", "blue.jpg", "red-again.jpg")],
                             name="job", created_by="ann")
    runner.run(job_batch.id)
    red, blue, again = stages.store.list_items(job_batch.id)
    assert all(i.status == "ok" and i.phash and len(i.phash) == 16 for i in (red, blue, again))
    if cached:  # both red photos look like the warm batch's red one
        assert again.near_duplicate is not None and again.near_duplicate.startswith(f"looks like batch {job_batch.id - 1} item 1 (")
    else:  # the two red photos are prepared side by side (CONCURRENCY=2): whichever is hashed second is flagged against the other
        first, second = (red, again) if again.near_duplicate else (again, red)
        assert first.near_duplicate is None and second.near_duplicate is not None
        assert second.near_duplicate.startswith(f"looks like batch {job_batch.id} item {first.seq + 1} (")

    # later: the same red photo re-encoded smaller, uploaded again
    (tmp_path / "later").mkdir()
    buffer = io.BytesIO()
    Image.open(io.BytesIO((tmp_path / "red.jpg").read_bytes())).resize((300, 300)).save(buffer, "JPEG", quality=60)
    (tmp_path / "later" / "red-small.jpg").write_bytes(buffer.getvalue())
    report = stage_sources(collect_sources([tmp_path / "later" / "red-small.jpg"], ingest_limits(settings)), allow_private_urls=False)
    notices = near_duplicate_notices(stages.store, report, max_distance=settings.near_duplicate_max_distance,
                                     catalogue_max=settings.near_duplicate_catalogue_max)
    assert len(notices) == 1  # the job's red photos (item 1 or its copy, item 3), newest catalogue entry first
    assert re.fullmatch(rf"red-small\.jpg looks like batch {job_batch.id} item [13], already tagged \(\d bits apart\)\.", notices[0])


def test_a_job_whose_summaries_go_through_the_batch_api_keeps_the_hashes_too(monkeypatch, make_settings, responder, tmp_path):
    """OPENAI_BATCH_FOR_JOBS: the captions are kept, then the summaries come from one OpenAI batch; the manifest's
    hashes are saved with those results as well."""
    from support.servers import FakeOpenAI, Reply

    answer = {"title": "Red tee", "summary": "A red cotton tee.", "tags": ["tee"],
              "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None}}
    with moto_sagemaker.endpoint_in_moto(monkeypatch), FakeOpenAI() as server:
        server.state.default = Reply(content=answer)
        settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05,
                                 summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                                 openai_batch_min_items=2)
        stages = build_stages(settings)
        stages.batch_summarizer.wait = lambda cancel, seconds: False
        TransformEmulator(responder).install(monkeypatch)
        photo(tmp_path, "a.jpg", "shirt")
        photo(tmp_path, "b.jpg", "mug")
        photo(tmp_path, "a-again.jpg", "shirt")
        batch = create_batch(stages.store, settings, [tmp_path / n for n in ("a.jpg", "b.jpg", "a-again.jpg")], name="j", created_by="ann")
        job = BatchTransformRunner.from_settings(settings, stages).run(batch.id)
    assert job.status == "Ingested" and len(server.state.batch_creates) == 1
    first, second, again = stages.store.list_items(batch.id)
    assert all(i.status == "ok" and i.phash for i in (first, second, again))
    assert again.near_duplicate == f"looks like batch {batch.id} item 1 (0 bits apart)" and second.near_duplicate is None


def smaller_copy(tmp_path, source: str, name: str) -> None:
    """The same photo resized and re-encoded: another content key (no cache hit), a few bits of hash away."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO((tmp_path / source).read_bytes())).resize((300, 300)).save(buffer, "JPEG", quality=60)
    (tmp_path / name).write_bytes(buffer.getvalue())


def sent_to(stages, job) -> list[str]:
    """The content keys a job's input held: the photos it was paid to caption."""
    import boto3

    bucket, _, prefix = job.s3_prefix.removeprefix("s3://").partition("/")
    listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=bucket, Prefix=prefix + "input/")
    return sorted(o["Key"].rsplit("/", 1)[1].removesuffix(".json") for o in listed.get("Contents", []))


@pytest.mark.parametrize("reuse", [True, False], ids=["reuse-on", "reuse-off"])
def test_a_job_reuses_the_caption_of_an_already_tagged_look_alike_and_does_not_send_it(setup, monkeypatch, responder, tmp_path, reuse):
    settings, stages, runner = setup
    emulator = TransformEmulator(responder).install(monkeypatch)
    photo(tmp_path, "red.jpg", "shirt")
    photo(tmp_path, "bag.jpg", "bag")
    first = create_batch(stages.store, settings, [tmp_path / "red.jpg"], name="first", created_by="ann")
    runner.run(first.id)
    [red] = stages.store.list_items(first.id)
    smaller_copy(tmp_path, "red.jpg", "red-small.jpg")
    later = create_batch(stages.store, settings, [tmp_path / "red-small.jpg", tmp_path / "bag.jpg"], name="later", created_by="ann")
    stages.store.set_reuse_near_duplicates(later.id, reuse)
    job = runner.run(later.id)
    small, bag = stages.store.list_items(later.id)
    assert small.status == "ok" and bag.status == "ok" and small.near_duplicate.startswith(f"looks like batch {first.id} item 1 (")
    assert len(emulator.jobs) == 2
    if reuse:  # the look-alike finished before the job: only the bag was paid for
        assert sent_to(stages, job) == [bag.content_key] and job.total == 1
        assert small.reused_from == f"caption reused from batch {first.id} item 1" and small.caption == red.caption
        assert [u.kind for u in stages.store.usage(later.id)].count("transform") == 1
    else:
        assert sent_to(stages, job) == sorted([small.content_key, bag.content_key]) and job.total == 2
        assert small.reused_from is None
        assert [u.kind for u in stages.store.usage(later.id)].count("transform") == 2


@pytest.mark.parametrize("summaries", ["real-time", "batch-api"])
def test_a_look_alike_inside_the_job_takes_its_twins_output_and_is_not_sent(monkeypatch, make_settings, responder, tmp_path, summaries):
    """Reuse on, both look-alikes in the same job (neither tagged yet): the first is sent, the second is left out of the
    job's input and reads the first one's output at ingest, unbilled; through the OpenAI Batch API path as well."""
    from support.servers import FakeOpenAI, Reply

    answer = {"title": "Red tee", "summary": "A red cotton tee.", "tags": ["tee"],
              "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None}}
    with moto_sagemaker.endpoint_in_moto(monkeypatch), FakeOpenAI() as server:
        server.state.default = Reply(content=answer)
        openai = ({"summarizer": "openai", "openai_api_key": "sk-test-1234", "openai_base_url": server.base_url,
                   "openai_batch_min_items": 2} if summaries == "batch-api" else {})
        settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05,
                                 concurrency=1, **openai)  # one photo prepared at a time: the first one is hashed first
        stages = build_stages(settings)
        if stages.batch_summarizer is not None:
            stages.batch_summarizer.wait = lambda cancel, seconds: False
        emulator = TransformEmulator(responder).install(monkeypatch)
        photo(tmp_path, "red.jpg", "shirt")
        photo(tmp_path, "mug.jpg", "mug")
        smaller_copy(tmp_path, "red.jpg", "red-small.jpg")
        batch = create_batch(stages.store, settings, [tmp_path / n for n in ("red.jpg", "mug.jpg", "red-small.jpg")],
                             name="j", created_by="ann")
        stages.store.set_reuse_near_duplicates(batch.id, True)
        job = BatchTransformRunner.from_settings(settings, stages).run(batch.id)
        assert job.status == "Ingested" and len(emulator.jobs) == 1
        if summaries == "batch-api":
            assert len(server.state.batch_creates) == 1
        red, mug, small = stages.store.list_items(batch.id)
        assert sent_to(stages, job) == sorted([red.content_key, mug.content_key]) and job.total == 2
    assert all(i.status == "ok" for i in (red, mug, small)), [i.error for i in (red, mug, small)]
    assert small.content_key != red.content_key and small.caption == red.caption
    assert small.reused_from == f"caption reused from batch {batch.id} item 1" and red.reused_from is None
    assert small.near_duplicate.startswith(f"looks like batch {batch.id} item 1 (")
    assert [u.kind for u in stages.store.usage(batch.id)].count("transform") == 2  # red and mug; the copy is free


def test_a_look_alike_of_a_job_photo_that_failed_while_prepared_is_sent_after_all(monkeypatch, make_settings, responder, tmp_path):
    """Reuse on; the job's red photo has a cached caption, so it finishes while the job is prepared, but its summary is
    refused: its look-alike, held out of the job for it, has nothing to reuse and is sent after all (captioned by the
    job, billed, not marked reused)."""
    from support.servers import FakeOpenAI, Reply

    answer = {"title": "Red tee", "summary": "A red cotton tee.", "tags": ["tee"],
              "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None}}
    with moto_sagemaker.endpoint_in_moto(monkeypatch), FakeOpenAI() as server:
        server.state.default = Reply(content=answer)
        settings = make_settings(captioner="sagemaker", sagemaker_transform_s3=TRANSFORM_S3, transform_poll_s=0.05, concurrency=1,
                                 summarizer="openai", openai_api_key="sk-test-1234", openai_base_url=server.base_url,
                                 openai_batch_for_jobs=False, near_duplicate_catalogue_max=0)  # compared within the batch only
        stages = build_stages(settings)
        runner = BatchTransformRunner.from_settings(settings, stages)
        emulator = TransformEmulator(responder).install(monkeypatch)
        photo(tmp_path, "red.jpg", "shirt")
        photo(tmp_path, "mug.jpg", "mug")
        warm = create_batch(stages.store, settings, [tmp_path / "red.jpg"], name="warm", created_by="ann")
        runner.run(warm.id)  # red's caption is now cached
        smaller_copy(tmp_path, "red.jpg", "red-small.jpg")
        batch = create_batch(stages.store, settings, [tmp_path / n for n in ("red.jpg", "mug.jpg", "red-small.jpg")],
                             name="j", created_by="ann")
        stages.store.set_reuse_near_duplicates(batch.id, True)
        server.state.script = [Reply(refusal="I can't help with that.")]  # the next summary: red's, at prepare (one at a time)
        job = runner.run(batch.id)
        red, mug, small = stages.store.list_items(batch.id)
        assert red.status == "error" and mug.status == "ok" and small.status == "ok", [red.error, mug.error, small.error]
        assert small.near_duplicate.startswith(f"looks like batch {batch.id} item 1 (") and small.reused_from is None
        assert sent_to(stages, job) == sorted([mug.content_key, small.content_key]) and job.total == 2
        assert len(emulator.jobs) == 2 and [u.kind for u in stages.store.usage(batch.id)].count("transform") == 2
