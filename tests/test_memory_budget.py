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
