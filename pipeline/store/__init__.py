"""The Store protocol (batches, items, edits, usage ledger, caption cache) and the local image store."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import UserFacingError
from pipeline.models import (
    AsyncInvocation,
    AuditEntry,
    BatchRecord,
    BatchRun,
    CaptionResult,
    Edit,
    IngestReport,
    ItemRecord,
    ItemResult,
    OpenAIBatchRecord,
    TaxonomyVersion,
    TransformJobRecord,
    Usage,
)

EDITABLE_FIELDS = ("caption", "summary", "title", "tags", "review_status")  # plus "attribute:<name>"


class StaleEditError(UserFacingError):
    """A Review save sent an item version that is no longer current: someone else changed the item."""

    def __init__(self, item_id: int, who: str | None, at: str | None, value: object = None, current_version: int | None = None) -> None:
        self.item_id, self.who, self.at, self.value = item_id, who or "someone", at or "an unknown time", value
        self.current_version = current_version
        kept = f" Your value, kept here: {value!r}." if value is not None else ""
        super().__init__(f"Not saved: changed by {self.who} at {self.at} since you opened it.{kept} "
                         "Save again to replace their change with yours, or reload to see theirs.")


class BatchBusyError(UserFacingError):
    """Another live runner holds the batch: nothing is started a second time."""

    def __init__(self, batch_id: int, run: BatchRun) -> None:
        self.batch_id, self.run = batch_id, run
        super().__init__(f"Batch {batch_id} is already running on {run.host or 'another machine'} since {run.since_text}; "
                         "not starting a second run. Stop it there, or wait for it to finish.")


def new_runner_id() -> str:
    """Owner id of one runner: host/pid/uuid (unique across tasks, processes and runs)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def runner_host(owner: str | None) -> str | None:
    return owner.split("/", 1)[0] if owner else None


