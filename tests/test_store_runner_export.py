import csv
import io
import threading
import time
import zipfile
from dataclasses import replace

import pytest

from pipeline.errors import BadInputError, ServiceError
from pipeline.batches.export import export_csv
from pipeline.models import IngestReport, SourceItem
from pipeline.batches.runner import run_batch
from pipeline.service import create_batch
from pipeline.store.sqlite_store import SqliteStore
from support.images import jpeg_bytes, png_bomb


def read_report(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def write_images(folder, count, prefix="p"):
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i}.jpg"
        path.write_bytes(jpeg_bytes(size=(400, 300), seed=i))
        paths.append(path)
    return paths


class CountingCaptioner:
    """Wraps the real captioner to count calls and the most calls in flight at once.

    `barrier`: the first `barrier.parties` calls each wait there until that many calls are in flight
    together (a runner that makes fewer calls at once breaks it after its timeout: those items fail).
    `on_call(number)`: runs at the start of call `number` (1-based), e.g. to press Stop mid-call."""

    def __init__(self, inner, delay: float = 0.0, fail_on: set[str] | None = None,
                 barrier: threading.Barrier | None = None, on_call=None):
        self.inner, self.delay, self.fail_on = inner, delay, fail_on or set()
        self.barrier, self.on_call = barrier, on_call
        self.model_id = inner.model_id
        self.calls = 0
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def warm_up(self):
        self.inner.warm_up()

    def caption(self, image, questions):
        with self.lock:
            self.calls += 1
            number = self.calls
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.on_call is not None:
                self.on_call(number)
            if self.barrier is not None and number <= self.barrier.parties:
                self.barrier.wait()  # BrokenBarrierError (this item fails) unless `parties` calls overlap
            time.sleep(self.delay)
            if image.content_key in self.fail_on:
                raise ServiceError("The captioning endpoint is busy (throttled); try again shortly.")
            return self.inner.caption(image, questions)
        finally:
            with self.lock:
                self.active -= 1


def test_batch_runs_end_to_end_and_exports(stages, make_settings, tmp_path):
    paths = write_images(tmp_path, 3)
    batch = create_batch(stages.store, make_settings(), paths, name="three", created_by="ann")
    seen = []
    progress = run_batch(stages, batch.id, concurrency=2, on_progress=lambda p: seen.append(p.done))
    assert (progress.ok, progress.failed, progress.total) == (3, 0, 3)
    assert sorted(seen) == [1, 2, 3]
    items = stages.store.list_items(batch.id)
    assert all(item.status == "ok" and item.caption and item.summary and item.word_count <= 50 for item in items)
    assert all(len(item.attributes) == 5 and item.checks is not None for item in items)
    assert all(stages.images.path_for(item.content_key).exists() for item in items)
    usage = stages.store.usage(batch.id)
    assert [u.kind for u in usage] == ["local"] * 3
    rows = read_report(export_csv(items, stages.schema))
    assert [row["status"] for row in rows] == ["ok"] * 3
    assert {"source", "sku", "status", "error", "caption", "summary", "word_count", "color", "tags", "photo_warnings", "caption_model", "processed_at"} <= set(rows[0])
    assert stages.store.get_batch(batch.id).done == 3


def test_report_names_the_batch_and_item_number_of_each_row(stages, make_settings, tmp_path):
    """Issue 16 item 9: a row of a multi-batch export says which batch and which "#N" item it is."""
    from pipeline.batches.export import report_columns

    first = create_batch(stages.store, make_settings(), write_images(tmp_path, 2, "a"), name="one", created_by="ann")
    second = create_batch(stages.store, make_settings(), write_images(tmp_path, 1, "b"), name="two", created_by="ann")
    items = stages.store.list_items(first.id) + stages.store.list_items(second.id)
    data = export_csv(items, stages.schema)
    assert report_columns(stages.schema)[:3] == ["batch_id", "item_number", "source"]
    rows = read_report(data)
    assert [(row["batch_id"], row["item_number"]) for row in rows] == [(str(first.id), "1"), (str(first.id), "2"), (str(second.id), "1")]
    assert rows[0]["status"] == "error" and rows[0]["error"] == "not processed yet"  # existing columns unchanged


