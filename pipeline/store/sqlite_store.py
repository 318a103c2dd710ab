"""SqliteStore: the embedded default Store (one file, WAL mode, safe across threads and processes)."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import BadInputError
from pipeline.models import (
    AttributeValue,
    BatchRecord,
    BatchRun,
    CaptionResult,
    AsyncInvocation,
    AuditEntry,
    Edit,
    IngestReport,
    ItemRecord,
    ItemResult,
    OpenAIBatchRecord,
    PhotoChecks,
    SourceRef,
    TaxonomyVersion,
    TransformJobRecord,
    Usage,
)
from pipeline.models import StyleGuide
from pipeline.store import EDITABLE_FIELDS, StaleEditError
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    notices TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    ref TEXT,
    sku TEXT,
    hints TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    content_key TEXT,
    image_path TEXT,
    caption TEXT,
    attributes TEXT NOT NULL DEFAULT '[]',
    title TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    summary TEXT,
    word_count INTEGER,
    checks TEXT,
    caption_model TEXT,
    summary_model TEXT,
    summary_offline INTEGER NOT NULL DEFAULT 0,
    review_status TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT NOT NULL,
    processed_at TEXT,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS items_by_batch ON items(batch_id, seq);
CREATE TABLE IF NOT EXISTS edits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    field TEXT NOT NULL,
    old TEXT,
    new TEXT,
    who TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edits_by_item ON edits(item_id, id);
CREATE INDEX IF NOT EXISTS edits_by_time ON edits(at, id);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER,
    item_id INTEGER,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    invocations INTEGER NOT NULL DEFAULT 1,
    latency_ms REAL NOT NULL DEFAULT 0,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS async_invocations (
    content_key TEXT NOT NULL,
    model_id TEXT NOT NULL,
    inference_id TEXT NOT NULL,
    output_location TEXT NOT NULL,
    failure_location TEXT NOT NULL,
    invoked_at TEXT NOT NULL,
    PRIMARY KEY (content_key, model_id)
);
CREATE TABLE IF NOT EXISTS transform_jobs (
    job_name TEXT PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    status TEXT NOT NULL,
    s3_prefix TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS caption_cache (
    content_key TEXT NOT NULL,
    model_id TEXT NOT NULL,
    caption TEXT NOT NULL,
    answers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (content_key, model_id)
);
CREATE TABLE IF NOT EXISTS style_guide (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tone TEXT NOT NULL,
    avoid TEXT NOT NULL,
    prefer TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_by TEXT,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS batch_languages (
    batch_id INTEGER PRIMARY KEY REFERENCES batches(id),
    languages TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS openai_batches (
    openai_batch_id TEXT PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    input_file_id TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS taxonomy_versions (
    version INTEGER PRIMARY KEY,
    document TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS taxonomy_active (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    activated_by TEXT NOT NULL,
    activated_at TEXT NOT NULL
);
"""

# Columns added after the first release: added in place to an existing database file.
MIGRATIONS = {
    "items": {"version": "INTEGER NOT NULL DEFAULT 0", "updated_by": "TEXT", "lease_owner": "TEXT", "lease_until": "REAL",
              "stage_ms": "TEXT", "error_kind": "TEXT", "summaries": "TEXT", "taxonomy_version": "INTEGER NOT NULL DEFAULT 0"},
    "batches": {"run_owner": "TEXT", "run_host": "TEXT", "run_started_at": "REAL", "run_heartbeat_at": "REAL",
                "run_lease_until": "REAL", "stop_requested_by": "TEXT", "stop_requested_at": "REAL"},
}
PROCESSING = "processing"  # updated_by of an item changed by a runner (result or error)


# SEO and accessibility fields (issue 19): old rows read as "" (pipeline/wordlimit.py SEO_LIMITS)
SEO_FIELDS = ("seo_title", "meta_description", "alt_text")
MIGRATIONS["items"].update({name: "TEXT" for name in SEO_FIELDS})