def runner_is_dead_here(owner: str | None) -> bool:
    """True only when `owner` ran on this host in a process that no longer exists (a killed CLI or
    server): its leases can be taken over at once instead of after they expire."""
    if not owner or owner.count("/") < 2:
        return False
    host, pid, _ = owner.split("/", 2)
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class Store(Protocol):
    def create_batch(self, name: str, created_by: str, report: IngestReport) -> BatchRecord: ...
    def get_batch(self, batch_id: int) -> BatchRecord | None: ...
    def list_batches(self) -> list[BatchRecord]: ...
    def list_items(self, batch_id: int) -> list[ItemRecord]: ...
    def get_item(self, item_id: int) -> ItemRecord | None: ...
    def items_to_process(self, batch_id: int, *, retry_failed: bool = False) -> list[ItemRecord]: ...
    def unfinished_batch_ids(self) -> list[int]: ...
    def record_usage(self, item_id: int, usage: list[Usage]) -> None: ...
    def save_result(self, item_id: int, result: ItemResult, usage: list[Usage], *, owner: str | None = None,
                    stage_ms: dict[str, float] | None = None) -> bool:
        """Result + its billable calls + the caption-cache entry, atomically. With `owner`: only while
        that runner holds the item's lease (then the lease ends); False (nothing written) otherwise.
        `stage_ms` (stage -> ms) is kept as the item's `stage_ms`; a result clears `error_kind`."""
    def save_error(self, item_id: int, message: str, usage: list[Usage], *, owner: str | None = None,
                   error_kind: str | None = None, stage_ms: dict[str, float] | None = None) -> bool: ...
    # Leases: no two runners anywhere process one item (see docs/operations.md "Scale")
    def claim_item(self, item_id: int, owner: str, lease_s: float, *, version: int, now: float,
                   stale_owners: tuple[str, ...] = ()) -> bool:
        """Take the item's lease if its version is still `version` (not finished since it was read)
        and nobody else holds a live lease (`stale_owners`: dead runners whose leases count as ended)."""
    def renew_items(self, item_ids: list[int], owner: str, lease_s: float, *, now: float) -> list[int]:
        """Extend this owner's item leases; returns the ids still held."""
    def release_item(self, item_id: int, owner: str) -> None: ...
    def claim_batch(self, batch_id: int, owner: str, lease_s: float, *, now: float,
                    stale_owners: tuple[str, ...] = ()) -> BatchRun:
        """Become the batch's runner unless another live runner is; returns the holder afterwards
        (compare its owner). A new run clears an earlier stop request."""
    def heartbeat_batch(self, batch_id: int, owner: str, lease_s: float, *, now: float) -> BatchRun | None:
        """Renew the batch lease; the run as stored (with any stop request), or None when not the holder."""
    def release_batch(self, batch_id: int, owner: str) -> None: ...
    def request_stop(self, batch_id: int, who: str, *, now: float) -> None:
        """Store a stop request on this batch; the runner holding it stops at its next heartbeat."""
    def usage(self, batch_id: int | None = None) -> list[Usage]: ...
    def cached_caption(self, content_key: str, model_id: str) -> CaptionResult | None: ...
    def edit_item(self, item_id: int, field: str, new_value: str | list[str] | None, who: str,
                  *, expected_version: int | None = None) -> Edit | None:
        """With `expected_version`: raises StaleEditError (who/when of the newer change) if the item changed since."""
    def edits(self, item_id: int) -> list[Edit]: ...
    def last_usage_at(self, kind: str) -> str | None: ...
    def usage_rows(self, since: str | None = None) -> list[tuple[str, Usage]]: ...
    def add_audit(self, who: str, action: str, result: str, detail: str = "") -> AuditEntry: ...
    def audit_log(self, limit: int = 200) -> list[AuditEntry]: ...
    # Async invocations paid for but not yet collected (see pipeline.captioners.sagemaker_async)
    def remember_invocation(self, invocation: AsyncInvocation) -> None: ...
    def pending_invocation(self, content_key: str, model_id: str) -> AsyncInvocation | None: ...
    def forget_invocation(self, content_key: str, model_id: str) -> None: ...
    # Batch transform jobs (see pipeline.batches.batch_transform)
    def save_transform_job(self, job: TransformJobRecord) -> None:
        """Insert or replace by job name."""
    def transform_jobs(self, batch_id: int) -> list[TransformJobRecord]:
        """Newest first."""
    def active_transform_jobs(self) -> list[TransformJobRecord]:
        """Jobs not yet ingested, oldest first: what a restarted server follows again."""
    # OpenAI Batch API summaries (see pipeline.summarizers.openai_batch)
    def remember_openai_batch(self, record: OpenAIBatchRecord) -> None:
        """Insert or replace by OpenAI batch id."""
    def pending_openai_batch(self, batch_id: int) -> OpenAIBatchRecord | None:
        """The newest OpenAI batch submitted for this batch whose answers are not saved yet."""
    def forget_openai_batch(self, batch_id: int, openai_batch_id: str) -> None: ...
    def cache_caption(self, content_key: str, caption: CaptionResult) -> None:
        """Keep a paid caption before its item is saved (an item waiting for a Batch API summary)."""
    # Analytics (see pipeline.admin.analytics)
    def edits_since(self, since: str | None = None) -> list[Edit]:
        """Every edit saved at or after `since` (ISO-8601 UTC; None: all), oldest first, in one bulk read."""
    # Attribute taxonomy versions (pipeline/admin/taxonomy.py): immutable, one active, saves conditional on the newest
    def save_taxonomy(self, document: str, who: str, *, expected_latest: int) -> TaxonomyVersion: ...
    def taxonomy_versions(self) -> list[TaxonomyVersion]: ...
    def get_taxonomy(self, version: int) -> TaxonomyVersion | None: ...
    def activate_taxonomy(self, version: int, who: str) -> None: ...
    def active_taxonomy(self) -> TaxonomyVersion | None: ...
    # Brand voice and languages (issue 19; pipeline/admin/brand.py)
    def style_guide(self) -> Any: ...
    def save_style_guide(self, guide: Any, who: str, *, expected_version: int) -> Any: ...
    def set_batch_languages(self, batch_id: int, languages: Any) -> None: ...
    def batch_languages(self, batch_id: int) -> list[str]: ...
    # near-duplicate photos (issue 19): the catalogue of tagged photos' hashes (newest first, capped) and the batch option
    def near_duplicate_catalogue(self, limit: int) -> list[tuple[str, int, int, int]]: ...
    def set_reuse_near_duplicates(self, batch_id: int, reuse: bool) -> None: ...
    def reuse_near_duplicates(self, batch_id: int) -> bool: ...


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
        from pipeline.images.thumbnails import thumbnail_data_uri

        return thumbnail_data_uri(location)

    def ensure_upload(self, path: Path) -> None:
        """One process, one disk: uploads are already where they are read."""

    def keep_upload(self, path: Path) -> None:
        """One process, one disk: nothing to copy."""
