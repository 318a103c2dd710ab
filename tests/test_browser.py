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


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, tiny_model):
    data = tmp_path_factory.mktemp("browser-data")
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
           "MAX_NEW_TOKENS": "8", "CONCURRENCY": "2", "AUTH_MODE": "dev",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # no AWS here: the Admin page must say so, not hang
    env.pop("OPENAI_API_KEY", None)
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"]
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


@pytest.fixture
def page():
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (apt-get install -y chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        yield context.new_page()
        context.close()
        browser.close()


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
