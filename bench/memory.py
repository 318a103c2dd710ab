"""Peak RSS while normalizing an adversarial upload: decode budget on vs off, side by side in one run.

The set: twelve 7000x7000 RGBA PNGs of ~200 KB each (a solid colour and a rectangle, so they
compress; 196 MB each once decoded), four 8000x6000 JPEGs (two baseline, two progressive: a
progressive JPEG makes libjpeg hold every DCT coefficient whatever the draft scale) and two
8000x8000 JPEGs (64 MP: over MAX_PIXELS, refused from the header).

Each configuration runs in a fresh child process with the runner's thread pool (2 x CONCURRENCY + 2
workers, each reading a file and calling `normalize_image`); the child reports its own VmHWM
(peak resident set; `ru_maxrss` would carry the parent's peak over the exec).

    .venv/bin/python bench/memory.py                     # budget 256 MB vs off, CONCURRENCY 8 and 16
    .venv/bin/python bench/memory.py --concurrency 8 --budget-mb 128

Then the whole run (`--only run` / `--only normalize` picks one part): one zip the Upload page
accepts (twenty ~24 MB JPEGs of 26 MP, noise at quality 90, half of them progressive, and six of
the 7000x7000 RGBA PNGs) made into a batch and run by `run_batch` (offline summarizer, a stand-in
captioner that answers in 50 ms) in a fresh child process, raw bytes budget (RAW_BYTES_BUDGET_MB,
default 128) on vs off, decode budget 256 MB in both. Each worker reads its photo's raw bytes
(25 MB at most each, 2 x CONCURRENCY + 2 workers) before it can wait for the decode budget: without
the raw budget those bytes pile up. "est. with dashboard" = peak - the child's RSS before the run
+ 250 MB (the dashboard's own baseline), against issue 15's 700 MB goal.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path.insert(0, {root!r})
from pipeline.images.decode_budget import MB, DecodeBudget
from pipeline.errors import BadInputError
from pipeline.images.normalize import normalize_image

def peak_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

budget = DecodeBudget(int({budget_mb} * MB))
files = sorted(Path({data!r}).iterdir())
base_kb = peak_kb()
refused = []

def work(path):
    try:
        return normalize_image(path.read_bytes(), budget=budget).width
    except BadInputError as exc:
        refused.append(f"{{path.name}}: {{exc}}")
        return 0

started = time.perf_counter()
with ThreadPoolExecutor(max_workers=2 * {concurrency} + 2) as pool:
    widths = list(pool.map(work, files))
print(json.dumps({{"ok": sum(1 for w in widths if w), "refused": refused, "peak_kb": peak_kb(), "base_kb": base_kb,
                  "budget_peak_mb": round(budget.peak / MB, 1), "seconds": round(time.perf_counter() - started, 2)}}))
"""


def write_rgba_pngs(folder: Path, pngs: int) -> list[int]:
    sizes = []
    for i in range(pngs):
        image = Image.new("RGBA", (7000, 7000), (40 + 15 * i, 200 - 10 * i, 90, 255))
        ImageDraw.Draw(image).rectangle([1000 + 50 * i, 1500, 5000, 5500], fill=(250, 250, 250, 0))
        path = folder / f"rgba-{i:02}.png"
        image.save(path, format="PNG", compress_level=9)
        sizes.append(path.stat().st_size)
        del image
    return sizes


def adversarial_set(folder: Path, pngs: int = 12) -> dict:
    """Write the files; returns their count and sizes."""
    sizes = write_rgba_pngs(folder, pngs)
    for i, (size, progressive) in enumerate([((8000, 6000), False), ((8000, 6000), False), ((8000, 6000), True),
                                             ((8000, 6000), True), ((8000, 8000), False), ((8000, 8000), True)]):
        image = Image.new("RGB", size, (200, 60 + 20 * i, 40))
        ImageDraw.Draw(image).ellipse([1000, 1000, size[0] - 1000, size[1] - 1000], fill=(30, 30, 160))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90, progressive=progressive)
        path = folder / f"jpeg-{size[0]}x{size[1]}-{'progressive' if progressive else 'baseline'}-{i}.jpg"
        path.write_bytes(buffer.getvalue())
        sizes.append(len(buffer.getvalue()))
        del image
    return {"files": len(sizes), "png_kb_mean": round(sum(sizes[:pngs]) / pngs / 1024, 1), "total_mb": round(sum(sizes) / 1e6, 1)}


