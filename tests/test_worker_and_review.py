"""BatchWorker (background processing), review helpers, uploads, thumbnails and the Shopify export."""

from __future__ import annotations

import base64
import csv
import io
import threading
from dataclasses import replace

import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.batches.export import export_shopify_csv, filter_items
from pipeline.models import SourceRef
from pipeline.batches.review import grid_rows, save_changes, set_review_status, summary_word_problems
from pipeline.service import create_batch
from pipeline.images.thumbnails import thumbnail_data_uri
from pipeline.ingest.uploads import safe_filename, save_uploads
from pipeline.batches.worker import BatchWorker
from support.images import jpeg_bytes


def photos(tmp_path, count: int):
    paths = []
    for index in range(count):
        path = tmp_path / f"p{index}.jpg"
        path.write_bytes(jpeg_bytes(seed=index, color=(40 * index % 255, 90, 160)))
        paths.append(path)
    return paths


def test_worker_runs_batches_in_order_and_reports_finished(stages, make_settings, tmp_path, monkeypatch):
    import pipeline.batches.worker as worker_module

    settings = make_settings()
    gate_photo = tmp_path / "gate.jpg"
    gate_photo.write_bytes(jpeg_bytes(seed=99, color=(10, 200, 10)))  # unlike the others: no cache hit between batches
    gate = create_batch(stages.store, settings, [gate_photo], name="gate", created_by="t")
    first = create_batch(stages.store, settings, photos(tmp_path, 2), name="first", created_by="t")
    second = create_batch(stages.store, settings, photos(tmp_path, 1), name="second", created_by="t")
    runs: list[tuple[str, int]] = []
    gate_running, release_gate = threading.Event(), threading.Event()
    real_run_batch = worker_module.run_batch

    def recording_run_batch(stages_, batch_id, **kwargs):
        runs.append(("start", batch_id))
        if batch_id == gate.id:  # keeps the worker busy until both batches are queued behind it
            gate_running.set()
            assert release_gate.wait(120)
        try:
            return real_run_batch(stages_, batch_id, **kwargs)
        finally:
            runs.append(("end", batch_id))

    monkeypatch.setattr(worker_module, "run_batch", recording_run_batch)
    worker = BatchWorker(stages, concurrency=2)
    worker.submit(gate.id)
    assert gate_running.wait(120)
    worker.submit(first.id)
    worker.submit(second.id)
    worker.submit(first.id)  # already queued: not run twice
    assert [worker.view(b.id).state for b in (gate, first, second)] == ["running", "queued", "queued"]
    release_gate.set()
    assert worker.wait_idle(120)
    # one after another, in the order submitted
    assert runs == [("start", gate.id), ("end", gate.id), ("start", first.id), ("end", first.id), ("start", second.id), ("end", second.id)]
    for batch in (gate, first, second):
        view = worker.view(batch.id)
        assert (view.state, view.batch.done, view.problem, view.fraction) == ("finished", batch.total, None, 1.0)
    assert len(stages.store.usage(first.id)) == 2  # one caption call per photo (offline summaries are free), not doubled


class BrokenCaptioner:
    model_id = "broken"

    def warm_up(self):
        raise ConfigError("The captioning model could not be loaded.")


def test_a_model_that_cannot_load_stops_the_batch_with_a_message_and_keeps_items(stages, make_settings, tmp_path):
    batch = create_batch(stages.store, make_settings(), photos(tmp_path, 2), name="b", created_by="t")
    worker = BatchWorker(replace(stages, captioner=BrokenCaptioner()), concurrency=1)
    worker.submit(batch.id)
    assert worker.wait_idle(60)
    view = worker.view(batch.id)
    assert view.state == "stopped"
    assert view.problem.startswith("Processing stopped: The captioning model could not be loaded.")
    assert [i.status for i in stages.store.list_items(batch.id)] == ["pending", "pending"]  # nothing marked failed
    worker.stages = stages  # fixed (e.g. the admin corrected CAPTION_MODEL); Resume finishes it
    worker.submit(batch.id)
    assert worker.wait_idle(120)
    assert worker.view(batch.id).state == "finished"