# Near-duplicate photos (issue 19, pipeline/images/perceptual.py): each item's perceptual hash, the earlier item it
# looks like, where its caption was reused from; and per batch whether near-duplicates reuse earlier captions.
NEAR_DUPLICATE_COLUMNS = ("phash", "near_duplicate", "reused_from")
MIGRATIONS["items"].update({name: "TEXT" for name in NEAR_DUPLICATE_COLUMNS})
SCHEMA += """
CREATE TABLE IF NOT EXISTS batch_reuse (
    batch_id INTEGER PRIMARY KEY REFERENCES batches(id),
    reuse INTEGER NOT NULL
);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # one connection per thread: sqlite3 connections are not shareable
        self._connection().executescript(SCHEMA)  # executescript manages its own transaction
        self._migrate()

    def _migrate(self) -> None:
        with self._tx() as db:
            for table, columns in MIGRATIONS.items():
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # Batches -------------------------------------------------------------------------------
    def create_batch(self, name: str, created_by: str, report: IngestReport) -> BatchRecord:
        now = utc_now()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO batches (name, created_at, created_by, notices) VALUES (?, ?, ?, ?)",
                (name, now, created_by, json.dumps(report.notices)),
            )
            batch_id = int(cursor.lastrowid)
            db.executemany(
                "INSERT INTO items (batch_id, seq, source, ref, sku, hints, status, error, created_at, processed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        batch_id, seq, item.source,
                        json.dumps(item.ref.to_dict()) if item.ref else None,
                        item.sku, json.dumps(item.hints),
                        "error" if item.error else "pending", item.error, now,
                        now if item.error else None,
                    )
                    for seq, item in enumerate(report.items)
                ],
            )
        return self.get_batch(batch_id)  # type: ignore[return-value]

    def get_batch(self, batch_id: int) -> BatchRecord | None:
        rows = self._batch_rows("WHERE b.id = ?", (batch_id,))
        return rows[0] if rows else None

    def list_batches(self) -> list[BatchRecord]:
        return self._batch_rows("", ())

    def _batch_rows(self, where: str, params: tuple) -> list[BatchRecord]:
        rows = self._connection().execute(
            f"""SELECT b.*, COUNT(i.id) AS total,
                       SUM(i.status IN ('ok', 'error')) AS done, SUM(i.status = 'error') AS failed
                FROM batches b LEFT JOIN items i ON i.batch_id = b.id {where}
                GROUP BY b.id ORDER BY b.id DESC""",
            params,
        ).fetchall()
        return [
            BatchRecord(
                id=row["id"], name=row["name"], created_at=row["created_at"], created_by=row["created_by"],
                notices=json.loads(row["notices"]), total=row["total"] or 0, done=row["done"] or 0, failed=row["failed"] or 0,
                run=_run(row),
            )
            for row in rows
        ]

    # Items ---------------------------------------------------------------------------------
    def list_items(self, batch_id: int) -> list[ItemRecord]:
        rows = self._connection().execute("SELECT * FROM items WHERE batch_id = ? ORDER BY seq", (batch_id,)).fetchall()
        return [_item(row) for row in rows]

    def get_item(self, item_id: int) -> ItemRecord | None:
        row = self._connection().execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items_to_process(self, batch_id: int, *, retry_failed: bool = False) -> list[ItemRecord]:
        """Items not yet done. 'running' counts as not done: its process died before finishing it."""
        statuses = ("pending", "running", "error") if retry_failed else ("pending", "running")
        marks = ",".join("?" * len(statuses))
        query = f"SELECT * FROM items WHERE batch_id = ? AND status IN ({marks}) AND ref IS NOT NULL ORDER BY seq"
        return [_item(row) for row in self._connection().execute(query, (batch_id, *statuses)).fetchall()]

    def unfinished_batch_ids(self) -> list[int]:
        """Batches with items still to process (oldest first): what a restarted server resumes."""
        rows = self._connection().execute(
            "SELECT DISTINCT batch_id FROM items WHERE status IN ('pending', 'running') AND ref IS NOT NULL ORDER BY batch_id"
        ).fetchall()
        return [row[0] for row in rows]

    def record_usage(self, item_id: int, usage: list[Usage]) -> None:
        """Billable calls made outside processing (e.g. a regenerated summary)."""
        with self._tx() as db:
            self._insert_usage(db, item_id, usage, utc_now())

    def _holds(self, db: sqlite3.Connection, item_id: int, owner: str | None) -> bool:
        if owner is None:
            return True
        row = db.execute("SELECT lease_owner FROM items WHERE id = ?", (item_id,)).fetchone()
        return row is not None and row["lease_owner"] == owner

    def save_result(self, item_id: int, result: ItemResult, usage: list[Usage], *, owner: str | None = None,
                    stage_ms: dict[str, float] | None = None) -> bool:
        now = utc_now()
        with self._tx() as db:
            if not self._holds(db, item_id, owner):
                return False
            self._insert_usage(db, item_id, usage, now)
            db.execute("UPDATE items SET phash = ?, near_duplicate = ?, reused_from = ? WHERE id = ?",  # near-duplicates (issue 19)
                       (result.phash, result.near_duplicate, result.reused_from, item_id))
            db.execute("UPDATE items SET summaries = ? WHERE id = ?",  # extra-language summaries (issue 19)
                       (json.dumps(result.summary.summaries, ensure_ascii=False), item_id))
            db.execute("UPDATE items SET seo_title = ?, meta_description = ?, alt_text = ? WHERE id = ?",  # issue 19
                       (*(getattr(result.summary, name) for name in SEO_FIELDS), item_id))
            if not result.caption.cached:
                db.execute(
                    "INSERT OR REPLACE INTO caption_cache (content_key, model_id, caption, answers, created_at) VALUES (?, ?, ?, ?, ?)",
                    (result.content_key, result.caption.model_id, result.caption.caption, json.dumps(result.caption.answers), now),
                )
            db.execute(
                """UPDATE items SET status = 'ok', error = NULL, content_key = ?, image_path = ?, caption = ?,
                       attributes = ?, title = ?, tags = ?, summary = ?, word_count = ?, checks = ?,
                       caption_model = ?, summary_model = ?, summary_offline = ?, processed_at = ?, updated_at = ?,
                       version = version + 1, updated_by = ?, lease_owner = NULL, lease_until = NULL,
                       stage_ms = ?, error_kind = NULL, taxonomy_version = ?
                   WHERE id = ?""",
                (
                    result.content_key, result.image_path, result.caption.caption,
                    json.dumps([a.__dict__ for a in result.attributes]), result.summary.title,
                    json.dumps(result.summary.tags), result.summary.summary, result.word_count,
                    json.dumps(result.checks.to_dict()), result.caption.model_id, result.summary.model,
                    int(result.summary.offline), now, now, PROCESSING, json.dumps(stage_ms or {}), result.taxonomy_version, item_id,
                ),
            )
        return True

    def save_error(self, item_id: int, message: str, usage: list[Usage], *, owner: str | None = None,
                   error_kind: str | None = None, stage_ms: dict[str, float] | None = None) -> bool:
        now = utc_now()
        with self._tx() as db:
            if not self._holds(db, item_id, owner):
                return False
            self._insert_usage(db, item_id, usage, now)
            db.execute("UPDATE items SET status = 'error', error = ?, processed_at = ?, updated_at = ?, version = version + 1,"
                       " updated_by = ?, lease_owner = NULL, lease_until = NULL, stage_ms = ?, error_kind = ? WHERE id = ?",
                       (message, now, now, PROCESSING, json.dumps(stage_ms or {}), error_kind, item_id))
        return True

    # Leases ----------------------------------------------------------------------------------
    def claim_item(self, item_id: int, owner: str, lease_s: float, *, version: int, now: float,
                   stale_owners: tuple[str, ...] = ()) -> bool:
        owners = (owner, *stale_owners)
        with self._tx() as db:
            cursor = db.execute(
                f"""UPDATE items SET lease_owner = ?, lease_until = ? WHERE id = ? AND version = ?
                    AND (lease_owner IS NULL OR lease_until < ? OR lease_owner IN ({",".join("?" * len(owners))}))""",
                (owner, now + lease_s, item_id, version, now, *owners),
            )
            return cursor.rowcount == 1

    def renew_items(self, item_ids: list[int], owner: str, lease_s: float, *, now: float) -> list[int]:
        held = []
        with self._tx() as db:
            for item_id in item_ids:
                if db.execute("UPDATE items SET lease_until = ? WHERE id = ? AND lease_owner = ?", (now + lease_s, item_id, owner)).rowcount:
                    held.append(item_id)
        return held

    def release_item(self, item_id: int, owner: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE items SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?", (item_id, owner))

    def claim_batch(self, batch_id: int, owner: str, lease_s: float, *, now: float,
                    stale_owners: tuple[str, ...] = ()) -> BatchRun:
        owners = (owner, *stale_owners)
        with self._tx() as db:
            db.execute(
                f"""UPDATE batches SET run_owner = ?, run_host = ?, run_started_at = ?, run_heartbeat_at = ?, run_lease_until = ?,
                        stop_requested_by = NULL, stop_requested_at = NULL
                    WHERE id = ? AND (run_owner IS NULL OR run_lease_until < ? OR run_owner IN ({",".join("?" * len(owners))}))""",
                (owner, owner.split("/", 1)[0], now, now, now + lease_s, batch_id, now, *owners),
            )
            row = db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise KeyError(batch_id)
        return _run(row) or BatchRun()

    def heartbeat_batch(self, batch_id: int, owner: str, lease_s: float, *, now: float) -> BatchRun | None:
        with self._tx() as db:
            updated = db.execute("UPDATE batches SET run_heartbeat_at = ?, run_lease_until = ? WHERE id = ? AND run_owner = ?",
                                 (now, now + lease_s, batch_id, owner)).rowcount
            row = db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return _run(row) if updated else None

    def release_batch(self, batch_id: int, owner: str) -> None:
        with self._tx() as db:
            db.execute("""UPDATE batches SET run_owner = NULL, run_host = NULL, run_started_at = NULL, run_heartbeat_at = NULL,
                              run_lease_until = NULL, stop_requested_by = NULL, stop_requested_at = NULL
                          WHERE id = ? AND run_owner = ?""", (batch_id, owner))

    def request_stop(self, batch_id: int, who: str, *, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE batches SET stop_requested_by = ?, stop_requested_at = ? WHERE id = ?", (who, now, batch_id))

    # Edits ---------------------------------------------------------------------------------
    def edit_item(self, item_id: int, field: str, new_value: str | list[str] | None, who: str,
                  *, expected_version: int | None = None) -> Edit | None:
        """Change one field and keep (who, when, old, new). Returns None when nothing changed.
        With `expected_version` (the version the editor showed) a newer change refuses the save."""
        now = utc_now()
        with self._tx() as db:
            row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise KeyError(item_id)
            item = _item(row)
            old, new, updates = _apply_edit(item, field, new_value)
            if old == new:
                return None  # already what this person wants: nothing to refuse
            if expected_version is not None and item.version != expected_version:
                raise StaleEditError(item_id, item.updated_by, item.updated_at, new_value, item.version)
            updates["updated_at"] = now
            updates["updated_by"] = who
            assignments = ", ".join(f"{column} = ?" for column in updates)
            db.execute(f"UPDATE items SET {assignments}, version = version + 1 WHERE id = ?", (*updates.values(), item_id))
            db.execute("INSERT INTO edits (item_id, field, old, new, who, at) VALUES (?, ?, ?, ?, ?, ?)", (item_id, field, old, new, who, now))
        return Edit(item_id=item_id, field=field, old=old, new=new, who=who, at=now, version=item.version + 1)

    def edits(self, item_id: int) -> list[Edit]:
        rows = self._connection().execute("SELECT * FROM edits WHERE item_id = ? ORDER BY id", (item_id,)).fetchall()
        return [Edit(item_id=r["item_id"], field=r["field"], old=r["old"], new=r["new"], who=r["who"], at=r["at"]) for r in rows]

    # Usage ledger and caption cache --------------------------------------------------------
    def _insert_usage(self, db: sqlite3.Connection, item_id: int, usage: list[Usage], now: str) -> None:
        if not usage:
            return
        db.executemany(
            "INSERT INTO usage (batch_id, item_id, kind, model, input_tokens, output_tokens, invocations, latency_ms, at)"
            " SELECT batch_id, id, ?, ?, ?, ?, ?, ?, ? FROM items WHERE id = ?",
            [(u.kind, u.model, u.input_tokens, u.output_tokens, u.invocations, u.latency_ms, now, item_id) for u in usage],
        )

    def usage(self, batch_id: int | None = None) -> list[Usage]:
        query, params = ("SELECT * FROM usage ORDER BY id", ()) if batch_id is None else ("SELECT * FROM usage WHERE batch_id = ? ORDER BY id", (batch_id,))
        return [_usage(r) for r in self._connection().execute(query, params).fetchall()]

    def last_usage_at(self, kind: str) -> str | None:
        """When the last billable call of this kind (e.g. "endpoint") was recorded (ISO-8601 UTC)."""
        row = self._connection().execute("SELECT MAX(at) FROM usage WHERE kind = ?", (kind,)).fetchone()
        return row[0] if row else None

    def usage_rows(self, since: str | None = None) -> list[tuple[str, Usage]]:
        """(when, usage) pairs, oldest first, for cost ledgers."""
        rows = self._connection().execute("SELECT * FROM usage WHERE at >= ? ORDER BY id", (since or "",)).fetchall()
        return [(r["at"], _usage(r)) for r in rows]

    # Audit log -----------------------------------------------------------------------------
    def add_audit(self, who: str, action: str, result: str, detail: str = "") -> AuditEntry:
        now = utc_now()
        with self._tx() as db:
            db.execute("INSERT INTO audit_log (at, who, action, result, detail) VALUES (?, ?, ?, ?, ?)", (now, who, action, result, detail))
        return AuditEntry(at=now, who=who, action=action, result=result, detail=detail)

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        """Newest first."""
        rows = self._connection().execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [AuditEntry(at=r["at"], who=r["who"], action=r["action"], result=r["result"], detail=r["detail"]) for r in rows]

    # Async invocations ------------------------------------------------------------------------
    def remember_invocation(self, invocation: AsyncInvocation) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO async_invocations VALUES (?, ?, ?, ?, ?, ?)",
                (invocation.content_key, invocation.model_id, invocation.inference_id,
                 invocation.output_location, invocation.failure_location, invocation.invoked_at),
            )

    def pending_invocation(self, content_key: str, model_id: str) -> AsyncInvocation | None:
        row = self._connection().execute(
            "SELECT * FROM async_invocations WHERE content_key = ? AND model_id = ?", (content_key, model_id)
        ).fetchone()
        return AsyncInvocation(**dict(row)) if row else None

    def forget_invocation(self, content_key: str, model_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM async_invocations WHERE content_key = ? AND model_id = ?", (content_key, model_id))

    # Batch transform jobs -----------------------------------------------------------------------
    def save_transform_job(self, job: TransformJobRecord) -> None:
        now = utc_now()
        with self._tx() as db:
            db.execute(
                """INSERT INTO transform_jobs (job_name, batch_id, status, s3_prefix, total, done, failure_reason, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(job_name) DO UPDATE SET status = excluded.status, total = excluded.total,
                       done = excluded.done, failure_reason = excluded.failure_reason, updated_at = excluded.updated_at""",
                (job.job_name, job.batch_id, job.status, job.s3_prefix, job.total, job.done, job.failure_reason,
                 job.created_at or now, now),
            )

    def transform_jobs(self, batch_id: int) -> list[TransformJobRecord]:
        rows = self._connection().execute(
            "SELECT * FROM transform_jobs WHERE batch_id = ? ORDER BY created_at DESC, rowid DESC", (batch_id,)
        ).fetchall()
        return [TransformJobRecord(**dict(r)) for r in rows]

    def active_transform_jobs(self) -> list[TransformJobRecord]:
        rows = self._connection().execute(
            "SELECT * FROM transform_jobs WHERE status != 'Ingested' ORDER BY created_at, rowid"
        ).fetchall()
        return [TransformJobRecord(**dict(r)) for r in rows]

    def cached_caption(self, content_key: str, model_id: str) -> CaptionResult | None:
        row = self._connection().execute(
            "SELECT * FROM caption_cache WHERE content_key = ? AND model_id = ?", (content_key, model_id)
        ).fetchone()
        if row is None:
            return None
        return CaptionResult(caption=row["caption"], answers=json.loads(row["answers"]), model_id=model_id, cached=True)

    # OpenAI Batch API summaries ---------------------------------------------------------------
    def remember_openai_batch(self, record: OpenAIBatchRecord) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO openai_batches (openai_batch_id, batch_id, input_file_id, submitted_at, requests, status)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (record.openai_batch_id, record.batch_id, record.input_file_id,
                                                       record.submitted_at, record.requests, record.status))

    def pending_openai_batch(self, batch_id: int) -> OpenAIBatchRecord | None:
        row = self._connection().execute("SELECT * FROM openai_batches WHERE batch_id = ? ORDER BY submitted_at DESC, rowid DESC LIMIT 1",
                                         (batch_id,)).fetchone()
        return OpenAIBatchRecord(**dict(row)) if row else None

    def forget_openai_batch(self, batch_id: int, openai_batch_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM openai_batches WHERE batch_id = ? AND openai_batch_id = ?", (batch_id, openai_batch_id))

    def cache_caption(self, content_key: str, caption: CaptionResult) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO caption_cache (content_key, model_id, caption, answers, created_at) VALUES (?, ?, ?, ?, ?)",
                       (content_key, caption.model_id, caption.caption, json.dumps(caption.answers), utc_now()))

    # Analytics ----------------------------------------------------------------------------------
    def edits_since(self, since: str | None = None) -> list[Edit]:
        """Every edit saved at or after `since` (ISO-8601 UTC; None: all), oldest first (index edits_by_time)."""
        rows = self._connection().execute("SELECT * FROM edits WHERE at >= ? ORDER BY at, id", (since or "",)).fetchall()
        return [Edit(item_id=r["item_id"], field=r["field"], old=r["old"], new=r["new"], who=r["who"], at=r["at"]) for r in rows]

    # Attribute taxonomy versions (pipeline/admin/taxonomy.py) -------------------------------------
    def save_taxonomy(self, document: str, who: str, *, expected_latest: int) -> TaxonomyVersion:
        """Store `document` as version expected_latest + 1, only if expected_latest is still the newest version
        (StaleTaxonomyError otherwise: another admin saved meanwhile). Versions are never changed afterwards."""
        from pipeline.errors import StaleTaxonomyError

        now = utc_now()
        with self._tx() as db:  # BEGIN IMMEDIATE: the check and the insert are one write
            latest = db.execute("SELECT * FROM taxonomy_versions ORDER BY version DESC LIMIT 1").fetchone()
            if (latest["version"] if latest else 0) != expected_latest:
                raise StaleTaxonomyError(expected_latest, latest["version"], latest["created_by"], latest["created_at"])
            db.execute("INSERT INTO taxonomy_versions (version, document, created_by, created_at) VALUES (?, ?, ?, ?)",
                       (expected_latest + 1, document, who, now))
        return TaxonomyVersion(version=expected_latest + 1, document=document, created_by=who, created_at=now)

    def taxonomy_versions(self) -> list[TaxonomyVersion]:
        """Every stored version, oldest first (version 0, the default, is never stored)."""
        db = self._connection()
        active = db.execute("SELECT * FROM taxonomy_active WHERE id = 1").fetchone()
        return [_taxonomy(r, active) for r in db.execute("SELECT * FROM taxonomy_versions ORDER BY version").fetchall()]

    def get_taxonomy(self, version: int) -> TaxonomyVersion | None:
        db = self._connection()
        row = db.execute("SELECT * FROM taxonomy_versions WHERE version = ?", (version,)).fetchone()
        return _taxonomy(row, db.execute("SELECT * FROM taxonomy_active WHERE id = 1").fetchone()) if row else None

    def activate_taxonomy(self, version: int, who: str) -> None:
        """Make `version` the active one (0: the configured default)."""
        with self._tx() as db:
            if version and db.execute("SELECT 1 FROM taxonomy_versions WHERE version = ?", (version,)).fetchone() is None:
                raise ValueError(f"no taxonomy version {version}")
            db.execute("INSERT OR REPLACE INTO taxonomy_active (id, version, activated_by, activated_at) VALUES (1, ?, ?, ?)",
                       (version, who, utc_now()))

    def active_taxonomy(self) -> TaxonomyVersion | None:
        """The active version; None while none was ever activated (the default, version 0, runs)."""
        active = self._connection().execute("SELECT * FROM taxonomy_active WHERE id = 1").fetchone()
        if active is None:
            return None
        if active["version"] == 0:
            return TaxonomyVersion(version=0, document="", created_by="", created_at="", active=True,
                                   activated_by=active["activated_by"], activated_at=active["activated_at"])
        return self.get_taxonomy(active["version"])

    # Brand voice and languages (issue 19) -------------------------------------------------------
    def style_guide(self) -> StyleGuide:
        row = self._connection().execute("SELECT * FROM style_guide WHERE id = 1").fetchone()
        if row is None:
            return StyleGuide()
        return StyleGuide(tone=row["tone"], avoid=json.loads(row["avoid"]), prefer=json.loads(row["prefer"]),
                          version=row["version"], updated_by=row["updated_by"], updated_at=row["updated_at"])

    def save_style_guide(self, guide: StyleGuide, who: str, *, expected_version: int) -> StyleGuide:
        """Replace the style guide if its version is still `expected_version` (0: never saved), else StyleGuideConflict."""
        from pipeline.errors import StyleGuideConflict

        now = utc_now()
        values = (guide.tone, json.dumps(guide.avoid, ensure_ascii=False), json.dumps(guide.prefer, ensure_ascii=False))
        with self._tx() as db:
            if expected_version == 0:
                done = db.execute("INSERT OR IGNORE INTO style_guide (id, tone, avoid, prefer, version, updated_by, updated_at)"
                                  " VALUES (1, ?, ?, ?, 1, ?, ?)", (*values, who, now)).rowcount
            else:
                done = db.execute("UPDATE style_guide SET tone = ?, avoid = ?, prefer = ?, version = version + 1, updated_by = ?,"
                                  " updated_at = ? WHERE id = 1 AND version = ?", (*values, who, now, expected_version)).rowcount
        if not done:
            current = self.style_guide()
            raise StyleGuideConflict(current.updated_by, current.updated_at)
        return self.style_guide()

    def set_batch_languages(self, batch_id: int, languages: list[str] | tuple[str, ...]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO batch_languages (batch_id, languages) VALUES (?, ?)",
                       (batch_id, json.dumps(list(languages))))

    def batch_languages(self, batch_id: int) -> list[str]:
        row = self._connection().execute("SELECT languages FROM batch_languages WHERE batch_id = ?", (batch_id,)).fetchone()
        return list(json.loads(row["languages"])) if row else []

    # Near-duplicate photos (issue 19) --------------------------------------------------------------
    def near_duplicate_catalogue(self, limit: int) -> list[tuple[str, int, int, int]]:
        """(phash, batch id, item id, seq) of the newest `limit` tagged items with a hash (one read of the
        items table by primary key, newest first; 100,000 rows measured in tests/test_near_duplicates.py)."""
        rows = self._connection().execute(
            "SELECT phash, batch_id, id, seq FROM items WHERE phash IS NOT NULL AND status = 'ok' ORDER BY id DESC LIMIT ?",
            (max(0, int(limit)),)).fetchall()
        return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def set_reuse_near_duplicates(self, batch_id: int, reuse: bool) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO batch_reuse (batch_id, reuse) VALUES (?, ?)", (batch_id, int(bool(reuse))))

    def reuse_near_duplicates(self, batch_id: int) -> bool:
        row = self._connection().execute("SELECT reuse FROM batch_reuse WHERE batch_id = ?", (batch_id,)).fetchone()
        return bool(row and row[0])


def _apply_edit(item: ItemRecord, field: str, new_value: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """(old as text, new as text, column updates) for one edit; raises ValueError for unknown fields."""
    if field == "tags":
        tags = new_value if isinstance(new_value, list) else [t for t in str(new_value or "").split(",")]
        tags = [t.strip() for t in tags if t.strip()]
        return ", ".join(item.tags), ", ".join(tags), {"tags": json.dumps(tags)}
    if field.startswith("attribute:"):
        name = field.split(":", 1)[1]
        attributes = [AttributeValue(**a.__dict__) for a in item.attributes]
        current = next((a for a in attributes if a.name == name), None)
        if current is None:
            current = AttributeValue(name=name, raw="", value="", in_vocab=False)
            attributes.append(current)
        old = current.value
        current.value = str(new_value or "").strip()
        current.in_vocab = True  # a person chose it: no longer needs review
        return old, current.value, {"attributes": json.dumps([a.__dict__ for a in attributes])}
    if field.startswith("summary:"):  # an extra-language summary (issue 19), held to its language's limit
        from pipeline.wordlimit import limit_text, measure, within_limit

        code = field.split(":", 1)[1]
        summaries = dict(item.summaries)
        old_text = summaries.get(code)
        new_text = " ".join(str(new_value or "").split())
        if not within_limit(new_text, code):
            raise BadInputError(f"The {code} summary has {measure(new_text, code)} "
                                f"{limit_text(code).split()[1]}; the limit is {limit_text(code)}. Shorten it and save again.")
        summaries[code] = new_text
        return old_text, new_text, {"summaries": json.dumps(summaries, ensure_ascii=False)}
    if field in SEO_FIELDS:  # SEO title / meta description / alt text (issue 19): over a limit is refused, never cut
        from pipeline.wordlimit import seo_problem

        new_text = " ".join(str(new_value or "").split())
        problem = seo_problem(field, new_text)
        if problem:
            raise BadInputError(problem)
        return getattr(item, field) or "", new_text, {field: new_text}
    if field not in EDITABLE_FIELDS:
        raise ValueError(f"{field} cannot be edited")
    old = getattr(item, field)
    new = None if new_value is None else str(new_value).strip()
    if field == "title":  # a person's title over the feeds' limit is refused, never cut (pipeline/wordlimit.py)
        from pipeline.wordlimit import title_problem

        problem = title_problem(new or "")
        if problem:
            raise BadInputError(problem)
    if field == "summary" and count_words(new or "") > MAX_SUMMARY_WORDS:
        raise BadInputError(f"The summary has {count_words(new or '')} words; the limit is {MAX_SUMMARY_WORDS}. Shorten it and save again.")
    if field == "review_status" and new not in ("pending", "approved", "rejected"):
        raise BadInputError("Review status must be pending, approved or rejected.")
    updates: dict[str, Any] = {field: new}
    if field == "summary":
        updates["word_count"] = count_words(new or "")
    return old, new, updates


def _run(row: Any) -> BatchRun | None:
    """The batch's runner and stop request as stored (None when neither is set)."""
    keys = row.keys()
    if "run_owner" not in keys or (row["run_owner"] is None and row["stop_requested_by"] is None):
        return None
    return BatchRun(owner=row["run_owner"], host=row["run_host"], started_at=row["run_started_at"],
                    heartbeat_at=row["run_heartbeat_at"], lease_until=row["run_lease_until"],
                    stop_requested_by=row["stop_requested_by"], stop_requested_at=row["stop_requested_at"])


def _taxonomy(row: Any, active: Any) -> TaxonomyVersion:
    on = active is not None and active["version"] == row["version"]
    return TaxonomyVersion(version=row["version"], document=row["document"], created_by=row["created_by"], created_at=row["created_at"],
                           active=on, activated_by=active["activated_by"] if on else None, activated_at=active["activated_at"] if on else None)


def _usage(row: sqlite3.Row) -> Usage:
    return Usage(kind=row["kind"], model=row["model"], input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                 invocations=row["invocations"], latency_ms=row["latency_ms"])


def _item(row: sqlite3.Row) -> ItemRecord:
    return ItemRecord(
        id=row["id"], batch_id=row["batch_id"], seq=row["seq"], source=row["source"],
        ref=SourceRef.from_dict(json.loads(row["ref"])) if row["ref"] else None,
        sku=row["sku"], hints=json.loads(row["hints"]), status=row["status"], error=row["error"],
        content_key=row["content_key"], image_path=row["image_path"], caption=row["caption"],
        attributes=[AttributeValue(**a) for a in json.loads(row["attributes"])], title=row["title"],
        tags=json.loads(row["tags"]), summary=row["summary"], word_count=row["word_count"],
        checks=PhotoChecks.from_dict(json.loads(row["checks"])) if row["checks"] else None,
        caption_model=row["caption_model"], summary_model=row["summary_model"], summary_offline=bool(row["summary_offline"]),
        review_status=row["review_status"], created_at=row["created_at"], processed_at=row["processed_at"], updated_at=row["updated_at"],
        version=int(row["version"] or 0), updated_by=row["updated_by"], lease_owner=row["lease_owner"],
        lease_until=float(row["lease_until"]) if row["lease_until"] is not None else None,
        stage_ms=_stage_ms(row["stage_ms"]), error_kind=row["error_kind"],
        summaries=_summaries(row["summaries"] if "summaries" in row.keys() else None),
        taxonomy_version=int(row["taxonomy_version"] or 0),
        **_near_duplicate_fields(row),
        **{name: (row[name] or "") if name in row.keys() else "" for name in SEO_FIELDS},
    )


def _near_duplicate_fields(row: Any) -> dict[str, str | None]:
    """phash / near_duplicate / reused_from of an item row (None on rows written before they were kept)."""
    keys = row.keys()
    return {name: (row[name] or None) if name in keys else None for name in NEAR_DUPLICATE_COLUMNS}


def _summaries(text: str | None) -> dict[str, str]:
    """Extra-language summaries (JSON); {} for items written before they were kept."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _stage_ms(text: str | None) -> dict[str, float]:
    """Stored stage timings (JSON); {} for items processed before they were kept."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
