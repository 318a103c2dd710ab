import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from support.images import jpeg_bytes


def run_cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, timeout=timeout)


def cli_env(tmp_path, tiny_model, **extra):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update({"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "MAX_NEW_TOKENS": "6", "CAPTIONER": "local", **extra})
    return env


def test_cli_tags_a_zip_and_a_csv_end_to_end(tmp_path, tiny_model):
    with zipfile.ZipFile(tmp_path / "shoot.zip", "w") as archive:
        archive.writestr("a/1.jpg", jpeg_bytes(seed=1))
        archive.writestr("a/2.jpg", jpeg_bytes(seed=2))
        archive.writestr("broken.jpg", b"nope")
        archive.writestr("manifest.csv", "sku,image,brand\nZ-1,a/1.jpg,Acme\n")
    (tmp_path / "solo.jpg").write_bytes(jpeg_bytes(seed=3))
    (tmp_path / "list.csv").write_text("sku,image,title\nC-1,solo.jpg,Blue mug\nC-2,nowhere.jpg,\n")
    out = tmp_path / "report.csv"
    result = run_cli(["tag", str(tmp_path / "shoot.zip"), str(tmp_path / "list.csv"), "--out", str(out), "--summarizer", "offline", "--concurrency", "2"],
                     cli_env(tmp_path, tiny_model))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "3 tagged, 2 failed"
    assert "Traceback" not in result.stderr
    rows = {row["source"]: row for row in csv.DictReader(io.StringIO(out.read_text()))}
    assert rows["shoot.zip:a/1.jpg"]["sku"] == "Z-1" and rows["shoot.zip:a/1.jpg"]["status"] == "ok"
    assert rows["list.csv line 2"]["title"] == "Blue mug" and rows["list.csv line 2"]["summary_model"].startswith("offline")
    assert rows["shoot.zip:broken.jpg"]["status"] == "error" and "not a readable image" in rows["shoot.zip:broken.jpg"]["error"]
    assert "was not found" in rows["list.csv line 3"]["error"]


def test_fatal_configuration_errors_are_one_line_without_traceback(tmp_path, tiny_model):
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    cases = [
        (cli_env(tmp_path, tiny_model, CAPTION_MODEL=str(tmp_path / "no-model")), "Could not load the captioning model"),
        (cli_env(tmp_path, tiny_model, SUMMARIZER="openai"), "needs OPENAI_API_KEY"),
        (cli_env(tmp_path, tiny_model, CONCURRENCY="many"), "setting CONCURRENCY"),
    ]
    for env, message in cases:
        result = run_cli(["tag", str(image), "--out", str(tmp_path / "r.csv")], env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr
        assert "Traceback" not in result.stderr
    missing = run_cli(["tag", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "r.csv")], cli_env(tmp_path, tiny_model))
    assert missing.returncode == 2 and "Not found" in missing.stderr


def test_make_test_model_writes_a_loadable_checkpoint(tmp_path, tiny_model):
    result = run_cli(["make-test-model", str(tmp_path / "m")], cli_env(tmp_path, tiny_model))
    assert result.returncode == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {p.name for p in (tmp_path / "m").iterdir()}


def test_kill_and_resume_loses_nothing(tmp_path, tiny_model):
    """SIGKILL mid-batch, then --resume: every item ends done, and nothing finished before the kill is redone."""
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as archive:
        for i in range(150):
            archive.writestr(f"{i:03}.jpg", jpeg_bytes(size=(320, 240), seed=i))
    env = cli_env(tmp_path, tiny_model, CAPTION_CACHE="false", MAX_NEW_TOKENS="20")
    out = tmp_path / "report.csv"
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "tag", str(tmp_path / "many.zip"), "--out", str(out), "--concurrency", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db_path = tmp_path / "data" / "pipeline.sqlite3"
    done_before: set[int] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if db_path.exists():
            try:
                with sqlite3.connect(db_path, timeout=1) as db:
                    done_before = {row[0] for row in db.execute("SELECT id FROM items WHERE status = 'ok'")}
            except sqlite3.OperationalError:
                pass
        if len(done_before) >= 5:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    with sqlite3.connect(db_path) as db:
        done_before = {row[0] for row in db.execute("SELECT id FROM items WHERE status = 'ok'")}
        batch_id = db.execute("SELECT id FROM batches").fetchone()[0]
    assert 5 <= len(done_before) < 150

    result = run_cli(["tag", "--resume", str(batch_id), "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "150 tagged, 0 failed"
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0] == 150
        calls = dict(db.execute("SELECT item_id, COUNT(*) FROM usage WHERE kind = 'local' GROUP BY item_id").fetchall())
    assert all(calls[item_id] == 1 for item_id in done_before)  # finished work was not redone
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == 150


# Issue 16 item 7: every CLI error is one plain sentence, exit 2, no traceback ---------------------------
def no_aws_env(tmp_path, tiny_model, **extra):
    env = cli_env(tmp_path, tiny_model, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
                  AWS_EC2_METADATA_DISABLED="true", **extra)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update(extra)
    return env


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected problem" not in lines[0]
    return lines[0]


def serve_aws_error(status: int, code: str, message: str):
    """A local stand-in for the SageMaker API that answers every request with one JSON error."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"__type": code, "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("x-amzn-ErrorType", code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_endpoint_commands_without_aws_say_what_to_configure_in_one_line(tmp_path, tiny_model):
    env = no_aws_env(tmp_path, tiny_model)
    for action in ("status", "start", "stop", "autostop"):  # was: error: unexpected problem (NoCredentialsError)
        line = one_error_line(run_cli(["endpoint", action], env, timeout=120))
        assert "No usable AWS credentials" in line and "AWS_ACCESS_KEY_ID" in line and "AWS_PROFILE" in line, line

    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    unreachable = one_error_line(run_cli(["endpoint", "status", "--endpoint-url", "http://127.0.0.1:9"], {**env, **keys}, timeout=120))
    assert "Could not reach AWS at http://127.0.0.1:9" in unreachable and "AWS_REGION" in unreachable, unreachable

    no_region = one_error_line(run_cli(["endpoint", "status"], {**env, **keys, "AWS_REGION": ""}, timeout=120))
    assert "No AWS region is set: set AWS_REGION" in no_region, no_region

    server = serve_aws_error(400, "AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized to perform: sagemaker:DescribeEndpoint")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        denied = one_error_line(run_cli(["endpoint", "status", "--endpoint-url", url], {**env, **keys}, timeout=120))
    finally:
        server.shutdown()
    assert "AWS refused DescribeEndpoint (AccessDeniedException)" in denied and "lack permission" in denied, denied


def test_report_path_problems_are_one_plain_sentence(tmp_path, tiny_model):
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    line = one_error_line(run_cli(["tag", str(image), "--out", str(tmp_path / "no-dir" / "r.csv")], cli_env(tmp_path, tiny_model)))
    assert line == f"error: The folder for --out does not exist: {tmp_path / 'no-dir'}"  # was a full run, then FileNotFoundError
    assert not (tmp_path / "data" / "pipeline.sqlite3").exists()  # refused before any work


def test_an_unreachable_hub_model_ends_in_one_line_without_retry_noise(tmp_path, tiny_model):
    """Issue 16 item 9: ~10 'Retrying in 1s [Retry 1/5]' / 'thrown while requesting HEAD' lines reached the terminal,
    and the message said 'cached files..'."""
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    env = cli_env(tmp_path, tiny_model, CAPTION_MODEL="acme/no-such-model", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(key, None)
    line = one_error_line(run_cli(["tag", str(image), "--out", str(tmp_path / "r.csv")], env))
    assert line.startswith("error: Could not load the captioning model 'acme/no-such-model'"), line
    assert ".." not in line.replace("...", ""), line


# Issue 19: `export BATCH_ID --format ... --out FILE` ---------------------------------------------------
def seeded_export_store(tmp_path, *, approved: int = 2, failed: int = 1, empty_batch: bool = False) -> tuple[int, int]:
    """A store in DATA_DIR with one batch of tagged items (the first `approved` approved) and `failed` failed ones,
    plus an empty batch. No model runs: results are written as the runner would."""
    from pipeline.models import AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult
    from pipeline.store.sqlite_store import SqliteStore

    store = SqliteStore(tmp_path / "data" / "pipeline.sqlite3")
    count = approved + 1 + failed
    sources = [SourceItem(source=f"s{i}.jpg", ref=SourceRef("url", f"https://cdn.example/s{i}.jpg"), sku=f"S-{i}", hints={"brand": "Acme"})
               for i in range(count)]
    batch = store.create_batch("cli export", "test", IngestReport(items=sources))
    items = store.list_items(batch.id)
    for index, stored in enumerate(items[: approved + 1]):
        store.save_result(stored.id, ItemResult(
            content_key=f"{index:064x}", image_path="/nowhere.jpg", word_count=4, attributes=[AttributeValue("category", "mug", "mug", True)],
            checks=PhotoChecks(800, 600, False, 400.0, False, 180.0, False, False, True, True, ["white"]),
            caption=CaptionResult(caption=f"a white mug {index}", answers={}, model_id="test"),
            summary=SummaryResult(summary=f"=cmd A white mug {index}.", title=f"Mug {index}", tags=["mug"], attributes={}, model="offline", offline=True)), [])
        if index < approved:
            store.edit_item(stored.id, "review_status", "approved", "someone")
    for stored in items[approved + 1:]:
        store.save_error(stored.id, "Could not read the image.", [])
    empty = store.create_batch("empty", "test", IngestReport(items=[])).id if empty_batch else 0
    return batch.id, empty


def export_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update({"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "CAPTIONER": "local"})
    return env


def test_export_writes_each_format_from_the_command_line(tmp_path):
    from support.feed_rules import google_feed_problems, read_google_tsv, read_woo_csv, woocommerce_problems

    batch_id, _ = seeded_export_store(tmp_path)
    env = export_env(tmp_path)
    google = run_cli(["export", str(batch_id), "--format", "google-merchant", "--out", "-"], env, timeout=120)
    assert google.returncode == 0, google.stderr
    data = google.stdout.encode()
    assert google_feed_problems(data) == []
    assert [(row["id"], row["google_product_category"], row["brand"]) for row in read_google_tsv(data)[1]] == [("S-0", "2169", "Acme"), ("S-1", "2169", "Acme")]
    notes = google.stderr.strip().splitlines()
    assert notes[-1] == "2 rows written to standard output"
    assert "note: 2 products (#1, #2): price is empty: Merchant Center requires it (like 19.99 USD); add it there (a supplemental feed keyed by id)." in notes

    out = tmp_path / "woo.csv"
    woo = run_cli(["export", str(batch_id), "--format", "woocommerce", "--items", "all", "--out", str(out)], env, timeout=120)
    assert woo.returncode == 0, woo.stderr
    assert woo.stdout.strip() == f"3 rows written to {out}" and "Traceback" not in woo.stderr
    assert woocommerce_problems(out.read_bytes()) == []
    assert [row["SKU"] for row in read_woo_csv(out.read_bytes())[1]] == ["S-0", "S-1", "S-2"]  # all tagged; the failed one has no product


def test_export_report_and_shopify_match_the_export_page_files(tmp_path, monkeypatch, capsys):
    from pipeline.attributes import load_attribute_schema
    from pipeline.batches.export import export_csv, export_shopify_csv, filter_items
    from pipeline.cli import main
    from pipeline.store.sqlite_store import SqliteStore

    batch_id, _ = seeded_export_store(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    items = SqliteStore(tmp_path / "data" / "pipeline.sqlite3").list_items(batch_id)
    for fmt, which, expected in (("report", "failed", export_csv(filter_items(items, "failed"), load_attribute_schema())),
                                 ("report", "approved", export_csv(filter_items(items, "approved"), load_attribute_schema(), excel_bom=True)),
                                 ("shopify", "all", export_shopify_csv(filter_items(items, "all")))):
        out = tmp_path / f"{fmt}-{which}.csv"
        assert main(["export", str(batch_id), "--format", fmt, "--items", which, "--out", str(out), *(["--excel"] if which == "approved" else [])]) == 0
        assert out.read_bytes() == expected
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report-approved.csv").read_bytes().decode("utf-8-sig"))))
    assert [row["summary"] for row in rows] == ["'=cmd A white mug 0.", "'=cmd A white mug 1."]  # formula-escaped as on the page
    assert capsys.readouterr().err == ""


def test_export_problems_are_one_plain_sentence(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    batch_id, empty_id = seeded_export_store(tmp_path, approved=0, empty_batch=True)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    out = str(tmp_path / "out.tsv")
    cases = [
        (["export", "999", "--out", out], "error: There is no batch 999."),
        (["export", str(empty_id), "--out", out], f"error: Batch {empty_id} has no items to export."),
        (["export", str(batch_id), "--format", "google-merchant", "--out", out],
         f"error: Batch {batch_id} has no approved items to export (--items all exports every tagged item)."),
        (["export", str(batch_id), "--format", "woocommerce", "--items", "failed", "--out", out],
         "error: Failed items have no product data: a product file lists tagged items only (try --items approved or all)."),
        (["export", str(batch_id), "--items", "all", "--out", str(tmp_path / "no-dir" / "r.csv")],
         f"error: The folder for --out does not exist: {tmp_path / 'no-dir'}"),
        (["export", str(batch_id), "--items", "all", "--out", str(tmp_path)], f"error: --out is a folder, not a file: {tmp_path}"),
        (["export", str(batch_id), "--items", "all", "--out", "/dev/full"], "error: Could not write /dev/full: No space left on device."),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.strip().splitlines() == [message] and captured.out == ""
    assert not (tmp_path / "out.tsv").exists()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    assert main(["export", "1", "--out", out]) == 2
    assert capsys.readouterr().err.strip() == (f"error: There is no batch 1: no store at {tmp_path / 'elsewhere' / 'pipeline.sqlite3'} yet "
                                               "(is DATA_DIR set as when you tagged?).")
    assert not (tmp_path / "elsewhere").exists()  # nothing created by looking


def test_export_report_has_the_active_taxonomys_columns(tmp_path, monkeypatch):
    """An attribute added by the active taxonomy version is a report column of `export` (fails when the command
    reads the configured default schema)."""
    from pipeline.admin.taxonomy import activate_taxonomy, save_taxonomy
    from pipeline.cli import main
    from pipeline.store.sqlite_store import SqliteStore

    batch_id, _ = seeded_export_store(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    store = SqliteStore(tmp_path / "data" / "pipeline.sqlite3")
    document = json.loads((Path(__file__).resolve().parent.parent / "pipeline" / "attribute_schema.json").read_text())
    document["attributes"].append({"name": "sleeve", "question": "How long are the sleeves?", "prefix": "sleeves are",
                                   "vocabulary": ["short", "long"], "synonyms": {}})
    save_taxonomy(store, json.dumps(document), "ana@example.com", based_on=0)
    activate_taxonomy(store, 1, "ana@example.com")
    out = tmp_path / "report.csv"
    assert main(["export", str(batch_id), "--items", "all", "--out", str(out)]) == 0
    header = next(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert "sleeve" in header and "color" in header


# An empty OPENAI_API_KEY (the .env template's `OPENAI_API_KEY=` line) is no key: every path that needs one says so
def test_an_empty_openai_key_is_unset_on_every_path_that_needs_one(tmp_path, tiny_model, monkeypatch, capsys):
    from pipeline.cli import main
    from pipeline.settings import Settings

    batch_id, _ = seeded_export_store(tmp_path)
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "CAPTIONER": "local",
                       "SUMMARIZER": "offline"}.items():
        monkeypatch.setenv(key, value)
    out = str(tmp_path / "r.csv")
    cases = [
        (["compare-captioners", str(batch_id)], {}, "error: The comparison needs OPENAI_API_KEY for the vision model (OPENAI_VISION_MODEL)."),
        (["tag", str(image), "--out", out], {"CAPTIONER": "openai-vision"},
         "error: CAPTIONER=openai-vision needs OPENAI_API_KEY (or use CAPTIONER=local)."),
        (["tag", str(image), "--out", out, "--summarizer", "openai"], {},
         "error: SUMMARIZER=openai needs OPENAI_API_KEY (or use SUMMARIZER=offline)."),
    ]
    for blank in ("", "   "):
        monkeypatch.setenv("OPENAI_API_KEY", blank)
        for argv, env, message in cases:
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            assert main(argv) == 2, argv
            assert capsys.readouterr().err.strip().splitlines() == [message], argv
            monkeypatch.setenv("CAPTIONER", "local")
        monkeypatch.delenv("SUMMARIZER")
        assert Settings().summarizer == "offline"  # "openai when OPENAI_API_KEY is set": an empty one is not set
        assert Settings().openai_api_key is None
        monkeypatch.setenv("SUMMARIZER", "offline")
    assert not Path(out).exists()


def test_tag_concurrency_out_of_range_is_one_sentence_before_any_work(tmp_path, tiny_model, monkeypatch, capsys):
    from pipeline.cli import main

    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "CAPTIONER": "local",
                       "SUMMARIZER": "offline"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "r.csv"
    for given in ("-1", "0", "65", "100000"):
        assert main(["tag", str(image), "--out", str(out), "--concurrency", given]) == 2
        shown = f"{int(given):,}"
        assert capsys.readouterr().err.strip().splitlines() == [f"error: --concurrency must be from 1 to 64 (got {shown})."]
    for given in ("0", "65"):  # the setting has the same bounds
        monkeypatch.setenv("CONCURRENCY", given)
        assert main(["tag", str(image), "--out", str(out)]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: setting CONCURRENCY: Input should be "), line
    assert not out.exists() and not (tmp_path / "data" / "pipeline.sqlite3").exists()  # no batch was started


# --out never overwrites the pipeline's own data (the SQLite store, its photos and uploads) -----------------------
def test_out_pointing_at_the_store_or_its_photos_is_refused_for_export_and_tag(tmp_path, tiny_model, monkeypatch, capsys):
    from pipeline.cli import main

    batch_id, _ = seeded_export_store(tmp_path)
    data = tmp_path / "data"
    for key, value in {"DATA_DIR": str(data), "CAPTION_MODEL": str(tiny_model), "CAPTIONER": "local", "SUMMARIZER": "offline"}.items():
        monkeypatch.setenv(key, value)
    db = data / "pipeline.sqlite3"
    before = store_rows(db)
    (data / "images").mkdir(exist_ok=True)
    photo = data / "images" / "ab.jpg"
    photo.write_bytes(b"a stored photo")
    (tmp_path / "link.csv").symlink_to(db)  # a symlink elsewhere that leads to the store
    (tmp_path / "photos").symlink_to(data / "images")
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    targets = [db, tmp_path / "link.csv", data / "images" / ".." / "pipeline.sqlite3", data / "pipeline.sqlite3-wal", photo,
               tmp_path / "photos" / "new.csv", data / "uploads" / "x" / "report.csv"]
    (data / "uploads" / "x").mkdir(parents=True)
    for target in targets:
        for argv in (["export", str(batch_id), "--items", "all", "--out", str(target)],
                     ["tag", str(image), "--out", str(target), "--summarizer", "offline"]):
            assert main(argv) == 2, argv
            captured = capsys.readouterr()
            assert captured.err.strip().splitlines() == [
                f"error: --out {target} is inside the pipeline's own data (DATA_DIR={data}): writing it would overwrite "
                "the store or its photos; write the file somewhere else."], argv
    assert store_rows(db) == before and photo.read_bytes() == b"a stored photo"  # the store still opens, unchanged
    assert not (data / "uploads" / "x" / "report.csv").exists() and not (data / "images" / "new.csv").exists()

    beside = data / "report.csv"  # a file of its own in DATA_DIR (say, the only mounted volume) is fine
    assert main(["export", str(batch_id), "--items", "all", "--out", str(beside)]) == 0
    assert len(list(csv.DictReader(io.StringIO(beside.read_text(encoding="utf-8"))))) == 4 and store_rows(db) == before


def store_rows(db: Path) -> tuple[list, list]:
    """Every batch and item row of the SQLite file (fails if it is no longer a database)."""
    with sqlite3.connect(db) as connection:
        return (connection.execute("SELECT * FROM batches ORDER BY id").fetchall(),
                connection.execute("SELECT id, status, summary, review_status FROM items ORDER BY id").fetchall())


# tag --cheapest says when it cannot save anything -------------------------------------------------------------
def test_tag_cheapest_says_when_it_runs_at_full_price_or_does_nothing(tmp_path, tiny_model, monkeypatch, capsys):
    from pipeline.cli import main
    from support.servers import FakeOpenAI, Reply

    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "CAPTIONER": "local",
                       "MAX_NEW_TOKENS": "6"}.items():
        monkeypatch.setenv(key, value)
    assert main(["tag", str(image), "--out", str(tmp_path / "offline.csv"), "--summarizer", "offline", "--cheapest"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "--cheapest" in line]
    assert notes == ["note: --cheapest does nothing with the offline summarizer: it makes no paid calls (--cheapest is for SUMMARIZER=openai)."]

    answer = {"title": "Red tee", "summary": "A red cotton tee.", "tags": ["tee"],
              "attributes": {"category": None, "color": "red", "material": None, "pattern": None, "style": None}}
    with FakeOpenAI() as server:
        server.state.default = Reply(content=answer, prompt_tokens=300, completion_tokens=40)
        for key, value in {"OPENAI_API_KEY": "sk-test-1234", "OPENAI_BASE_URL": server.base_url, "OPENAI_BATCH_MIN_ITEMS": "5",
                           "OPENAI_MAX_RETRIES": "0"}.items():
            monkeypatch.setenv(key, value)
        assert main(["tag", str(image), "--out", str(tmp_path / "openai.csv"), "--summarizer", "openai", "--cheapest"]) == 0
        captured = capsys.readouterr()
        notes = [line for line in captured.err.splitlines() if "--cheapest" in line]
        assert notes == ["note: --cheapest: 1 photo to summarize is below OPENAI_BATCH_MIN_ITEMS (5), so summaries run real time "
                         "at the full price."]
        assert "1 tagged, 0 failed" in captured.out
        assert len(server.state.requests) == 1 and server.state.batch_creates == []  # it did run real time


def test_the_cli_block_in_the_docs_lists_every_option_of_each_command():
    """docs/dashboard-and-cli.md's CLI block against the parser (what --help prints): every option and choice of each
    command is written there, and nothing the parser does not know."""
    import argparse
    import re

    from pipeline.cli import build_parser

    text = (Path(__file__).resolve().parent.parent / "docs" / "dashboard-and-cli.md").read_text(encoding="utf-8")
    block = text.split("## CLI", 1)[1].split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    written: dict[str, str] = {}
    for line in block.splitlines():
        match = re.match(r"python -m pipeline (\S+)(.*)", line.strip())
        if match:
            written[match[1]] = written.get(match[1], "") + match[2]
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(written) == set(commands)
    for name, parser in commands.items():
        shown = set(re.findall(r"--[a-z][a-z0-9-]*", written[name]))
        known = {option for action in parser._actions if action.help != argparse.SUPPRESS
                 for option in action.option_strings if option.startswith("--") and option != "--help"}
        assert shown == known, (name, sorted(known - shown), sorted(shown - known))
        for action in parser._actions:
            for choice in action.choices or []:
                if action.option_strings and action.help != argparse.SUPPRESS:
                    assert re.search(rf"(?<![\w-]){re.escape(str(choice))}(?![\w-])", written[name]), (name, choice)


def test_output_into_a_closed_pipe_is_no_error():
    """`python -m pipeline estimate ... | head -1`: the reader stops early; the command ends quietly instead of
    printing 'unexpected problem (BrokenPipeError ...)'."""
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "estimate", "--images-per-month", "1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    process.stdout.close()  # the reader is gone before the first line is written
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and errors == "", errors


# Review round (FIXLOG): user text on the terminal, settings sentences, no-endpoint deployments, estimate bounds -------
def _cli_env(monkeypatch, tmp_path, tiny_model=None, **extra):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    values = {"DATA_DIR": str(tmp_path / "data"), "CAPTIONER": "local", "SUMMARIZER": "offline", "MAX_NEW_TOKENS": "6", **extra}
    if tiny_model is not None:
        values["CAPTION_MODEL"] = str(tiny_model)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_file_names_echoed_by_tag_cannot_forge_lines_or_drive_the_terminal(tmp_path, tiny_model, monkeypatch, capsys):
    """Review item 6: zip member names went raw into `note:` lines: a newline forged a `note:` line, ANSI / OSC escapes
    (7-bit and the one-byte C1 CSI) reached the terminal, U+202E showed `gpj.exe` reversed. Look-alike notices (three
    copies of one photo), the rejected-file notice and the batch line all carry the names."""
    from pipeline.cli import main

    _cli_env(monkeypatch, tmp_path, tiny_model)
    photo = jpeg_bytes(seed=4)
    names = ["evil\nnote: FAKE all clear.jpg", "\x1b[31mred\x1b[0m\x1b]0;pwned\x07.jpg", "ملف\u202egpj.exe.jpg",
             "zero\u200bwidth\u2028sep.jpg"]
    archive = tmp_path / "hostile\r\nbatch 99: x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in names:
            zf.writestr(name, photo)
        zf.writestr("bad\x9b2J\x85name.txt", b"not a photo")
    assert main(["tag", str(archive), "--out", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    for raw in ("\x1b", "\x9b", "\x85", "\x07", "\u202e", "\u200b", "\u2028", "\r\n"):
        assert raw not in err, (raw, err)
    lines = err.split("\n")
    assert not any(line.startswith(("note: FAKE", "batch 99")) for line in lines), err
    notes = [line for line in lines if line.startswith("note: ")]
    assert any("evil\\nnote: FAKE all clear.jpg" in line and "\\u202egpj.exe.jpg" in line and "\\x1b]0;pwned\\x07" in line
               for line in notes), notes
    assert any("bad\\x9b2J\\x85name.txt" in line for line in notes), notes
    assert any(line.startswith("batch 1: hostile\\r\\nbatch 99: x.zip") for line in lines), err

    missing = tmp_path / "gone\n\x1b[2Jerror: fake.jpg"
    assert main(["tag", str(missing), "--out", str(tmp_path / "r.csv")]) == 2
    [line] = capsys.readouterr().err.strip().split("\n")
    assert line.startswith("error: Not found: ") and "gone\\n\\x1b[2Jerror: fake.jpg" in line


def test_a_settings_rule_across_variables_is_one_sentence_on_the_cli(tmp_path, monkeypatch, capsys):
    """Review item 5: was `error: setting : Value error, STORE=dynamodb needs IMAGE_BUCKET…`."""
    from pipeline.cli import main

    _cli_env(monkeypatch, tmp_path, STORE="dynamodb")
    monkeypatch.delenv("IMAGE_BUCKET", raising=False)
    assert main(["estimate", "--images-per-month", "1000"]) == 2
    assert capsys.readouterr().err == "error: STORE=dynamodb needs IMAGE_BUCKET: every task must see the same photos.\n"


def test_job_never_without_endpoint_or_transform_bucket_says_what_to_set(tmp_path, monkeypatch, capsys):
    """Review item 9: the refusal advised `--job auto or always`, which then fails without SAGEMAKER_TRANSFORM_S3."""
    from pipeline.cli import main

    _cli_env(monkeypatch, tmp_path, CAPTIONER="sagemaker", ENDPOINT_ENABLED="false")
    monkeypatch.delenv("SAGEMAKER_TRANSFORM_S3", raising=False)
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    assert main(["tag", str(image), "--out", str(tmp_path / "r.csv"), "--job", "never"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "SAGEMAKER_TRANSFORM_S3, which is not set: set it and use --job auto" in line and "--captioner local" in line
    assert "use --job auto or always" not in line
    assert not (tmp_path / "data" / "pipeline.sqlite3").exists()  # nothing staged


def test_endpoint_commands_with_no_endpoint_in_the_deployment_say_so_and_call_no_aws(tmp_path, monkeypatch, capsys):
    """Review item 9: ENDPOINT_ENABLED=false: status is one line, stop and autostop have nothing to do; all exit 0, and no
    AWS call (AWS_ENDPOINT_URL and --endpoint-url point at a closed port: a call would end in `error: Could not reach`)."""
    from pipeline.admin.endpoint import NO_ENDPOINT
    from pipeline.cli import main

    _cli_env(monkeypatch, tmp_path, ENDPOINT_ENABLED="false", AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert main(["endpoint", "status", "--endpoint-url", "http://127.0.0.1:9"]) == 0
    captured = capsys.readouterr()
    assert captured.out == NO_ENDPOINT + "\n" and captured.err == ""
    for action in ("stop", "autostop"):
        assert main(["endpoint", action, "--endpoint-url", "http://127.0.0.1:9"]) == 0
        captured = capsys.readouterr()
        assert captured.out == f"{action}: nothing to do. {NO_ENDPOINT}\n" and captured.err == "", captured


def test_estimate_images_per_month_has_an_upper_bound(tmp_path, monkeypatch, capsys):
    """Review item 9: 99999999999999999999 images a month was priced."""
    from pipeline.cli import main

    _cli_env(monkeypatch, tmp_path)
    assert main(["estimate", "--images-per-month", "99999999999999999999"]) == 2
    assert capsys.readouterr().err == ("error: --images-per-month must be from 1 to 100,000,000 "
                                       "(got 99,999,999,999,999,999,999).\n")
    assert main(["estimate", "--images-per-month", "100000000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scenarios"]


def test_the_backfill_docs_name_every_setting_the_command_needs(monkeypatch):
    """Review item 8: docs/operations.md listed STORE, DYNAMODB_TABLE and AWS_REGION for `store backfill-edits`, but
    Settings refuses STORE=dynamodb without IMAGE_BUCKET; a sentence about the Quality page's reads sat in that section."""
    import re

    from pipeline.settings import Settings

    docs = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    section = docs[docs.index("**Edits from before the edits index"):docs.index("## Logs and metrics")]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)(?:=[a-z]+)?`", section.split("```bash")[0]))
    assert "STORE" in named
    for field in Settings.model_fields:  # only what the docs name
        monkeypatch.delenv(field.upper(), raising=False)
    values = {name.lower(): "x" for name in named if name.lower() in Settings.model_fields}
    Settings(_env_file=None, **{**values, "store": "dynamodb"})  # what the docs name is enough: no ValidationError
    assert "list_items" not in section
    reads = docs[docs.index("Reads: `edits_since`"):docs.index("**Edits from before the edits index")]
    assert "Items are read batch by batch (`list_items`" in reads
