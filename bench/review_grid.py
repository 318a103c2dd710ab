"""Review page with a big batch: time to render it and to save one edit, through AppTest.

A store is filled with N processed items (synthetic results, no model needed), then the real
dashboard script runs: the Review page render, and one summary edit saved (the save run includes
the store write and the page's refresh). 200 items are measured beside 2,000 to show the scaling.
Every item has its own stored photo (a 480x360 JPEG, as the normalizer keeps them up to 768 px), so
the render includes the grid's thumbnails: `render_s` is the first view (every thumbnail made),
`render_warm_s` the next run (thumbnails cached), `grid_payload_mb` the grid's Arrow data sent to the browser (one page of rows).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.models import (
    AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult,
)
from pipeline.store.sqlite_store import SqliteStore

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def photo_file(folder: Path, index: int) -> Path:
    """A distinct small product-like JPEG per item (content-keyed files in the real image store)."""
    from PIL import Image, ImageDraw

    path = folder / f"{index:05d}.jpg"
    image = Image.new("RGB", (480, 360), (250, 250, 250))
    ImageDraw.Draw(image).rectangle((120 + index % 50, 60, 360, 300 - index % 40), fill=(index * 7 % 256, 40, 200 - index % 150))
    image.save(path, format="JPEG", quality=85)
    return path


def processed_result(item_id: int, image_path: str = "") -> ItemResult:
    """A typical finished item: caption, five attributes, a ~30-word summary, photo checks."""
    checks = PhotoChecks(800, 600, False, 400.0, False, 180.0, False, False, True, True, ["red", "white", "black"])
    return ItemResult(
        content_key=f"{item_id:064x}", image_path=image_path, checks=checks, word_count=24,
        caption=CaptionResult(caption="a red cotton shirt with black stripes on a white background", answers={}, model_id="bench"),
        attributes=[AttributeValue(name, "red", "red", True) for name in ("category", "color", "material", "pattern", "style")],
        summary=SummaryResult(
            summary="A red cotton shirt with black stripes, cut for a relaxed fit. Breathable and soft, it pairs with denim "
                    "for weekends or chinos for the office.",
            title="Red striped cotton shirt", tags=["shirt", "red", "cotton", "striped"], attributes={}, model="offline", offline=True,
        ),
    )


def fill_store(data_dir: Path, count: int) -> int:
    store = SqliteStore(data_dir / "pipeline.sqlite3")
    items = [SourceItem(source=f"photos.zip:item-{i:05d}.jpg", ref=SourceRef("file", f"/nowhere/{i}.jpg"), sku=f"SKU-{i:05d}") for i in range(count)]
    batch = store.create_batch("bench", "bench", IngestReport(items=items))
    photos = data_dir / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(store.list_items(batch.id)):
        store.save_result(record.id, processed_result(record.id, str(photo_file(photos, index))), [])
    return batch.id


def time_review(data_dir: Path, count: int) -> dict:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ.update({"DATA_DIR": str(data_dir), "SUMMARIZER": "offline", "AUTH_MODE": "dev"})
    st.cache_resource.clear()
    from dashboard.components import _THUMBNAILS

    _THUMBNAILS.clear()  # the page's thumbnail cache: start cold
    batch_id = fill_store(data_dir, count)
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.switch_page("pages/review.py")
    started = time.perf_counter()
    app.run()
    render_s = time.perf_counter() - started
    from pipeline.settings import Settings

    rows = min(count, Settings().results_page_size)  # the grid pages its rows; the page still reads all `count` items
    assert not app.exception and len(app.data_editor[0].value) == rows, app.exception
    photos = app.data_editor[0].value["Photo"]
    assert photos.str.startswith("data:image/jpeg;base64,").all(), "every row has its thumbnail"
    payload_mb = len(app.data_editor[0].proto.arrow_data.data) / 1e6
    started = time.perf_counter()
    app.run()
    render_warm_s = time.perf_counter() - started
    app.session_state[f"grid-{batch_id}-0"] = {"edited_rows": {rows // 2: {"Summary": "An edited summary."}}, "added_rows": [], "deleted_rows": []}
    app.run()  # the edit reaches the page (the live word check)
    [save] = [b for b in app.button if b.label == "Save changes"]
    started = time.perf_counter()
    save.click().run()
    save_s = time.perf_counter() - started
    assert any("1 change saved" in s.value for s in app.success), [e.value for e in app.error]
    st.cache_resource.clear()
    return {"items": count, "grid_rows": rows, "render_s": round(render_s, 3), "render_warm_s": round(render_warm_s, 3),
            "save_one_edit_s": round(save_s, 3), "grid_payload_mb": round(payload_mb, 2)}


def bench_review_grid(workdir: Path) -> dict:
    small = time_review(workdir / "small", 200)
    large = time_review(workdir / "large", 2000)
    return {
        "items_200": small, "items_2000": large,
        "render_ratio_2000_vs_200": round(large["render_s"] / small["render_s"], 2),
        "goal_s": 2.0,
    }


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(bench_review_grid(Path(workdir)), indent=2))
