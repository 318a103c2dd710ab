"""The decode budget: no more decoded pixels in flight than it allows, whatever the thread count.

No timing: threads are held inside the budget by events, and the test looks at who got in.
"""

import io
import threading
import time

import pytest
from PIL import Image

import pipeline.images.normalize as normalize
from pipeline.images.decode_budget import DecodeBudget
from pipeline.images.normalize import decode_cost, exif_orientation, normalize_image
from support.images import big_rgba_png, encode, png_with_exif_orientation, product_photo

DEADLINE_S = 20  # only so a broken budget fails instead of hanging; no assert depends on it


def wait_for(condition) -> bool:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


class Holders:
    """Threads that take `nbytes` each and keep them until `gate` opens; records the most held at once."""

    def __init__(self, budget: DecodeBudget, sizes: list[int]) -> None:
        self.budget, self.gate, self.lock = budget, threading.Event(), threading.Lock()
        self.holding, self.max_holding, self.inside, self.done = 0, 0, 0, 0
        self.threads = [threading.Thread(target=self.work, args=(size,)) for size in sizes]

    def work(self, nbytes: int) -> None:
        with self.budget.hold(nbytes) as grant:
            with self.lock:
                self.holding += grant
                self.inside += 1
                self.max_holding = max(self.max_holding, self.holding)
            self.gate.wait(DEADLINE_S)
            with self.lock:
                self.holding -= grant
                self.inside -= 1
        with self.lock:
            self.done += 1

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.gate.set()
        for thread in self.threads:
            thread.join(DEADLINE_S)


def test_budget_admits_only_what_fits_and_the_rest_wait():
    budget = DecodeBudget(100)
    holders = Holders(budget, [40] * 6)
    holders.start()
    assert wait_for(lambda: holders.inside == 2 and budget.waiting == 4)
    assert holders.holding == 80 and budget.in_use == 80  # a third 40 would exceed 100
    holders.finish()
    assert holders.done == 6 and holders.max_holding <= 100 and budget.peak <= 100 and budget.in_use == 0


def test_an_image_bigger_than_the_budget_decodes_alone_with_all_of_it():
    budget = DecodeBudget(100)
    small = Holders(budget, [30])
    small.start()
    assert wait_for(lambda: small.inside == 1)
    big = Holders(budget, [500])
    big.start()
    assert wait_for(lambda: budget.waiting == 1)
    assert big.inside == 0  # waits for the small one: it needs the whole budget
    small.finish()
    assert wait_for(lambda: big.inside == 1)
    assert budget.in_use == 100  # capped at the budget, not refused
    late = Holders(budget, [1])
    late.start()
    assert wait_for(lambda: budget.waiting == 1) and late.inside == 0  # nothing decodes beside it
    big.finish()
    late.finish()
    assert late.done == 1 and budget.in_use == 0


def test_requests_are_served_in_arrival_order_so_a_big_one_is_not_starved():
    budget = DecodeBudget(100)
    first = Holders(budget, [60])
    first.start()
    assert wait_for(lambda: first.inside == 1)
    big = Holders(budget, [90])
    big.start()
    assert wait_for(lambda: budget.waiting == 1)
    small = Holders(budget, [10])  # would fit now (60 + 10), but arrived after the big one
    small.start()
    assert wait_for(lambda: budget.waiting == 2)
    assert small.inside == 0
    first.finish()
    assert wait_for(lambda: big.inside == 1)
    assert wait_for(lambda: small.inside == 1)  # 90 + 10 fit together
    big.finish()
    small.finish()


def test_a_disabled_budget_never_waits():
    budget = DecodeBudget(0)
    holders = Holders(budget, [10**9] * 3)
    holders.start()
    assert wait_for(lambda: holders.inside == 3)
    holders.finish()