def run_child(folder: Path, budget_mb: float, concurrency: int) -> dict:
    code = CHILD.format(root=str(ROOT), data=str(folder), budget_mb=budget_mb, concurrency=concurrency)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return {"peak_rss_mb": round(result["peak_kb"] / 1024, 1), "base_rss_mb": round(result["base_kb"] / 1024, 1),
            "budget_peak_mb": result["budget_peak_mb"], "ok": result["ok"], "refused": len(result["refused"]),
            "seconds": result["seconds"]}


def bench_memory(concurrencies=(8, 16), budget_mb: float = 256.0, off: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = adversarial_set(folder)
        files["generate_s"] = round(time.perf_counter() - started, 1)
        results: dict = {"set": files, "budget_mb": budget_mb}
        for concurrency in concurrencies:
            results[f"c{concurrency}_budget_on"] = run_child(folder, budget_mb, concurrency)
            if off:
                results[f"c{concurrency}_budget_off"] = run_child(folder, 0, concurrency)
    return results


def report(results: dict) -> None:
    files = results["set"]
    print(f"adversarial set: {files['files']} files, {files['total_mb']} MB (PNGs {files['png_kb_mean']} KB each)")
    for key, value in results.items():
        if key.startswith("c") and "_budget_" in key:
            concurrency, mode = key[1:].split("_budget_")
            print(f"  CONCURRENCY {concurrency}, budget {'off' if mode == 'off' else str(results['budget_mb']) + ' MB'}: "
                  f"peak RSS {value['peak_rss_mb']} MB (base {value['base_rss_mb']} MB; decode budget peak "
                  f"{value['budget_peak_mb']} MB), {value['ok']} normalized, {value['refused']} refused, {value['seconds']} s")


RUN_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from pipeline.batches.runner import run_batch
from pipeline.images.decode_budget import MB, default_budget, default_raw_budget
from pipeline.models import CaptionResult, Usage
from pipeline.service import build_stages, create_batch
from pipeline.settings import Settings

def status_kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

class StandInCaptioner:
    model_id = "bench-stand-in"
    def warm_up(self):
        pass
    def caption(self, image, questions):
        time.sleep(0.05)
        return CaptionResult(caption="a blue mug on a white table", answers={{}}, model_id=self.model_id), Usage(kind="endpoint", model=self.model_id)

settings = Settings(_env_file=None, data_dir=Path({data_dir!r}), summarizer="offline", caption_cache=False,
                    concurrency={concurrency}, decode_budget_mb={decode_mb}, raw_bytes_budget_mb={raw_mb})
stages = build_stages(settings, captioner=StandInCaptioner())
batch = create_batch(stages.store, settings, [Path({zip_path!r})], name="adversarial", created_by="bench")
items = len(stages.store.items_to_process(batch.id))
base_kb = status_kb("VmRSS")
started = time.perf_counter()
progress = run_batch(stages, batch.id, concurrency={concurrency})
print(json.dumps({{"items": items, "ok": progress.ok, "failed": progress.failed, "peak_kb": status_kb("VmHWM"), "base_kb": base_kb,
                  "raw_peak_mb": round(default_raw_budget().peak / MB, 1), "decode_peak_mb": round(default_budget().peak / MB, 1),
                  "seconds": round(time.perf_counter() - started, 1)}}))
"""

DASHBOARD_BASE_MB = 250  # the dashboard process's own RSS before any batch (issue 15)


def adversarial_zip(folder: Path, jpegs: int = 20, pngs: int = 6) -> dict:
    """One zip the Upload page accepts: `jpegs` ~24 MB JPEGs (6000x4400 = 26 MP of noise at quality
    90; four distinct images, half progressive, each stored several times) and `pngs` 7000x7000
    RGBA PNGs. Stored, not deflated (JPEG does not compress)."""
    import zipfile

    import numpy as np

    parts = folder / "parts"
    parts.mkdir()
    rng = np.random.default_rng(15)
    distinct = []
    for i, progressive in enumerate([False, True, False, True]):
        pixels = rng.integers(0, 256, (4400, 6000, 3), dtype=np.uint8)
        path = parts / f"noise-{i}-{'progressive' if progressive else 'baseline'}.jpg"
        Image.fromarray(pixels).save(path, format="JPEG", quality=90, progressive=progressive)
        distinct.append(path)
        del pixels
    png_sizes = write_rgba_pngs(parts, pngs)
    archive = folder / "adversarial.zip"
    jpeg_sizes = []
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for n in range(jpegs):
            source = distinct[n % len(distinct)]
            zf.write(source, f"photos/{n:02}-{source.name}")
            jpeg_sizes.append(source.stat().st_size)
        for path in sorted(parts.glob("rgba-*.png")):
            zf.write(path, f"photos/{path.name}")
    return {"jpegs": jpegs, "jpeg_mb_mean": round(sum(jpeg_sizes) / len(jpeg_sizes) / 1e6, 1),
            "jpeg_mb_max": round(max(jpeg_sizes) / 1e6, 1), "pngs": pngs, "png_kb_mean": round(sum(png_sizes) / pngs / 1024, 1),
            "zip_mb": round(archive.stat().st_size / 1e6, 1), "path": archive}


def run_batch_child(folder: Path, zip_path: Path, concurrency: int, raw_mb: float, decode_mb: float) -> dict:
    data_dir = folder / f"data-c{concurrency}-raw{raw_mb:g}"
    code = RUN_CHILD.format(root=str(ROOT), data_dir=str(data_dir), zip_path=str(zip_path), concurrency=concurrency,
                            raw_mb=raw_mb, decode_mb=decode_mb)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    peak, base = result["peak_kb"] / 1024, result["base_kb"] / 1024
    return {"peak_rss_mb": round(peak, 1), "base_rss_mb": round(base, 1),
            "est_with_dashboard_mb": round(peak - base + DASHBOARD_BASE_MB, 1), "raw_peak_mb": result["raw_peak_mb"],
            "decode_peak_mb": result["decode_peak_mb"], "items": result["items"], "ok": result["ok"], "failed": result["failed"],
            "seconds": result["seconds"]}


def bench_run_memory(concurrencies=(8, 16), raw_mb: float = 128.0, decode_mb: float = 256.0, off: bool = True) -> dict:
    """The whole run (`run_batch`) over `adversarial_zip`, raw bytes budget on vs off."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = adversarial_zip(folder)
        zip_path = files.pop("path")
        files["generate_s"] = round(time.perf_counter() - started, 1)
        results: dict = {"zip": files, "raw_mb": raw_mb, "decode_mb": decode_mb}
        for concurrency in concurrencies:
            results[f"c{concurrency}_raw_on"] = run_batch_child(folder, zip_path, concurrency, raw_mb, decode_mb)
            if off:
                results[f"c{concurrency}_raw_off"] = run_batch_child(folder, zip_path, concurrency, 0, decode_mb)
    return results


def report_run(results: dict) -> None:
    files = results["zip"]
    print(f"whole run (run_batch) over one zip: {files['jpegs']} JPEGs of {files['jpeg_mb_mean']} MB (max {files['jpeg_mb_max']} MB) + "
          f"{files['pngs']} 7000x7000 RGBA PNGs, {files['zip_mb']} MB; decode budget {results['decode_mb']:g} MB in both")
    for key, value in results.items():
        if key.startswith("c") and "_raw_" in key:
            concurrency, mode = key[1:].split("_raw_")
            label = "off" if mode == "off" else f"{results['raw_mb']:g} MB"
            print(f"  CONCURRENCY {concurrency}, raw budget {label}: peak RSS {value['peak_rss_mb']} MB (before the run "
                  f"{value['base_rss_mb']} MB; est. with dashboard {value['est_with_dashboard_mb']} MB; raw peak {value['raw_peak_mb']} MB, "
                  f"decode peak {value['decode_peak_mb']} MB), {value['ok']}/{value['items']} ok, {value['failed']} failed, {value['seconds']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--raw-mb", type=float, default=128.0, help="raw bytes budget for the whole-run part")
    parser.add_argument("--no-off", action="store_true", help="skip the budget-off runs (they need several GB)")
    parser.add_argument("--only", choices=["normalize", "run"], help="one part only (default: both)")
    args = parser.parse_args()
    if args.only != "run":
        report(bench_memory(tuple(args.concurrency), args.budget_mb, off=not args.no_off))
    if args.only != "normalize":
        report_run(bench_run_memory(tuple(args.concurrency), args.raw_mb, args.budget_mb, off=not args.no_off))


if __name__ == "__main__":
    main()