def test_caption_cache_reuses_same_image_and_model(stages, make_settings, tmp_path):
    counting = CountingCaptioner(stages.captioner)
    stages.captioner = counting
    image = write_images(tmp_path, 1)[0]
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(image.read_bytes())
    batch = create_batch(stages.store, make_settings(), [image, copy], name="dup", created_by="ann")
    run_batch(stages, batch.id, concurrency=1)
    assert counting.calls == 1
    first, second = stages.store.list_items(batch.id)
    assert first.caption == second.caption and first.content_key == second.content_key
    stages.use_cache = False
    again = create_batch(stages.store, make_settings(), [image], name="nocache", created_by="ann")
    run_batch(stages, again.id, concurrency=1)
    assert counting.calls == 2


def test_concurrency_is_bounded_and_one_failure_does_not_stop_the_batch(stages, make_settings, tmp_path):
    from pipeline.images.normalize import normalize_image

    paths = write_images(tmp_path, 8)
    bad_key = normalize_image(paths[3].read_bytes()).content_key
    # The first 3 calls only get past the barrier when all 3 are in flight at once: a runner that
    # makes fewer calls at a time breaks it (after 30 s), and those items fail.
    together = threading.Barrier(3, timeout=30)
    counting = CountingCaptioner(stages.captioner, delay=0.05, fail_on={bad_key}, barrier=together)
    stages.captioner = counting
    batch = create_batch(stages.store, make_settings(), paths, name="eight", created_by="ann")
    progress = run_batch(stages, batch.id, concurrency=3)
    assert not together.broken and together.n_waiting == 0  # 3 calls met there, and left together
    assert counting.peak == 3  # 3 at once, never more
    assert counting.calls == 8
    assert (progress.ok, progress.failed) == (7, 1)
    failed = [item for item in stages.store.list_items(batch.id) if item.status == "error"]
    assert [item.source for item in failed] == ["p3.jpg"] and "busy" in failed[0].error
    # a retry of failed items only redoes that one
    counting.fail_on = set()
    calls_before = counting.calls
    retry = run_batch(stages, batch.id, concurrency=3, retry_failed=True)
    assert (retry.total, retry.ok) == (1, 1) and counting.calls == calls_before + 1


def test_cancel_leaves_the_rest_pending_and_resume_finishes(stages, make_settings, tmp_path):
    paths = write_images(tmp_path, 6)
    batch = create_batch(stages.store, make_settings(), paths, name="cancel", created_by="ann")
    cancel = threading.Event()
    # Stop is pressed while the third photo is being captioned (one caption call at a time): the two
    # before it and that one finish, nothing makes a new captioner call after it.
    counting = CountingCaptioner(stages.captioner, on_call=lambda number: cancel.set() if number == 3 else None)
    stages.captioner = counting
    stages.leases = replace(stages.leases, stop_grace_s=120.0)  # the finishing items are waited for, however slow the machine
    progress = run_batch(stages, batch.id, concurrency=1, cancel=cancel)
    assert progress.cancelled and (progress.done, progress.ok) == (3, 3)
    assert counting.calls == 3
    remaining = 3
    assert len(stages.store.items_to_process(batch.id)) == remaining
    stages.captioner = counting.inner
    finish = run_batch(stages, batch.id, concurrency=2)
    assert finish.total == remaining and finish.ok == remaining
    assert stages.store.items_to_process(batch.id) == []


