"""Pipeline benchmarks, measured side by side in one run (`make bench`).

1. normalize throughput on 12-MP JPEGs vs a naive full decode + resize
2. bytes per image sent to the captioner vs the original upload
3. wall time of a 500-image batch with a simulated captioner (latency L, concurrency C) vs ideal N*L/C
4. peak RSS of a process ingesting and running a 1,000-image zip, vs the same for 250 images
5. SageMaker handler: one batched generate (vision once) vs one generate per prompt (bench/handler.py)
6. size of the packaged model archive
7. Review page render / save with 2,000 items (bench/review_grid.py)
8. 2,000-photo async batch against moto + a simulated endpoint: wall vs ideal, AWS calls per photo (bench/scale.py)
9. listing a 5,000-item batch: DynamoStore (moto) vs SqliteStore (bench/scale.py)
10. peak RSS normalizing an adversarial upload (7000x7000 RGBA PNGs), decode budget on vs off, and a whole run_batch
    over an accepted zip of ~23 MB photos, raw-bytes budget on vs off (bench/memory.py)
11. N runner processes x M items with random SIGKILLs: duplicates and lost items, leases off vs on (bench/runners.py)
12. the dashboard in real Chromium, 2,000 items: Review interactive, one edit saved until visible, Tag page settling
    while another runner writes, each beside its target (bench/browser.py)
13. CloudWatch Logs bytes the app writes per photo (metrics off / EMF), per batch run, per task start: the figures
    behind the cost estimate's logs line (bench/log_volume.py)

Writes bench/results.json; the README's benchmark table quotes the latest figures.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


def realistic_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A product-like photo: soft background gradient, a shaded object with texture, sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    background = 235 + 15 * y + 5 * x
    base = np.repeat(background[..., None], 3, axis=2)
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    color = tuple(int(c) for c in rng.integers(30, 220, 3))
    draw.ellipse([w * 0.25, h * 0.2, w * 0.75, h * 0.85], fill=color)
    for i in range(40):
        x0 = int(w * (0.3 + 0.4 * i / 40))
        draw.line([x0, int(h * 0.25), x0 + int(w * 0.02), int(h * 0.8)], fill=tuple(max(0, c - 40) for c in color), width=max(1, w // 800))
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1, w // 1500)))
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 3, (h, w, 3)).astype(np.int16)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def naive_normalize(data: bytes, max_side: int = 768) -> bytes:
    """The obvious version: decode every pixel, then one high-quality resize."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    scale = max_side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return jpeg(image, 85)


def bench_normalize(photos: list[bytes]) -> dict:
    from pipeline.images.normalize import normalize_image

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for data in photos:
                fn(data)
            best = min(best, time.perf_counter() - started)
        return best

    ours = timed(normalize_image)
    naive = timed(naive_normalize)
    sent = [len(normalize_image(data).jpeg) for data in photos]
    return {
        "images": len(photos),
        "ours_images_per_s": round(len(photos) / ours, 2),
        "naive_images_per_s": round(len(photos) / naive, 2),
        "speedup": round(naive / ours, 2),
        "original_kb_mean": round(sum(map(len, photos)) / len(photos) / 1024, 1),
        "sent_kb_mean": round(sum(sent) / len(sent) / 1024, 1),
        "sent_kb_max": round(max(sent) / 1024, 1),
        "bytes_ratio": round(sum(sent) / sum(map(len, photos)), 4),
    }


class SimulatedCaptioner:
    """Fixed latency, like a remote endpoint; answers are canned."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.model_id = f"simulated-{latency_s}"

    def warm_up(self) -> None:
        pass

    def caption(self, image, questions):
        from pipeline.models import CaptionResult, Usage

        time.sleep(self.latency_s)
        answers = {q.name: q.vocabulary[0] for q in questions}
        return CaptionResult("a product on a white background", answers, self.model_id), Usage("endpoint", self.model_id)


def bench_concurrency(workdir: Path, count: int = 500, latency_s: float = 0.2, concurrency: int = 16) -> dict:
    from pipeline.batches.runner import run_batch
    from pipeline.service import build_stages, create_batch
    from pipeline.settings import Settings

    folder = workdir / "batch500"
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"{i:04}.jpg"
        path.write_bytes(jpeg(realistic_photo((640, 480), i), 85))
        paths.append(path)
    settings = Settings(_env_file=None, data_dir=workdir / "data500", summarizer="offline", caption_cache=False)
    stages = build_stages(settings, captioner=SimulatedCaptioner(latency_s))
    batch = create_batch(stages.store, settings, paths, name="bench", created_by="bench")
    started = time.perf_counter()
    progress = run_batch(stages, batch.id, concurrency=concurrency)
    wall = time.perf_counter() - started
    ideal = count * latency_s / concurrency
    return {"images": count, "latency_s": latency_s, "concurrency": concurrency, "ok": progress.ok,
            "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "ratio_to_ideal": round(wall / ideal, 3)}


RSS_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {bench!r})
from run_all import SimulatedCaptioner
from pipeline.batches.runner import run_batch
from pipeline.service import build_stages, create_batch
from pipeline.settings import Settings
settings = Settings(_env_file=None, data_dir=Path({data!r}), summarizer="offline", caption_cache=False)
stages = build_stages(settings, captioner=SimulatedCaptioner(0.0))
batch = create_batch(stages.store, settings, [Path({zip!r})], name="rss", created_by="bench")
progress = run_batch(stages, batch.id, concurrency=4)
# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec and would report the parent's peak.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(progress.ok, peak_kb)
"""


