"""Has the Hugging Face model moved since we pinned it?  (model-watch.yml, weekly)

    python sagemaker/model_watch.py [--pin sagemaker/model-revision.json] [--api-url https://huggingface.co] [--write]

Reads the pin, asks the Hub for the newest commit of the model's `main`, prints what it found, and with
--write updates the pin file. In GitHub Actions it also writes `changed`, `old` and `new` to
$GITHUB_OUTPUT, for the pull-request step. A network or API problem is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PIN = HERE / "model-revision.json"


@dataclass(frozen=True)
class Pin:
    model_id: str
    revision: str | None


def read_pin(path: Path) -> Pin:
    data = json.loads(path.read_text())
    return Pin(data["model_id"], data.get("revision"))


def write_pin(path: Path, revision: str) -> None:
    data = json.loads(path.read_text())  # keep the file's other keys and order
    data["revision"] = revision
    path.write_text(json.dumps(data, indent=2) + "\n")


def latest_revision(model_id: str, api_url: str, token: str | None = None, timeout: float = 20.0) -> str:
    """The commit SHA of the model repo's main branch (Hub API: GET /api/models/<id>/revision/main)."""
    request = urllib.request.Request(f"{api_url.rstrip('/')}/api/models/{model_id}/revision/main")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fixed https host by default)
        sha = json.load(response).get("sha")
    if not isinstance(sha, str) or len(sha) != 40:
        raise ValueError(f"the Hub answered without a commit SHA for {model_id}")
    return sha


def github_output(values: dict[str, str]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.writelines(f"{k}={v}\n" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", type=Path, default=DEFAULT_PIN)
    parser.add_argument("--api-url", default="https://huggingface.co")
    parser.add_argument("--write", action="store_true", help="update the pin file when the model moved")
    args = parser.parse_args(argv)
    pin = read_pin(args.pin)
    try:
        newest = latest_revision(pin.model_id, args.api_url, os.environ.get("HF_TOKEN"))
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"model-watch: could not read {pin.model_id} from {args.api_url}: {error}", file=sys.stderr)
        return 2
    changed = newest != pin.revision
    print(f"{pin.model_id}: pinned {pin.revision or 'nothing'}, main is {newest}" + (" (changed)" if changed else " (up to date)"))
    if changed and args.write:
        write_pin(args.pin, newest)
    github_output({"changed": str(changed).lower(), "old": pin.revision or "none", "new": newest, "model": pin.model_id})
    return 0


if __name__ == "__main__":
    sys.exit(main())