def test_eta_comes_from_the_rate_of_this_run():
    from pipeline.models import BatchRecord
    from pipeline.batches.worker import _Run

    now = [100.0]
    worker = BatchWorker.__new__(BatchWorker)  # only the arithmetic; no thread needed
    worker.clock = lambda: now[0]
    batch = BatchRecord(id=1, name="b", created_at="", created_by="", notices=[], total=100, done=30)
    run = _Run(started=90.0, done_at_start=10)  # 20 done in 10 s -> 2/s -> 70 left = 35 s
    assert worker._eta(batch, run) == pytest.approx(35.0)
    assert worker._eta(replace(batch, done=10), run) is None  # nothing finished yet: no guess


def test_review_rows_save_changes_and_refusals(stages, make_settings, tmp_path):
    batch = create_batch(stages.store, make_settings(), photos(tmp_path, 2), name="b", created_by="t")
    from pipeline.batches.runner import run_batch

    run_batch(stages, batch.id, concurrency=1)
    items = stages.store.list_items(batch.id)
    rows = grid_rows(items, stages.schema)
    assert [row["id"] for row in rows] == [i.id for i in items]
    assert set(stages.schema.names()) <= set(rows[0])
    long_text = "word " * 51
    changes = {items[0].id: {"color": "Navy", "Select": True, "Words": 3}, items[1].id: {"Summary": long_text}}
    assert summary_word_problems(changes, {items[1].id: "#2"}) == ["#2: summary has 51 words (limit 50)."]
    report = save_changes(stages.store, changes, stages.schema, "ana")
    assert [(e.field, e.new, e.who) for e in report.saved] == [("attribute:color", "Navy", "ana")]
    assert len(report.refused) == 1 and "51 words" in report.refused[0]
    assert stages.store.get_item(items[0].id).attribute("color").value == "Navy"


def test_failed_items_cannot_be_approved(stages, make_settings, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    batch = create_batch(stages.store, make_settings(), [bad], name="b", created_by="t")
    from pipeline.batches.runner import run_batch

    run_batch(stages, batch.id, concurrency=1)
    [item] = stages.store.list_items(batch.id)
    report = set_review_status(stages.store, [item.id], "approved", "ana")
    assert report.saved == [] and "cannot be approved" in report.refused[0]
    assert set_review_status(stages.store, [item.id], "rejected", "ana").saved[0].new == "rejected"


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\me\\photo 1.jpg", "photo_1.jpg"), (".hidden.png", "hidden.png"), ("", "upload"),
])
def test_upload_names_cannot_escape_the_upload_folder(name, expected):
    assert safe_filename(name) == expected


def test_save_uploads_keeps_duplicate_names(tmp_path):
    paths = save_uploads([("a.jpg", b"1"), ("a.jpg", b"2"), ("a.jpg", b"3")], tmp_path)
    assert [p.name for p in paths] == ["a.jpg", "a-2.jpg", "a-3.jpg"]
    assert [p.read_bytes() for p in paths] == [b"1", b"2", b"3"]
    assert all(p.parent.parent == tmp_path for p in paths)


def test_thumbnail_is_a_small_jpeg_data_uri(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(size=(768, 512)))
    uri = thumbnail_data_uri(str(path), size=96)
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert (image.format, max(image.size)) == ("JPEG", 96)
    assert thumbnail_data_uri(None) is None and thumbnail_data_uri(str(tmp_path / "gone.jpg")) is None


def test_shopify_csv_handles_are_unique_and_image_src_only_for_public_urls(stages, make_settings, tmp_path):
    from pipeline.batches.runner import run_batch

    batch = create_batch(stages.store, make_settings(), photos(tmp_path, 2), name="b", created_by="t")
    run_batch(stages, batch.id, concurrency=1)
    items = stages.store.list_items(batch.id)
    items = [replace(items[0], sku="SKU 1", ref=SourceRef("url", "https://cdn.example.com/a.jpg")), replace(items[1], sku="sku-1")]
    rows = list(csv.DictReader(io.StringIO(export_shopify_csv(items).decode())))
    assert [r["Handle"] for r in rows] == ["sku-1", "sku-1-2"]
    assert [r["Image Src"] for r in rows] == ["https://cdn.example.com/a.jpg", ""]
    assert filter_items(items, "approved") == [] and filter_items(items, "failed") == [] and filter_items(items, "all") == items