def bench_rss(workdir: Path, sizes=(250, 1000)) -> dict:
    zips = {}
    photo_cache = [jpeg(realistic_photo((1600, 1200), seed), 90) for seed in range(20)]
    for size in sizes:
        path = workdir / f"zip{size}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for i in range(size):
                # vary one byte in a JPEG comment so every image is distinct (no cache hits)
                data = photo_cache[i % len(photo_cache)]
                archive.writestr(f"shoot/{i:05}.jpg", data[:2] + b"\xff\xfe\x00\x06" + i.to_bytes(4, "big") + data[2:])
        zips[size] = path
    result = {}
    for size, path in zips.items():
        code = RSS_CHILD.format(bench=str(HERE), data=str(workdir / f"rss-data-{size}"), zip=str(path))
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        result[f"images_{size}"] = {"ok": int(output[0]), "peak_rss_mb": round(int(output[1]) / 1024, 1), "zip_mb": round(path.stat().st_size / 1e6, 1)}
    small, large = (result[f"images_{s}"]["peak_rss_mb"] for s in sizes)
    result["growth_ratio"] = round(large / small, 3)
    return result


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        photos = [jpeg(realistic_photo((4000, 3000), seed)) for seed in range(8)]
        normalize = bench_normalize(photos)
        concurrency = bench_concurrency(workdir)
        rss = bench_rss(workdir)
        from review_grid import bench_review_grid

        review = bench_review_grid(workdir)
        from scale import bench_async, bench_store_listing

        listing = bench_store_listing(workdir)
        async_batch = bench_async(workdir)
        from browser import bench_browser
        from browser import report as report_browser

        browser = bench_browser(workdir)
    from handler import archive_sizes, bench_batched_vs_per_prompt

    from memory import bench_memory
    from memory import bench_run_memory, report_run
    from memory import report as report_memory

    memory = bench_memory((8,))
    run_memory = bench_run_memory((8, 16))
    import runners

    runner_rows = runners.run(runners=3, items=150, kills=4)
    import log_volume

    logs = log_volume.measure(40)
    handler = bench_batched_vs_per_prompt([realistic_photo((768, 576), seed) for seed in range(4)])
    archives = archive_sizes()
    results = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "normalize_12mp": normalize,
        "batch_500_simulated": concurrency,
        "zip_peak_rss": rss,
        "goals": {"normalize_speedup_min": 5, "sent_kb_max": 80, "ratio_to_ideal_max": 1.10, "peak_rss_mb_max": 500},
        "seconds": round(time.perf_counter() - started, 1),
    }
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing["pipeline"] = results
    existing["sagemaker_handler"] = {"cpu": handler, "archive": archives}
    existing["dashboard_review"] = review
    existing["scale"] = {"async_2000": async_batch, "list_5000": listing}
    existing["decode_budget_memory"] = memory
    existing["whole_run_memory"] = run_memory
    existing["runners_with_kills"] = runner_rows
    existing["dashboard_browser"] = browser
    existing["log_volume"] = logs
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"1. normalize 12-MP JPEG: {normalize['ours_images_per_s']} img/s vs naive {normalize['naive_images_per_s']} img/s -> {normalize['speedup']}x (goal >= 5x)")
    print(f"2. bytes to captioner: {normalize['sent_kb_mean']} KB mean / {normalize['sent_kb_max']} KB max vs {normalize['original_kb_mean']} KB original ({normalize['bytes_ratio']:.1%}) (goal <= 80 KB)")
    print(f"3. 500 images, L={concurrency['latency_s']}s, C={concurrency['concurrency']}: {concurrency['wall_s']}s vs ideal {concurrency['ideal_s']}s -> {concurrency['ratio_to_ideal']}x (goal <= 1.10x)")
    print(f"4. peak RSS: {rss['images_250']['peak_rss_mb']} MB for 250 images, {rss['images_1000']['peak_rss_mb']} MB for 1,000 ({rss['images_1000']['zip_mb']} MB zip) -> x{rss['growth_ratio']} (goal <= 500 MB, flat)")
    print(f"5. handler, caption + 4 answers ({handler['device']}): one batched generate {handler['batched_ms_per_image']} ms/img vs one per prompt {handler['per_prompt_ms_per_image']} ms/img -> {handler['speedup']}x")
    print(f"6. model archive: {archives['code_only_kb']} KB code-only, {archives['with_tiny_weights_kb']} KB with the tiny weights")
    big, small = review["items_2000"], review["items_200"]
    print(f"7. review page (AppTest): 2,000 items render {big['render_s']} s, save one edit {big['save_one_edit_s']} s; "
          f"200 items {small['render_s']} s / {small['save_one_edit_s']} s -> render x{review['render_ratio_2000_vs_200']} for 10x items (goal < 2 s each)")
    from scale import report

    report(listing, async_batch)
    print("10. decode budget, peak RSS:")
    report_memory(memory)
    report_run(run_memory)
    print("11. 3 runner processes x 150 items, 4 random SIGKILLs (each replaced):")
    for row in runner_rows:
        print(f"    {row['mode']:<10} paid calls {row['paid_calls']}, duplicates {row['duplicates']}, lost {row['lost']}, usage rows {row['usage_rows']}")
    report_browser(browser)
    print(f"13. log bytes per photo: {logs['metrics_off']['bytes_per_photo']} (metrics off), {logs['metrics_emf']['bytes_per_photo']} (EMF); "
          f"per batch run {logs['metrics_off']['bytes_per_batch_run']}; dashboard start {logs['dashboard_start_bytes']}, "
          f"scheduled task {logs['scheduled_task_bytes']}")
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
