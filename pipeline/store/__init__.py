"""The Store protocol (batches, items, edits, usage ledger, caption cache) and the local image store."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

from pipeline.models import (
    AsyncInvocation,
    AuditEntry,
    BatchRecord,
    CaptionResult,
    Edit,
    IngestReport,
    ItemRecord,
    ItemResult,
    TransformJobRecord,
    Usage,
)

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
    def last_usage_at(self, kind: str) -> str | None: ...
    def usage_rows(self, since: str | None = None) -> list[tuple[str, Usage]]: ...
    def add_audit(self, who: str, action: str, result: str, detail: str = "") -> AuditEntry: ...
    def audit_log(self, limit: int = 200) -> list[AuditEntry]: ...
    # Async invocations paid for but not yet collected (see pipeline.captioners.sagemaker_async)
    def remember_invocation(self, invocation: AsyncInvocation) -> None: ...
    def pending_invocation(self, content_key: str, model_id: str) -> AsyncInvocation | None: ...
    def forget_invocation(self, content_key: str, model_id: str) -> None: ...
    # Batch transform jobs (see pipeline.batch_transform)
    def save_transform_job(self, job: TransformJobRecord) -> None:
        """Insert or replace by job name."""
    def transform_jobs(self, batch_id: int) -> list[TransformJobRecord]:
        """Newest first."""
    def active_transform_jobs(self) -> list[TransformJobRecord]:
        """Jobs not yet ingested, oldest first: what a restarted server follows again."""


class ImageStore(Protocol):
    """Where normalized photos (and their thumbnails) live, and how a page shows them."""

    def save(self, content_key: str, jpeg: bytes) -> str:
        """Store once per content key; returns the location kept as the item's image_path."""
    def photo_url(self, location: str | None) -> str | None:
        """Something `st.image` shows: a local path or a short-lived https URL."""
    def thumbnail_url(self, location: str | None) -> str | None:
        """A small preview for result tables: a data: URI or a short-lived https URL."""
    def ensure_upload(self, path: Path) -> None:
        """Make a browser upload readable at `path` on this task (multi-task deployments)."""
    def keep_upload(self, path: Path) -> None:
        """Keep a copy of a browser upload where other tasks can read it."""


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

    def photo_url(self, location: str | None) -> str | None:
        return location if location and Path(location).is_file() else None

    def thumbnail_url(self, location: str | None) -> str | None:
        from pipeline.thumbnails import thumbnail_data_uri

        return thumbnail_data_uri(location)

    def ensure_upload(self, path: Path) -> None:
        """One process, one disk: uploads are already where they are read."""

    def keep_upload(self, path: Path) -> None:
        """One process, one disk: nothing to copy."""
