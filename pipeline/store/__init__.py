"""The Store protocol (batches, items, edits, usage ledger, caption cache) and the local image store."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

from pipeline.models import BatchRecord, CaptionResult, Edit, IngestReport, ItemRecord, ItemResult, Usage

EDITABLE_FIELDS = ("caption", "summary", "title", "tags", "review_status")  # plus "attribute:<name>"


class Store(Protocol):
    def create_batch(self, name: str, created_by: str, report: IngestReport) -> BatchRecord: ...
    def get_batch(self, batch_id: int) -> BatchRecord | None: ...
    def list_batches(self) -> list[BatchRecord]: ...
    def list_items(self, batch_id: int) -> list[ItemRecord]: ...
    def get_item(self, item_id: int) -> ItemRecord | None: ...
    def items_to_process(self, batch_id: int, *, retry_failed: bool = False) -> list[ItemRecord]: ...
    def unfinished_batch_ids(self) -> list[int]: ...
    def record_usage(self, item_id: int, usage: list[Usage]) -> None: ...
    def save_result(self, item_id: int, result: ItemResult, usage: list[Usage]) -> None:
        """Result + its billable calls + the caption-cache entry, atomically."""
    def save_error(self, item_id: int, message: str, usage: list[Usage]) -> None: ...
    def usage(self, batch_id: int | None = None) -> list[Usage]: ...
    def cached_caption(self, content_key: str, model_id: str) -> CaptionResult | None: ...
    def edit_item(self, item_id: int, field: str, new_value: str | list[str] | None, who: str) -> Edit | None: ...
    def edits(self, item_id: int) -> list[Edit]: ...


class LocalImageStore:
    """Normalized JPEGs on disk, named by content key (so identical photos are stored once)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, content_key: str) -> Path:
        return self.root / content_key[:2] / f"{content_key}.jpg"

    def save(self, content_key: str, jpeg: bytes) -> str:
        path = self.path_for(content_key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
            temporary.write_bytes(jpeg)
            temporary.replace(path)  # atomic: a reader never sees half a file
        return str(path)