def test_normalize_decodes_one_big_image_at_a_time_under_a_budget_for_one(monkeypatch):
    """Four threads normalize 3000x2000 RGBA PNGs (24 MB decoded each) under a budget that fits one."""
    data = big_rgba_png((3000, 2000))
    probe = Image.open(io.BytesIO(data))
    cost = decode_cost(probe, probe.size, 768)
    assert cost >= 3000 * 2000 * 4
    budget = DecodeBudget(cost + cost // 2)
    state = {"active": 0, "max_active": 0}
    lock, gate = threading.Lock(), threading.Event()
    real_shrink = normalize.shrink_to_rgb

    def shrink_while_watched(image, max_side):  # runs right after the full decode, inside the budget
        with lock:
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
        gate.wait(DEADLINE_S)
        try:
            return real_shrink(image, max_side)
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(normalize, "shrink_to_rgb", shrink_while_watched)
    results = []
    threads = [threading.Thread(target=lambda: results.append(normalize_image(data, budget=budget))) for _ in range(4)]
    for thread in threads:
        thread.start()
    # with the budget, one decodes and three queue; without it, all four get in
    wait_for(lambda: (state["active"] == 1 and budget.waiting == 3) or state["active"] == 4)
    gate.set()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert state["max_active"] == 1
    assert len(results) == 4 and budget.peak <= budget.limit and budget.in_use == 0


def test_normalize_uses_the_process_wide_budget_by_default(monkeypatch):
    seen = []

    class Recording(DecodeBudget):
        def acquire(self, nbytes):
            seen.append(nbytes)
            return super().acquire(nbytes)

    monkeypatch.setattr(normalize, "default_budget", lambda: Recording(1 << 30))
    normalize_image(big_rgba_png((2000, 1000)))
    assert seen and seen[0] >= 2000 * 1000 * 4


@pytest.mark.parametrize("after_pixels", [False, True], ids=["exif-before-pixels", "exif-after-pixels"])
def test_png_orientation_is_read_without_decoding_the_pixels(after_pixels):
    data = png_with_exif_orientation((800, 400), 6, after_pixels=after_pixels)
    image = Image.open(io.BytesIO(data))
    assert exif_orientation(image, data) == 6
    assert getattr(image, "_im", None) is None  # nothing decoded (PngImageFile.getexif() would load it all)
    result = normalize_image(data)
    assert (result.width, result.height) == (384, 768) and (result.original_width, result.original_height) == (400, 800)


def test_progressive_jpeg_cost_counts_libjpegs_coefficient_buffer():
    photo = product_photo((2400, 1600))
    baseline, progressive = (Image.open(io.BytesIO(encode(photo, "JPEG", progressive=p))) for p in (False, True))
    for image in (baseline, progressive):
        image.draft("RGB", (768, 512))  # what normalize asks: the decode shrinks, the coefficients do not
    extra = decode_cost(progressive, (2400, 1600), 768) - decode_cost(baseline, (2400, 1600), 768)
    assert extra >= 2400 * 1600 * 2  # 4:2:0 -> 1.5 coefficients per pixel, 2 bytes each


def test_png_without_exif_is_not_decoded_to_look_for_it():
    data = encode(product_photo((800, 400)), "PNG")
    image = Image.open(io.BytesIO(data))
    assert exif_orientation(image, data) == 1 and getattr(image, "_im", None) is None


# --- the raw bytes budget: what prepare_image holds from before the read until the JPEG exists ---

import zipfile  # noqa: E402

import pipeline.batches.runner as runner  # noqa: E402
from pipeline.batches.runner import Cancelled, prepare_image, raw_read_cost, run_batch  # noqa: E402
from pipeline.images.decode_budget import BudgetWaitCancelled  # noqa: E402
from pipeline.models import CaptionResult, SourceRef, Usage  # noqa: E402


class StandInCaptioner:
    model_id = "stand-in"

    def warm_up(self):
        pass

    def caption(self, image, questions):
        return CaptionResult(caption="a blue mug", answers={}, model_id=self.model_id), Usage(kind="endpoint", model=self.model_id)


def quick_stages(tmp_path, **overrides):
    from pipeline.service import build_stages
    from pipeline.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline", **overrides)
    return settings, build_stages(settings, captioner=StandInCaptioner())


def item_for(path):
    from pipeline.models import ItemRecord

    return ItemRecord(id=0, batch_id=0, seq=0, source=path.name, ref=SourceRef(kind="file", location=str(path)), sku=None, hints={})


def test_acquire_with_a_cancel_event_stops_waiting_and_takes_nothing():
    budget = DecodeBudget(100)
    grant = budget.acquire(100)
    cancel, outcome = threading.Event(), []

    def wait():
        try:
            budget.acquire(10, cancel=cancel)
            outcome.append("granted")
        except BudgetWaitCancelled:
            outcome.append("cancelled")

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert wait_for(lambda: budget.waiting == 1)
    cancel.set()
    waiter.join(DEADLINE_S)
    assert outcome == ["cancelled"] and budget.waiting == 0 and budget.in_use == 100  # the holder never let go
    budget.release(grant)
    assert budget.acquire(100) == 100  # the cancelled ticket left the queue


def test_resize_gives_back_or_overdraws_without_waiting():
    budget = DecodeBudget(100)
    grant = budget.acquire(80)
    grant = budget.resize(grant, 30)
    assert grant == 30 and budget.in_use == 30
    other = budget.acquire(70)
    grant = budget.resize(grant, 50)  # more than is free: taken at once (nothing waits here)
    assert budget.in_use == 120
    budget.release(grant)
    budget.release(other)
    assert budget.in_use == 0


def test_raw_read_cost_counts_what_a_read_may_hold(tmp_path):
    _, stages = quick_stages(tmp_path)
    limit = stages.fetch_limits.max_bytes
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x" * 5000)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("b.jpg", b"y" * 7000)
    assert raw_read_cost(stages, SourceRef("file", str(photo))) == 5000
    assert raw_read_cost(stages, SourceRef("zip", str(archive), "b.jpg")) == 2 * 7000  # chunks + their join
    assert raw_read_cost(stages, SourceRef("url", "https://example.com/a.jpg")) == limit  # size unknown until downloaded
    assert raw_read_cost(stages, SourceRef("file", str(tmp_path / "gone.jpg"))) == limit


def test_workers_never_hold_more_raw_bytes_than_the_budget(tmp_path, monkeypatch):
    """Eight workers prepare 1,000-byte photos under a 2,500-byte raw budget: two are inside at once
    (holding their bytes, gated in normalize), six wait before reading. Skipping the acquire lets all
    eight read at once."""
    _, stages = quick_stages(tmp_path)
    budget = DecodeBudget(2500)
    monkeypatch.setattr(runner, "default_raw_budget", lambda: budget)
    gate, lock = threading.Event(), threading.Lock()
    state = {"holding": 0, "max_holding": 0, "inside": 0, "reads": 0}
    real_read = runner.read_source

    def counting_read(*args, **kwargs):
        data = real_read(*args, **kwargs)
        with lock:
            state["reads"] += 1
        return data

    def gated_normalize(data, **_options):  # holds the raw bytes until the gate opens
        with lock:
            state["holding"] += len(data)
            state["inside"] += 1
            state["max_holding"] = max(state["max_holding"], state["holding"])
        gate.wait(DEADLINE_S)
        with lock:
            state["holding"] -= len(data)
            state["inside"] -= 1
        return normalize_image(encode(product_photo((64, 48)), "JPEG"))

    monkeypatch.setattr(runner, "read_source", counting_read)
    monkeypatch.setattr(runner, "normalize_image", gated_normalize)
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"p{i}.jpg")
        paths[-1].write_bytes(bytes([i]) * 1000)
    done = []
    threads = [threading.Thread(target=lambda p=p: done.append(prepare_image(stages, item_for(p)))) for p in paths]
    for thread in threads:
        thread.start()
    # with the budget: two read and six wait; without it all eight get in
    wait_for(lambda: (state["inside"] == 2 and budget.waiting == 6) or state["inside"] == 8)
    assert state["reads"] == 2 and state["holding"] == 2000 and budget.in_use == 2000
    gate.set()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert len(done) == 8 and state["max_holding"] <= budget.limit
    assert budget.peak <= budget.limit and budget.in_use == 0


