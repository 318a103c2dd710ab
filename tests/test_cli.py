import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile

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
