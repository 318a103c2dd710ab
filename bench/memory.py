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


def adversarial_set(folder: Path, pngs: int = 12) -> dict:
    """Write the files; returns their count and sizes."""
    sizes = []
    for i in range(pngs):
        image = Image.new("RGBA", (7000, 7000), (40 + 15 * i, 200 - 10 * i, 90, 255))
        ImageDraw.Draw(image).rectangle([1000 + 50 * i, 1500, 5000, 5500], fill=(250, 250, 250, 0))
        path = folder / f"rgba-{i:02}.png"
        image.save(path, format="PNG", compress_level=9)
        sizes.append(path.stat().st_size)
        del image
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--no-off", action="store_true", help="skip the budget-off runs (they need several GB)")
    args = parser.parse_args()
    report(bench_memory(tuple(args.concurrency), args.budget_mb, off=not args.no_off))


if __name__ == "__main__":
    main()