def test_stop_while_waiting_for_the_raw_budget_returns_and_the_item_stays_pending(tmp_path, monkeypatch):
    from pipeline.service import create_batch

    settings, stages = quick_stages(tmp_path)
    budget = DecodeBudget(10_000)
    monkeypatch.setattr(runner, "default_raw_budget", lambda: budget)
    photo = tmp_path / "mug.jpg"
    photo.write_bytes(encode(product_photo((320, 240)), "JPEG"))
    batch = create_batch(stages.store, settings, [photo], name="raw", created_by="ann")
    hog = budget.acquire(budget.limit)  # another worker holds all of it and never lets go in this test
    cancel, result = threading.Event(), []
    thread = threading.Thread(target=lambda: result.append(run_batch(stages, batch.id, concurrency=1, cancel=cancel)), daemon=True)
    thread.start()
    assert wait_for(lambda: budget.waiting == 1)
    cancel.set()
    thread.join(DEADLINE_S)
    assert not thread.is_alive() and result and result[0].cancelled and result[0].done == 0
    assert budget.in_use == hog and budget.waiting == 0  # it returned while the budget was still held
    assert [item.source for item in stages.store.items_to_process(batch.id)] == ["mug.jpg"]  # still pending
    budget.release(hog)
    again = run_batch(stages, batch.id, concurrency=1)
    assert again.ok == 1 and budget.in_use == 0


def test_prepare_image_cancelled_before_the_raw_budget_reads_nothing(tmp_path, monkeypatch):
    _, stages = quick_stages(tmp_path)
    monkeypatch.setattr(runner, "default_raw_budget", lambda: DecodeBudget(100))
    monkeypatch.setattr(runner, "read_source", lambda *a, **k: pytest.fail("read despite Stop"))
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"z" * 50)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        prepare_image(stages, item_for(photo), cancel)