def test_bad_input_corpus_each_gives_one_clear_error_row(stages, make_settings, tmp_path):
    files = {
        "good.jpg": jpeg_bytes(),
        "zero.jpg": b"",
        "text.jpg": b"just some text pretending to be a photo",
        "truncated.jpg": jpeg_bytes()[:1500],
        "bomb.png": png_bomb(),
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "evil.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("../../escape.jpg", jpeg_bytes())
        archive.writestr("zeros.jpg", b"\0" * 10_000_000)
        archive.writestr("fine.jpg", jpeg_bytes(seed=9))
    (tmp_path / "semi.csv").write_bytes("\ufeffsku;image;brand\nS1;good.jpg;=HYPERLINK(\"http://x\")\nS2;http://169.254.169.254/latest/meta-data/;\nS3;http://127.0.0.1:9/a.jpg;\n".encode())
    (tmp_path / "nocol.csv").write_text("sku,snapshot\nA,good.jpg\n")  # "photo" would be an accepted alias
    paths += [tmp_path / "evil.zip", tmp_path / "semi.csv", tmp_path / "nocol.csv"]
    batch = create_batch(stages.store, make_settings(), paths, name="bad", created_by="ann")
    run_batch(stages, batch.id, concurrency=2)
    rows = {row["source"]: row for row in read_report(export_csv(stages.store.list_items(batch.id), stages.schema))}
    expected_errors = {
        "zero.jpg": "empty",
        "text.jpg": "not a readable image",
        "truncated.jpg": "damaged or incomplete",
        "bomb.png": "too large",  # refused at staging from its header
        "evil.zip:../../escape.jpg": "Unsafe file path",
        "evil.zip:zeros.jpg": "zip bomb",
        "semi.csv line 3": "private or internal address",
        "semi.csv line 4": "private or internal address",
        "nocol.csv": "missing the column(s) image",
    }
    for source, fragment in expected_errors.items():
        assert rows[source]["status"] == "error" and fragment in rows[source]["error"], source
        assert "Traceback" not in rows[source]["error"]
    # good.jpg is named by semi.csv, uploaded with it: tagged once, as that CSV row
    assert {source for source, row in rows.items() if row["status"] == "ok"} == {"evil.zip:fine.jpg", "semi.csv line 2"}
    assert len(rows) == len(expected_errors) + 2
    assert rows["semi.csv line 2"]["hint_brand"] == "'=HYPERLINK(\"http://x\")"  # formula neutralised


@pytest.mark.parametrize("value", ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_injection_is_escaped(stages, value):
    report = IngestReport(items=[SourceItem(source=value, ref=None, sku=value, hints={"notes": value}, error="x")])
    batch = stages.store.create_batch("f", "ann", report)
    row = read_report(export_csv(stages.store.list_items(batch.id), stages.schema))[0]
    assert row["sku"] == "'" + value and row["hint_notes"] == "'" + value


def test_excel_bom_option(stages):
    batch = stages.store.create_batch("b", "ann", IngestReport(items=[SourceItem(source="é.jpg", ref=None, error="x")]))
    items = stages.store.list_items(batch.id)
    assert export_csv(items, stages.schema, excel_bom=True).startswith("\ufeff".encode())
    assert not export_csv(items, stages.schema).startswith("\ufeff".encode())


def test_edits_keep_full_history_and_show_in_export(stages, make_settings, tmp_path):
    batch = create_batch(stages.store, make_settings(), write_images(tmp_path, 1), name="edit", created_by="ann")
    run_batch(stages, batch.id)
    item = stages.store.list_items(batch.id)[0]
    stages.store.edit_item(item.id, "summary", "A crisp red tee.", "ann")
    stages.store.edit_item(item.id, "summary", "A crisp red cotton tee.", "bob")
    stages.store.edit_item(item.id, "tags", ["tee", "red"], "bob")
    stages.store.edit_item(item.id, "attribute:color", "red", "bob")
    stages.store.edit_item(item.id, "review_status", "approved", "bob")
    assert stages.store.edit_item(item.id, "review_status", "approved", "bob") is None  # no change, no history row
    history = stages.store.edits(item.id)
    assert [(e.field, e.who) for e in history] == [("summary", "ann"), ("summary", "bob"), ("tags", "bob"), ("attribute:color", "bob"), ("review_status", "bob")]
    assert history[1].old == "A crisp red tee." and history[1].new == "A crisp red cotton tee."
    with pytest.raises(BadInputError, match="51 words; the limit is 50"):
        stages.store.edit_item(item.id, "summary", " ".join(["word"] * 51), "ann")
    row = read_report(export_csv(stages.store.list_items(batch.id), stages.schema))[0]
    assert row["summary"] == "A crisp red cotton tee." and row["word_count"] == "5"
    assert row["tags"] == "tee, red" and row["color"] == "red" and row["review_status"] == "approved"
    # a second store on the same file sees everything (nothing lives only in memory)
    reopened = SqliteStore(make_settings().db_path)
    assert reopened.get_item(item.id).summary == "A crisp red cotton tee."
