"""Files uploaded in the browser, written to disk so a batch can be read again after a restart."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from pathlib import Path

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """The base name only, with anything unusual replaced: an upload can never write elsewhere."""
    base = Path(name.replace("\\", "/")).name
    cleaned = SAFE_NAME.sub("_", base).lstrip(".")
    return cleaned[:120] or "upload"


def save_uploads(files: Iterable[tuple[str, bytes | memoryview]], root: Path) -> list[Path]:
    """Write uploads into a new folder under `root`; duplicate names get a number."""
    folder = Path(root) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    paths: list[Path] = []
    for name, data in files:
        original = folder / safe_filename(name)
        target, number = original, 2
        while target.exists():
            target, number = original.with_name(f"{original.stem}-{number}{original.suffix}"), number + 1
        target.write_bytes(data)
        paths.append(target)
    return paths
