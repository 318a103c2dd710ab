"""The dashboard in a real browser: `streamlit run` on a free port, driven by Debian Chromium through
Playwright. Upload a zip of 3 photos, wait for results, edit a summary, download the CSV, check the
edit is in it. Screenshots of each page go to test-artifacts/browser/."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from support.images import jpeg_bytes

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EDITED = "Edited in the browser: a bright red cotton shirt with black stripes."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("streamlit did not become healthy")


@contextmanager
def serve(data: Path, tiny_model: Path, **env_extra: str):
    """`streamlit run dashboard/app.py` on a free port with its own DATA_DIR; yields the base URL."""
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
           "MAX_NEW_TOKENS": "8", "CONCURRENCY": "2", "AUTH_MODE": "dev",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", **env_extra}  # no AWS here: the Admin page must say so, not hang
    env.pop("OPENAI_API_KEY", None)
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, tiny_model):
    with serve(tmp_path_factory.mktemp("browser-data"), tiny_model) as url:
        yield url


@pytest.fixture
def chromium():
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (apt-get install -y chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    yield context.new_page()
    context.close()


def idle(page):
    """The app's root says its script is not running (Streamlit's own marker for tests)."""
    return page.locator("[data-testid=stApp][data-test-script-state=notRunning]")


def menu(page) -> list[str]:
    """The sidebar's page links as shown, icon names dropped (the last line of each link)."""
    return [text.split("\n")[-1].strip() for text in page.get_by_test_id("stSidebarNavLink").all_inner_texts()]


def three_photo_zip(folder: Path) -> Path:
    path = folder / "three-shirts.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index, color in enumerate([(200, 30, 30), (30, 160, 60), (40, 40, 210)]):
            archive.writestr(f"shirt-{index}.jpg", jpeg_bytes(color=color, seed=index))
    return path


def test_upload_run_edit_and_download_in_chromium(dashboard, page, tmp_path):
    page.goto(dashboard)
    expect(page.get_by_role("heading", name="Tag photos")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Local dev mode")).to_be_visible()

    page.locator("input[type=file]").set_input_files(str(three_photo_zip(tmp_path)))
    expect(page.get_by_text("Ready to tag")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_text("3 of 3 done · 0 failed · finished")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stDataFrame").last).to_be_visible(timeout=30_000)  # results grid (a canvas)
    # "finished" is drawn by the page's own run, after the progress fragment's last rerun: once that run is
    # over nothing else reruns the page, so the click below cannot be merged into a rerun of Tag (CI, stop 24).
    expect(idle(page)).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "1-tag.png"), full_page=True)

    page.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Review")).to_be_visible(timeout=30_000)
    summary = page.get_by_label("Summary", exact=True)
    summary.fill(EDITED)
    summary.press("Control+Enter")  # commit the text to the app before saving
    expect(page.get_by_text(f"{len(EDITED.split())} / 50 words")).to_be_visible(timeout=30_000)
    page.locator(".st-key-focus-save button").click()  # the one-item view's Save (its name carries the S shortcut)
    expect(page.get_by_text("Saved: 1 change saved.")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("dev@localhost").first).to_be_visible()  # edit history of the item
    page.screenshot(path=str(ARTIFACTS / "2-review.png"), full_page=True)

    page.get_by_role("link", name="Export").click()
    expect(page.get_by_role("heading", name="Export")).to_be_visible(timeout=30_000)
    page.get_by_text("All", exact=True).click()
    expect(page.get_by_text("3 items selected.")).to_be_visible(timeout=30_000)
    with page.expect_download(timeout=30_000) as download_info:
        page.get_by_role("button", name="Download CSV report").click()
    data = Path(download_info.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(data)))
    assert len(rows) == 3
    assert [row["summary"] for row in rows].count(EDITED) == 1
    page.screenshot(path=str(ARTIFACTS / "3-export.png"), full_page=True)

    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Admin")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Endpoint status unavailable")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Monthly cost by scenario")).to_be_visible(timeout=30_000)  # plotly chart title
    page.screenshot(path=str(ARTIFACTS / "4-admin.png"), full_page=True)


@pytest.mark.parametrize(("path", "heading"), [("tag", "Tag photos"), ("review", "Review"), ("export", "Export"), ("admin", "Admin")])
def test_a_page_typed_as_the_first_url_of_a_fresh_server_shows_the_apps_menu(path, heading, chromium, tiny_model, tmp_path):
    """Issue 16: a typed /review or /tag on a freshly started server showed the pages/ folder's raw list
    (app, admin, export, review, tag) as the sidebar until the next click; only admin and export restarted
    through app.py. Now every page does: the typed page stays open and the sidebar is the app's menu."""
    with serve(tmp_path / "data", tiny_model) as url:
        first = chromium.new_page(viewport={"width": 1400, "height": 1000})
        first.goto(f"{url}/{path}")  # the server's first visit: Streamlit still runs the pages/ folder's menu
        expect(first.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=60_000)
        other = chromium.new_page(viewport={"width": 1400, "height": 1000})
        other.goto(url)  # the home page runs app.py: its menu is the reference
        expect(other.get_by_role("heading", name="Tag photos")).to_be_visible(timeout=60_000)
        expect(idle(other)).to_have_count(1, timeout=30_000)
        app_menu = menu(other)
        assert "Review" in app_menu and "app" not in app_menu, app_menu
        expect(first.get_by_test_id("stSidebarNavLink")).to_have_count(len(app_menu), timeout=30_000)
        expect(idle(first)).to_have_count(1, timeout=30_000)
        first.screenshot(path=str(ARTIFACTS / f"direct-{path}.png"))
        assert menu(first) == app_menu
        expect(first.get_by_role("heading", name=heading, exact=True)).to_be_visible()  # still the page that was typed
        assert first.url.rstrip("/").endswith("" if path == "tag" else f"/{path}")  # Tag is the default page: /
        other.close()
        first.close()


