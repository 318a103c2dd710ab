"""The service wires the limits into every run: the download deadline, the decode budget, and Stop
reaching a download in progress (the item stays pending, nothing is marked failed)."""

import threading

from pipeline.images.decode_budget import MB, default_budget
from pipeline.batches.runner import run_batch
from pipeline.service import build_stages, create_batch, fetch_limits
from support.servers import DripServer


def test_the_download_deadline_and_decode_budget_come_from_settings(make_settings):
    settings = make_settings(fetch_deadline_s=7.5, decode_budget_mb=96)
    assert fetch_limits(settings).deadline_s == 7.5
    build_stages(settings)
    assert default_budget().limit == 96 * MB
    same = default_budget()
    build_stages(settings)
    assert default_budget() is same  # a second build keeps the budget decodes are waiting on


def test_stop_ends_a_download_in_progress_and_the_item_stays_pending(make_settings, local_captioner, tmp_path):
    settings = make_settings(allow_private_urls=True, fetch_deadline_s=60)
    stages = build_stages(settings, captioner=local_captioner)
    with DripServer(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n", max_s=30) as origin:
        (tmp_path / "slow.csv").write_text(f"sku,image\nS1,{origin.url}/photo.jpg\n")
        batch = create_batch(stages.store, settings, [tmp_path / "slow.csv"], name="slow", created_by="ann")
        cancel = threading.Event()
        finished = threading.Event()
        runner = threading.Thread(target=lambda: (run_batch(stages, batch.id, concurrency=1, cancel=cancel), finished.set()), daemon=True)
        runner.start()
        while origin.connections == 0 and runner.is_alive():  # the download has started
            runner.join(0.05)
        cancel.set()
        assert finished.wait(20), "Stop did not end the run while the origin was still dripping"
    (item,) = stages.store.list_items(batch.id)
    assert item.status == "pending" and not item.error
