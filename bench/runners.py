"""N runners x M items with random kills: duplicates processed and lost items, leases off vs on.

    python bench/runners.py [--runners 3] [--items 200] [--kills 4] [--seed 7] [--json]

Each runner is its own process (`python bench/runners.py --child ...`), like two CLIs, the CLI and
the dashboard, or two Fargate tasks, sharing one SQLite store. The captioner is a fast stand-in that
appends every call to a log (so calls are counted across processes, killed ones included); the
summarizer is the offline one. While the batch runs, a random runner is killed with SIGKILL every
so often and a new one started in its place. Runners keep going until nothing is left to process.

Modes, measured in the same run:
  no-leases   claims disabled (LeaseOptions.enabled=False): the behaviour before leases
  leases      the shipped behaviour: one runner holds the batch, the others wait and take over
  join        every runner helps on the same batch at once, only item leases keep them apart

Figures: paid caption calls, duplicates (calls beyond one per item), items lost (not done at the
end), usage rows vs calls, and wall time. Goal with leases: 0 duplicates, 0 lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAPTION_LATENCY_S = 0.02


class LoggingCaptioner:
    """Stand-in endpoint: every call is one line in a shared log (O_APPEND: atomic per line)."""

    model_id = "bench-stand-in"

    def __init__(self, log: Path) -> None:
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def warm_up(self) -> None:
        pass

    def caption(self, image, questions):
        from pipeline.models import CaptionResult, Usage

        os.write(self.fd, f"{image.content_key}\n".encode())
        time.sleep(CAPTION_LATENCY_S)
        return CaptionResult(caption="a blue mug", answers={}, model_id=self.model_id), Usage(kind="endpoint", model=self.model_id)


def stages_for(data_dir: Path, log: Path, mode: str):
    from dataclasses import replace

    from pipeline.batches.runner import LeaseOptions
    from pipeline.service import build_stages
    from pipeline.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir, summarizer="offline", caption_cache=False)
    leases = LeaseOptions(lease_s=3.0, item_deadline_s=60.0, stop_grace_s=1.0, poll_s=0.1, enabled=mode != "no-leases")
    return replace(build_stages(settings, captioner=LoggingCaptioner(log)), leases=leases)


def child(data_dir: Path, log: Path, batch_id: int, mode: str) -> None:
    """One runner: keep at it until the batch has nothing left (waiting while another runner holds it)."""
    from pipeline.batches.runner import run_batch
    from pipeline.store import BatchBusyError

    stages = stages_for(data_dir, log, mode)
    while True:
        try:
            run_batch(stages, batch_id, concurrency=4, join=mode == "join")
        except BatchBusyError:
            time.sleep(0.2)
            continue
        if not stages.store.items_to_process(batch_id):
            return
        time.sleep(0.1)  # items another runner holds: look again shortly


def make_batch(data_dir: Path, items: int) -> int:
    import io

    from PIL import Image

    from pipeline.service import create_batch
    from pipeline.settings import Settings
    from pipeline.store.sqlite_store import SqliteStore

    folder = data_dir / "photos"
    folder.mkdir(parents=True)
    paths = []
    for index in range(items):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (index % 256, (index * 7) % 256, (index * 13) % 256)).save(buffer, "JPEG", quality=90)
        path = folder / f"p{index:04d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    settings = Settings(_env_file=None, data_dir=data_dir, summarizer="offline")
    return create_batch(SqliteStore(settings.db_path), settings, paths, name="bench", created_by="bench").id


def measure(mode: str, *, runners: int, items: int, kills: int, seed: int) -> dict:
    from pipeline.store.sqlite_store import SqliteStore

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix=f"runners-{mode}-") as tmp:
        data_dir, log = Path(tmp) / "data", Path(tmp) / "calls.log"
        batch_id = make_batch(data_dir, items)
        command = [sys.executable, __file__, "--child", str(data_dir), str(log), str(batch_id), mode]
        started = time.perf_counter()
        live = [subprocess.Popen(command) for _ in range(runners)]
        killed = 0
        while killed < kills and any(p.poll() is None for p in live):
            time.sleep(rng.uniform(0.3, 0.9))
            if log.exists() and len(log.read_text().splitlines()) >= items * 0.9:
                break  # too close to the end for a kill to mean anything
            running = [p for p in live if p.poll() is None]
            if not running:
                break
            victim = rng.choice(running)
            victim.send_signal(signal.SIGKILL)  # mid-batch, no clean-up at all
            victim.wait()
            killed += 1
            live.append(subprocess.Popen(command))  # the task / CLI that comes back
        for process in live:
            process.wait(timeout=600)
        wall = time.perf_counter() - started
        store = SqliteStore(data_dir / "pipeline.sqlite3")
        calls = Counter(log.read_text().split())
        done = sum(1 for item in store.list_items(batch_id) if item.status == "ok")
        return {
            "mode": mode, "runners": runners, "items": items, "kills": killed,
            "paid_calls": sum(calls.values()), "duplicates": sum(n - 1 for n in calls.values()),
            "items_processed_twice_or_more": sum(1 for n in calls.values() if n > 1),
            "lost": items - done, "usage_rows": len(store.usage(batch_id)), "wall_s": round(wall, 1),
        }


def run(runners: int = 3, items: int = 200, kills: int = 4, seed: int = 7) -> list[dict]:
    return [measure(mode, runners=runners, items=items, kills=kills, seed=seed) for mode in ("no-leases", "leases", "join")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("DATA_DIR", "LOG", "BATCH", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--runners", type=int, default=3)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        data_dir, log, batch_id, mode = args.child
        child(Path(data_dir), Path(log), int(batch_id), mode)
        return
    rows = run(args.runners, args.items, args.kills, args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.runners} runners x {args.items} items, random SIGKILLs with a replacement runner each")
    print(f"{'mode':<10} {'kills':>5} {'paid calls':>10} {'duplicates':>10} {'items >1x':>9} {'lost':>5} {'usage rows':>10} {'wall s':>7}")
    for r in rows:
        print(f"{r['mode']:<10} {r['kills']:>5} {r['paid_calls']:>10} {r['duplicates']:>10} {r['items_processed_twice_or_more']:>9} "
              f"{r['lost']:>5} {r['usage_rows']:>10} {r['wall_s']:>7}")


if __name__ == "__main__":
    main()
