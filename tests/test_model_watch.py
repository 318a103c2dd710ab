"""sagemaker/model_watch.py (model-watch.yml): against a local stand-in for the Hugging Face Hub API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.servers import FileServer

SCRIPT = Path(__file__).resolve().parents[1] / "sagemaker" / "model_watch.py"
OLD, NEW = "a" * 40, "b" * 40
ROUTE = "/api/models/Salesforce/blip2-flan-t5-xl/revision/main"


def pin_file(tmp_path: Path, revision: str | None) -> Path:
    shipped = json.loads((SCRIPT.parent / "model-revision.json").read_text())
    path = tmp_path / "model-revision.json"
    path.write_text(json.dumps({**shipped, "revision": revision}, indent=2))
    return path


def watch(pin: Path, api: str, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    result = subprocess.run([sys.executable, str(SCRIPT), "--pin", str(pin), "--api-url", api, *extra], capture_output=True,
                            text=True, timeout=60, env={"GITHUB_OUTPUT": str(outputs), "PATH": "/usr/bin:/bin"})
    return result, dict(line.split("=", 1) for line in outputs.read_text().splitlines())


def test_a_moved_model_updates_the_pin_and_tells_the_workflow(tmp_path):
    pin = pin_file(tmp_path, OLD)
    with FileServer() as hub:
        hub.add(ROUTE, json.dumps({"id": "Salesforce/blip2-flan-t5-xl", "sha": NEW}).encode(), headers={"Content-Type": "application/json"})
        result, outputs = watch(pin, hub.url, tmp_path, "--write")
    assert result.returncode == 0, result.stderr
    assert outputs == {"changed": "true", "old": OLD, "new": NEW, "model": "Salesforce/blip2-flan-t5-xl"}
    saved = json.loads(pin.read_text())
    assert saved["revision"] == NEW and saved["model_id"] == "Salesforce/blip2-flan-t5-xl" and "_about" in saved


def test_an_unchanged_model_changes_nothing(tmp_path):
    pin = pin_file(tmp_path, NEW)
    before = pin.read_text()
    with FileServer() as hub:
        hub.add(ROUTE, json.dumps({"sha": NEW}).encode(), headers={"Content-Type": "application/json"})
        result, outputs = watch(pin, hub.url, tmp_path, "--write")
    assert result.returncode == 0 and outputs["changed"] == "false" and "up to date" in result.stdout
    assert pin.read_text() == before


def test_an_unpinned_model_is_proposed_without_write_only_reported(tmp_path):
    pin = pin_file(tmp_path, None)
    with FileServer() as hub:
        hub.add(ROUTE, json.dumps({"sha": NEW}).encode(), headers={"Content-Type": "application/json"})
        result, outputs = watch(pin, hub.url, tmp_path)
    assert outputs["changed"] == "true" and outputs["old"] == "none"
    assert json.loads(pin.read_text())["revision"] is None  # no --write: report only


def test_hub_errors_are_one_line_and_no_pull_request(tmp_path):
    pin = pin_file(tmp_path, OLD)
    with FileServer() as hub:
        hub.add(ROUTE, b"overloaded", status=503)
        result, outputs = watch(pin, hub.url, tmp_path, "--write")
        hub.add(ROUTE, json.dumps({"sha": "not-a-sha"}).encode(), headers={"Content-Type": "application/json"})
        odd, _ = watch(pin, hub.url, tmp_path, "--write")
    assert result.returncode == 2 and outputs == {}
    assert "could not read Salesforce/blip2-flan-t5-xl" in result.stderr and "Traceback" not in result.stderr
    assert odd.returncode == 2 and "without a commit SHA" in odd.stderr
    assert json.loads(pin.read_text())["revision"] == OLD