def seed_processed(data: Path, count: int) -> None:
    """`count` finished items with their own photos in a fresh store under `data` (no model run)."""
    from pipeline.models import (
        AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult,
    )
    from pipeline.store.sqlite_store import SqliteStore

    data.mkdir(parents=True)
    store = SqliteStore(data / "pipeline.sqlite3")
    sources = [SourceItem(source=f"shirt-{i}.jpg", ref=SourceRef("file", f"/nowhere/{i}.jpg"), sku=f"SKU-{i}") for i in range(count)]
    batch = store.create_batch("fit", "test", IngestReport(items=sources))
    for index, item in enumerate(store.list_items(batch.id)):
        photo = data / f"photo-{index}.jpg"
        photo.write_bytes(jpeg_bytes(color=(200, 40 * index % 256, 60), seed=index))
        store.save_result(item.id, ItemResult(
            content_key=f"{index:064x}", image_path=str(photo), word_count=20,
            checks=PhotoChecks(800, 600, False, 400.0, False, 180.0, False, False, True, True, ["red"]),
            caption=CaptionResult(caption="a red cotton shirt with black stripes on a white background", answers={}, model_id="test"),
            attributes=[AttributeValue(name, "red", "red", True) for name in ("category", "color", "material", "pattern", "style")],
            summary=SummaryResult(summary="A red cotton shirt with black stripes, cut for a relaxed fit. Breathable and soft, it "
                                          "pairs with denim for weekends.", title="Red shirt", tags=["shirt"], attributes={},
                                  model="offline", offline=True),
        ), [])


def test_review_grid_fits_a_1366_px_screen_with_the_sidebar_open(chromium, tiny_model, tmp_path):
    """Issue 16: photo, caption, attributes and summary visible without scrolling sideways on a 1366 x 768
    screen (sidebar open, wide layout): the grid is inside the window and does not scroll horizontally."""
    seed_processed(tmp_path / "data", 3)
    with serve(tmp_path / "data", tiny_model) as url:
        page = chromium.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{url}/review")
        expect(page.get_by_role("heading", name="Review", exact=True)).to_be_visible(timeout=60_000)
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_be_visible(timeout=30_000)
        expect(idle(page)).to_have_count(1, timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "review-1366.png"))
        assert page.get_by_test_id("stSidebar").bounding_box()["width"] > 200  # the sidebar is open
        box = grid.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 1366, box
        # The grid draws on a canvas and fills its accessible header cells a moment later: wait for them.
        header_js = "() => [...document.querySelectorAll('[data-testid=stDataFrame] [role=columnheader]')].map(h => h.innerText.trim())"
        page.wait_for_function(f"() => ({header_js})().includes('Summary')", timeout=30_000)
        headers = page.evaluate(header_js)
        assert {"Photo", "Caption", "Attributes", "Summary"} <= set(headers), headers
        widths = page.evaluate("""() => [...document.querySelectorAll('[data-testid=stDataFrame] .dvn-scroller')]
                                       .map(s => [s.scrollWidth, s.clientWidth])""")
        assert widths and all(scroll <= client for scroll, client in widths), widths  # nothing to scroll to sideways
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_a_summary_typed_into_the_review_grid_is_saved(chromium, tiny_model, tmp_path):
    """Issue 20: the grid's own cell editor, driven from the keyboard as a person does (the AppTest tests can only
    write the editor's state): select a row's Item cell, move to Summary, type, Enter, Save changes."""
    from pipeline.store.sqlite_store import SqliteStore

    seed_processed(tmp_path / "data", 3)
    typed = "A red striped cotton shirt, typed into the grid."
    with serve(tmp_path / "data", tiny_model) as url:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/review")
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_be_visible(timeout=60_000)
        expect(idle(page)).to_have_count(1, timeout=30_000)
        header_js = "() => [...document.querySelectorAll('[data-testid=stDataFrame] [role=columnheader]')].map(h => h.innerText.trim())"
        page.wait_for_function(f"() => ({header_js})().includes('Summary')", timeout=30_000)
        headers = page.evaluate(header_js)
        grid.scroll_into_view_if_needed()
        page.wait_for_function("""() => new Promise(done => {  // the page has stopped moving the grid (two frames)
            const at = () => document.querySelector('[data-testid=stDataFrame]').getBoundingClientRect().y;
            const before = at();
            requestAnimationFrame(() => requestAnimationFrame(() => done(at() === before)));
        })""", timeout=30_000)
        box = grid.bounding_box()
        # the canvas has no cells to click by name: the first row's Item cell (columns Select 40, Photo 72, Item 100 px)
        page.mouse.click(box["x"] + 40 + 72 + 50, box["y"] + 35 + 36)
        page.wait_for_function("() => !!document.activeElement?.closest('[data-testid=stDataFrame]')", timeout=30_000)
        for _ in range(headers.index("Summary") - headers.index("Item")):
            page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")  # opens the cell's editor: a text box over the cell
        editor = page.locator("textarea.gdg-input")
        expect(editor).to_be_visible(timeout=30_000)
        editor.fill(typed)
        editor.press("Enter")  # commits the cell
        expect(page.get_by_text("Unsaved edits in 1 item:")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Save changes").click()
        expect(page.get_by_text("Saved: 1 change saved.")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "review-grid-edit.png"))
    store = SqliteStore(tmp_path / "data" / "pipeline.sqlite3")
    first, *others = store.list_items(store.list_batches()[0].id)
    assert first.summary == typed and [edit.who for edit in store.edits(first.id)] == ["dev@localhost"]
    assert all(item.summary.startswith("A red cotton shirt with black stripes") for item in others)
