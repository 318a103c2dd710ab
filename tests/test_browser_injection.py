"""Content injection in a real browser: Markdown hidden in file names, CSV cells and a batch name must show
as literal text, never as an image that loads (a tracking beacon) or a link (phishing).

`streamlit run` on a free port (tiny model, offline summaries, as tests/test_browser.py) driven by Debian
Chromium through Playwright. A local HTTP server plays the attacker's host and counts every request.
The upload is a CSV and a zip:
- CSV SKUs `![b](http://HOST/beacon.png)` (twice: a duplicate-SKU notice) and `[click](http://HOST/phish)`,
  the first row's image cell `![r](//HOST/beacon-relative.png)` (missing: the item fails with the cell
  in its error, shown on the Review page); one photo in all, to keep the run short;
- a zip member `notes [click](http://HOST/phish) see http://HOST/bare www.example.com.txt` (a skipped-file
  notice: a Markdown link, a bare URL and a www. address);
- the batch name typed in the browser, with all of the above.
Each page is checked: no element has a src / href to HOST, the beacon server got no request, and the
literal text is on screen. Screenshots go to test-artifacts/browser/injection-*.png."""

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
from support.servers import CountingServer

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WORD_JOINER = "\u2060"  # dashboard/text.py breaks bare URLs with it; invisible, so drop it before comparing


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
def attacker():
    with CountingServer() as server:
        yield server


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, tiny_model):
    data = tmp_path_factory.mktemp("browser-injection-data")
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
           "MAX_NEW_TOKENS": "8", "CONCURRENCY": "2", "AUTH_MODE": "dev", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
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
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def page():
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (apt-get install -y chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        yield context.new_page()
        context.close()
        browser.close()


class Hostile:
    def __init__(self, host: str) -> None:
        self.host = host
        self.image = f"![b](http://{host}/beacon.png)"
        self.link = f"[click](http://{host}/phish)"
        self.relative_image = f"![r](//{host}/beacon-relative.png)"
        self.member = f"notes {self.link} see http://{host}/bare www.example.com.txt"
        self.batch_name = f"Batch {self.image} {self.link} http://{host}/bare-name"

    def upload(self, folder: Path) -> list[str]:
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerows([["sku", "image"], [self.link, self.relative_image], [self.image, "a.jpg"], [self.image, "b.jpg"]])  # no b.jpg: one photo to caption
        (folder / "products.csv").write_text(table.getvalue(), encoding="utf-8")
        with zipfile.ZipFile(folder / "photos.zip", "w") as archive:
            archive.writestr("a.jpg", jpeg_bytes(color=(200, 30, 30), seed=1))
            archive.writestr(self.member, b"not a photo")
        return [str(folder / "products.csv"), str(folder / "photos.zip")]


def links_and_images_to(page, host: str) -> list[str]:
    """Every element of the page that would load or link to `host` (src, href, srcset, poster, data)."""
    return page.evaluate(
        """host => Array.from(document.querySelectorAll('[src],[href],[srcset],[poster],[data]'))
               .map(e => `${e.tagName} ${['src', 'href', 'srcset', 'poster', 'data'].map(a => e.getAttribute(a) || '').join(' ')}`)
               .filter(text => text.includes(host))""",
        host)


def alert_texts(page) -> list[str]:
    return [text.replace(WORD_JOINER, "") for text in page.get_by_test_id("stAlert").all_inner_texts()]


def assert_inert(page, attacker: CountingServer, host: str) -> None:
    page.wait_for_timeout(500)  # give any image the frontend rendered time to request its URL
    found = links_and_images_to(page, host)
    requests = list(attacker.requests)
    assert (found, requests) == ([], []), f"rendered {found}; the attacker's server got {requests}"
    assert page.locator("[data-testid=stAlert] a, [data-testid=stAlert] img").count() == 0


@pytest.mark.browser
def test_injected_markdown_neither_loads_nor_links_in_chromium(dashboard, attacker, page, tmp_path):
    host = f"127.0.0.1:{attacker.port}"
    hostile = Hostile(host)
    page.goto(dashboard)
    expect(page.get_by_role("heading", name="Tag photos")).to_be_visible(timeout=60_000)

    # Tag page, before running: notices name the zip member and the duplicated SKU.
    page.locator("input[type=file]").set_input_files(hostile.upload(tmp_path))
    expect(page.get_by_text("Ready to tag")).to_be_visible(timeout=30_000)
    skipped = page.get_by_test_id("stAlert").filter(has_text="(not an image)")
    expect(skipped).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stAlert").filter(has_text="appears 2 times")).to_be_visible()
    assert_inert(page, attacker, host)
    texts = alert_texts(page)
    assert f"photos.zip: skipped {hostile.member} (not an image)" in texts
    assert any(text.startswith(f"SKU {hostile.image} appears 2 times") for text in texts)

    name = page.get_by_label("Batch name")
    name.fill(hostile.batch_name)
    name.press("Enter")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_text("3 of 3 done · 2 failed · finished")).to_be_visible(timeout=120_000)
    expect(page.get_by_role("combobox", name="Batch")).to_have_value(f"{hostile.batch_name} (#1, 3/3 done)", timeout=30_000)
    # the page's own run is over (Streamlit's marker): a click now is not merged into a rerun of Tag (test_browser)
    expect(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "injection-1-tag.png"), full_page=True)
    assert_inert(page, attacker, host)

    # Review page: the failed item (first) shows its error, which quotes the CSV's image cell.
    page.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Review")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stAlert").filter(has_text="Could not be tagged")).to_be_visible(timeout=30_000)
    assert (f"Could not be tagged: Line 2: image {hostile.relative_image} was not found next to the CSV or in an uploaded zip."
            in alert_texts(page))
    expect(page.get_by_role("combobox", name="Item")).to_have_value(f"#1 {hostile.link}")  # selectbox options: plain text
    page.screenshot(path=str(ARTIFACTS / "injection-2-review.png"), full_page=True)
    assert_inert(page, attacker, host)

    # Export page: the batch name in the multiselect.
    page.get_by_role("link", name="Export").click()
    expect(page.get_by_role("heading", name="Export")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stMultiSelect")).to_contain_text(f"{hostile.batch_name} (#1)", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "injection-3-export.png"), full_page=True)
    assert_inert(page, attacker, host)
