"""DynamoStore: the Store for more than one dashboard task (STORE=dynamodb), one on-demand table.

Single-table design (every key is a string; docs/operations.md's "DynamoDB table" section is the map):

    PK                    SK                         what                        GSI1PK / GSI1SK
    COUNTER               batch | item               id allocation (atomic ADD)
    BATCH#<id>            META                       name, who, notices, total,  BATCHES / <id:010d>
                                                     done, failed counters, run_*
                                                     (runner lease), stop_requested_*
    BATCH#<id>            ITEM#<seq:06d>             one item (SQLite's columns), version,
                                                     lease_owner / lease_until while a runner holds it
    BATCH#<id>            USAGE#<at>#<uuid>          one billable call           USAGE#<yyyy-mm> / <at>#<uuid>
    BATCH#<id>            TRANSFORM#<job name>       a batch transform job       ACTIVEJOBS / <created_at> (while active)
    BATCH#<id>            OPENAIBATCH#<openai id>    OpenAI Batch API job whose
                                                     answers are not saved yet
    BATCH#<id>            LANGUAGES                  the batch's extra summary languages
    BATCH#<id>            REUSE                      near-duplicates reuse earlier captions (issue 19)
    PHASH                 <item id:012d>             a tagged photo's perceptual hash, batch id, seq
                                                     (the near-duplicate catalogue: one Query, newest first)
    CONFIG                STYLE_GUIDE                brand style guide, version (conditional Put)
    ITEMIDS               <first item id:012d>       item-id block of one batch
    ITEM#<id>             EDIT#<ns:020d>#<rand>      one edit (who, when, old, new)  EDITS#<yyyy-mm> / <at>#<ns:020d>#<rand>
    CAPTION#<content key> MODEL#<model id>           caption cache
    ASYNC#<content key>   MODEL#<model id>           async invocation paid for, not yet collected
    LASTUSE               <kind>                     time of the last billable call of a kind
    AUDIT                 <at>#<ns:020d>#<rand>      admin audit log
    TAXONOMY              V#<version:06d> | ACTIVE   attribute taxonomy versions (immutable; conditional Put) and the active one

Why this shape: every page's read is one Query on one partition (a batch's items, an item's edits)
with strongly consistent reads; counters change in the same transaction as the item they count, so
a retried write can never count twice; item ids stay small integers (the Store contract) by
allocating one block per batch and finding a block with one reverse Query on ITEMIDS. DynamoDB
items are limited to 400 KB: an item whose CSV hints would exceed STORE_ITEM_MAX_BYTES is
recorded as failed with a message rather than breaking the batch.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from decimal import Decimal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Iterator

from pipeline.errors import ServiceError
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
from pipeline.models import StyleGuide
from pipeline.store import StaleEditError
from pipeline.store.sqlite_store import PROCESSING, _apply_edit, _item as _sqlite_item, utc_now
from pipeline.store.sqlite_store import SEO_FIELDS

ITEM_MAX_BYTES = 350_000  # DynamoDB's hard limit is 400 KB per item; leave room for results and edits
_TX_RETRIES = 8


def table_definition(name: str) -> dict[str, Any]:
    """CreateTable arguments; infra/ creates the same table (plus point-in-time recovery)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK", "GSI1PK", "GSI1SK")],
        "KeySchema": [{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": "GSI1",
            "KeySchema": [{"AttributeName": "GSI1PK", "KeyType": "HASH"}, {"AttributeName": "GSI1SK", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},  # readers fetch the real item consistently
        }],
        "SSESpecification": {"Enabled": True},
    }


def _dump(value: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {k: serializer.serialize(Decimal(str(v)) if isinstance(v, float) else v) for k, v in value.items()}


def _load(value: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    out = {k: deserializer.deserialize(v) for k, v in value.items()}
    return {k: (int(v) if v == v.to_integral_value() and k != "latency_ms" else float(v)) if isinstance(v, Decimal) else v
            for k, v in out.items()}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


def _unique_suffix() -> str:
    return f"{time.time_ns():020d}#{uuid.uuid4().hex[:8]}"


@dataclass
class EditIndexBackfill:
    """What `DynamoStore.backfill_edit_index` did."""

    indexed: int = 0  # edit rows given their index entry by this run
    done_elsewhere: int = 0  # found without it, but indexed by another run before this one's conditional write
    no_time: int = 0  # edit rows without a readable `at`: left as they are
    rows_read: int = 0  # rows the Scan read (what it cost: about 0.5 read units per 4 KB)
    pages: int = 0


class DynamoStore:
    def __init__(self, client: Any, table: str, *, item_max_bytes: int = ITEM_MAX_BYTES) -> None:
        self.client, self.table, self.item_max_bytes = client, table, item_max_bytes
        self._keys: dict[int, tuple[str, str]] = {}  # item id -> key never changes once written

    @classmethod
    def from_settings(cls, settings) -> "DynamoStore":
        import boto3
        from botocore.config import Config

        config = Config(region_name=settings.aws_region, retries={"max_attempts": 8, "mode": "adaptive"})
        return cls(boto3.client("dynamodb", config=config), settings.dynamodb_table)

    def create_table(self) -> None:
        """For development and tests; in AWS the table comes from infra/."""
        self.client.create_table(**table_definition(self.table))
        self.client.get_waiter("table_exists").wait(TableName=self.table)

    # Low-level helpers ------------------------------------------------------------------------
    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        found = self.client.get_item(TableName=self.table, Key=_key(pk, sk), ConsistentRead=True).get("Item")
        return _load(found) if found else None

    def _put(self, item: dict[str, Any]) -> None:
        self.client.put_item(TableName=self.table, Item=_dump(item))

    def _query(self, pk: str, *, prefix: str | None = None, forward: bool = True, limit: int | None = None,
               sk_at_most: str | None = None) -> Iterator[dict[str, Any]]:
        condition, values = "PK = :pk", {":pk": {"S": pk}}
        if prefix is not None:
            condition += " AND begins_with(SK, :prefix)"
            values[":prefix"] = {"S": prefix}
        elif sk_at_most is not None:
            condition += " AND SK <= :top"
            values[":top"] = {"S": sk_at_most}
        yield from self._paged_query(dict(KeyConditionExpression=condition, ExpressionAttributeValues=values,
                                          ScanIndexForward=forward, ConsistentRead=True), limit)

    def _query_index(self, pk: str, *, sk_from: str | None = None) -> Iterator[dict[str, Any]]:
        condition, values = "GSI1PK = :pk", {":pk": {"S": pk}}
        if sk_from is not None:
            condition += " AND GSI1SK >= :from"
            values[":from"] = {"S": sk_from}
        yield from self._paged_query(dict(IndexName="GSI1", KeyConditionExpression=condition, ExpressionAttributeValues=values), None)

    def _paged_query(self, args: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
        seen = 0
        while True:
            page = self.client.query(TableName=self.table, **args, **({"Limit": limit} if limit else {}))
            for raw in page.get("Items", []):
                yield _load(raw)
                seen += 1
                if limit and seen >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request = {self.table: {"Keys": [_key(*k) for k in keys[start:start + 100]], "ConsistentRead": True}}
            while request:
                page = self.client.batch_get_item(RequestItems=request)
                found.extend(_load(i) for i in page["Responses"].get(self.table, []))
                request = page.get("UnprocessedKeys") or {}
        return found

    def _batch_put(self, items: list[dict[str, Any]]) -> None:
        for start in range(0, len(items), 25):
            pending = [{"PutRequest": {"Item": _dump(i)}} for i in items[start:start + 25]]
            for attempt in range(10):
                left = self.client.batch_write_item(RequestItems={self.table: pending}).get("UnprocessedItems", {})
                pending = left.get(self.table, [])
                if not pending:
                    break
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.random())
            if pending:
                raise ServiceError("The database is busy (writes throttled); try again shortly.")

    def _transact(self, actions: list[dict[str, Any]]) -> bool:
        """Run a write transaction; False when a condition failed (the caller re-reads and retries)."""
        try:
            self.client.transact_write_items(TransactItems=actions)
            return True
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                return False
            raise

    def _allocate(self, counter: str, count: int) -> int:
        """First of `count` new ids."""
        answer = self.client.update_item(
            TableName=self.table, Key=_key("COUNTER", counter), UpdateExpression="ADD n :k",
            ExpressionAttributeValues={":k": {"N": str(count)}}, ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["n"]["N"]) - count + 1

    # Batches -------------------------------------------------------------------------------
    def create_batch(self, name: str, created_by: str, report: IngestReport) -> BatchRecord:
        now = utc_now()
        batch_id = self._allocate("batch", 1)
        first_id = self._allocate("item", max(1, len(report.items)))
        rows = [self._new_item_row(batch_id, first_id, seq, item, now) for seq, item in enumerate(report.items)]
        self._batch_put(rows)
        self._put({"PK": "ITEMIDS", "SK": f"{first_id:012d}", "batch_id": batch_id, "count": len(rows)})
        failed = sum(1 for r in rows if r["status"] == "error")
        # META last: a batch becomes visible only once all its items are written.
        self._put({"PK": f"BATCH#{batch_id}", "SK": "META", "GSI1PK": "BATCHES", "GSI1SK": f"{batch_id:010d}",
                   "id": batch_id, "name": name, "created_at": now, "created_by": created_by,
                   "notices": json.dumps(report.notices), "total": len(rows), "done": failed, "failed": failed})
        return self.get_batch(batch_id)  # type: ignore[return-value]

    def _new_item_row(self, batch_id: int, first_id: int, seq: int, item, now: str) -> dict[str, Any]:
        row = {
            "PK": f"BATCH#{batch_id}", "SK": f"ITEM#{seq:06d}", "id": first_id + seq, "batch_id": batch_id, "seq": seq,
            "source": item.source, "ref": json.dumps(item.ref.to_dict()) if item.ref else None, "sku": item.sku,
            "hints": json.dumps(item.hints), "status": "error" if item.error else "pending", "error": item.error,
            "attributes": "[]", "tags": "[]", "summary_offline": 0, "review_status": "pending", "version": 0,
            "created_at": now, "processed_at": now if item.error else None,
        }
        size = len(json.dumps(row, default=str).encode())
        if size > self.item_max_bytes:  # too big for one DynamoDB item: fail this row, keep the batch
            row.update(hints="{}", ref=None, status="error", processed_at=now,
                       error=f"This row's extra CSV columns are too large to store ({size // 1000} KB; the limit is "
                             f"{self.item_max_bytes // 1000} KB). Shorten them and upload the row again.")
        return row

    def get_batch(self, batch_id: int) -> BatchRecord | None:
        row = self._get(f"BATCH#{batch_id}", "META")
        return _batch(row) if row else None

    def list_batches(self) -> list[BatchRecord]:
        keys = [(k["PK"], k["SK"]) for k in self._query_index("BATCHES")]
        return sorted((_batch(r) for r in self._batch_get(keys)), key=lambda b: b.id, reverse=True)

    # Items ---------------------------------------------------------------------------------
    def list_items(self, batch_id: int) -> list[ItemRecord]:
        return [_item(r) for r in self._query(f"BATCH#{batch_id}", prefix="ITEM#")]

    def _item_key(self, item_id: int) -> tuple[str, str] | None:
        if item_id in self._keys:
            return self._keys[item_id]
        key = self._find_item_key(item_id)
        if key is not None:
            self._keys[item_id] = key
        return key

    def _find_item_key(self, item_id: int) -> tuple[str, str] | None:
        block = next(self._query("ITEMIDS", forward=False, limit=1, sk_at_most=f"{item_id:012d}"), None)
        if block is None:
            return None
        seq = item_id - int(block["SK"])
        if not 0 <= seq < block["count"]:
            return None
        return f"BATCH#{block['batch_id']}", f"ITEM#{seq:06d}"

    def _item_row(self, item_id: int) -> dict[str, Any] | None:
        key = self._item_key(item_id)
        return self._get(*key) if key else None

    def get_item(self, item_id: int) -> ItemRecord | None:
        row = self._item_row(item_id)
        return _item(row) if row else None

    def items_to_process(self, batch_id: int, *, retry_failed: bool = False) -> list[ItemRecord]:
        statuses = ("pending", "running", "error") if retry_failed else ("pending", "running")
        return [i for i in self.list_items(batch_id) if i.status in statuses and i.ref is not None]

    def unfinished_batch_ids(self) -> list[int]:
        return sorted(b.id for b in self.list_batches() if b.done < b.total)

    def _finish_item(self, item_id: int, updates: dict[str, Any], usage: list[Usage], extra: list[dict[str, Any]],
                     owner: str | None = None) -> bool:
        """Set an item's outcome, move the batch counters and add its usage rows in one transaction;
        the condition on the item's version makes a concurrent or repeated write re-read first.
        With `owner`, only the runner holding the item's lease may write (and its lease ends)."""
        updates = {**updates, "updated_by": PROCESSING}
        for _ in range(_TX_RETRIES):
            row = self._item_row(item_id)
            if row is None:
                raise KeyError(item_id)
            if owner is not None and row.get("lease_owner") != owner:
                return False  # lease lost (taken over, or this item already finished): write nothing
            was, now_status = row["status"], updates["status"]
            done = int(now_status in ("ok", "error")) - int(was in ("ok", "error"))
            failed = int(now_status == "error") - int(was == "error")
            names = {f"#{k}": k for k in updates} | {"#version": "version"}
            values = {f":{k}": v for k, v in updates.items()} | {":v": row["version"], ":one": 1}
            expression, condition = "SET " + ", ".join(f"#{k} = :{k}" for k in updates) + ", #version = :v + :one", "#version = :v"
            if owner is not None:
                expression += " REMOVE #lease_owner, #lease_until"
                condition += " AND #lease_owner = :owner"
                names |= {"#lease_owner": "lease_owner", "#lease_until": "lease_until"}
                values[":owner"] = owner
            actions = [{"Update": {
                "TableName": self.table, "Key": _key(row["PK"], row["SK"]),
                "UpdateExpression": expression, "ConditionExpression": condition,
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": _dump(values),
            }}]
            if done or failed:
                actions.append({"Update": {
                    "TableName": self.table, "Key": _key(row["PK"], "META"), "UpdateExpression": "ADD done :d, failed :f",
                    "ExpressionAttributeValues": {":d": {"N": str(done)}, ":f": {"N": str(failed)}},
                }})
            actions += [{"Put": {"TableName": self.table, "Item": _dump(r)}} for r in self._usage_rows(row, usage)]
            actions += extra
            if self._transact(actions):
                self._touch_last_usage(usage)
                return True
        raise ServiceError("The database kept changing under this update; try again.")

    def _usage_rows(self, item_row: dict[str, Any], usage: list[Usage]) -> list[dict[str, Any]]:
        now, rows = utc_now(), []
        for u in usage:
            suffix = f"{now}#{uuid.uuid4().hex}"
            rows.append({"PK": item_row["PK"], "SK": f"USAGE#{suffix}", "GSI1PK": f"USAGE#{now[:7]}", "GSI1SK": suffix,
                         "at": now, "batch_id": item_row["batch_id"], "item_id": item_row["id"], "kind": u.kind, "model": u.model,
                         "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "invocations": u.invocations,
                         "latency_ms": float(u.latency_ms)})
        return rows

    def _touch_last_usage(self, usage: list[Usage]) -> None:
        now = utc_now()
        for kind in {u.kind for u in usage}:
            try:
                self.client.update_item(
                    TableName=self.table, Key=_key("LASTUSE", kind), UpdateExpression="SET #at = :now",
                    ConditionExpression="attribute_not_exists(#at) OR #at < :now",
                    ExpressionAttributeNames={"#at": "at"}, ExpressionAttributeValues={":now": {"S": now}},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # someone recorded a later call already

    def record_usage(self, item_id: int, usage: list[Usage]) -> None:
        row = self._item_row(item_id)
        if row is None or not usage:
            return
        self._batch_put(self._usage_rows(row, usage))
        self._touch_last_usage(usage)

    def save_result(self, item_id: int, result: ItemResult, usage: list[Usage], *, owner: str | None = None,
                    stage_ms: dict[str, float] | None = None) -> bool:
        now = utc_now()
        updates = {
            "status": "ok", "error": None, "content_key": result.content_key, "image_path": result.image_path,
            "caption": result.caption.caption, "attributes": json.dumps([a.__dict__ for a in result.attributes]),
            "title": result.summary.title, "tags": json.dumps(result.summary.tags), "summary": result.summary.summary,
            "word_count": result.word_count, "checks": json.dumps(result.checks.to_dict()),
            "caption_model": result.caption.model_id, "summary_model": result.summary.model,
            "summary_offline": int(result.summary.offline), "processed_at": now, "updated_at": now,
            "stage_ms": json.dumps(stage_ms or {}), "error_kind": None, "taxonomy_version": result.taxonomy_version,
        }
        updates["summaries"] = json.dumps(result.summary.summaries, ensure_ascii=False)  # extra languages (issue 19)
        updates.update({"phash": result.phash, "near_duplicate": result.near_duplicate, "reused_from": result.reused_from})
        updates.update({name: getattr(result.summary, name) for name in SEO_FIELDS})  # SEO and alt text (issue 19)
        extra = []
        if not result.caption.cached:
            extra.append({"Put": {"TableName": self.table, "Item": _dump({
                "PK": f"CAPTION#{result.content_key}", "SK": f"MODEL#{result.caption.model_id}",
                "caption": result.caption.caption, "answers": json.dumps(result.caption.answers), "created_at": now})}})
        extra += self._phash_put(item_id, result.phash)  # near-duplicates (issue 19): the catalogue's own key
        return self._finish_item(item_id, updates, usage, extra, owner)

    def save_error(self, item_id: int, message: str, usage: list[Usage], *, owner: str | None = None,
                   error_kind: str | None = None, stage_ms: dict[str, float] | None = None) -> bool:
        now = utc_now()
        return self._finish_item(item_id, {"status": "error", "error": message, "processed_at": now, "updated_at": now,
                                           "stage_ms": json.dumps(stage_ms or {}), "error_kind": error_kind},
                                 usage, [], owner)

    # Leases (conditional writes: the condition is what makes a claim exclusive) ------------------
    def _conditional_update(self, key: tuple[str, str], expression: str, condition: str, names: dict[str, str],
                            values: dict[str, Any], returns: str = "NONE") -> dict[str, Any] | None:
        """One UpdateItem; None when its condition failed, else the returned attributes."""
        try:
            answer = self.client.update_item(
                TableName=self.table, Key=_key(*key), UpdateExpression=expression, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=_dump(values), ReturnValues=returns)
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return _load(answer.get("Attributes") or {})

    def claim_item(self, item_id: int, owner: str, lease_s: float, *, version: int, now: float,
                   stale_owners: tuple[str, ...] = ()) -> bool:
        key = self._item_key(item_id)
        if key is None:
            return False
        owners = {f":o{i}": o for i, o in enumerate((owner, *stale_owners))}
        return self._conditional_update(
            key, "SET #lo = :me, #lu = :until",
            f"#version = :v AND (attribute_not_exists(#lo) OR #lu < :now OR #lo IN ({', '.join(owners)}))",
            {"#lo": "lease_owner", "#lu": "lease_until", "#version": "version"},
            {":me": owner, ":until": now + lease_s, ":v": version, ":now": now, **owners},
        ) is not None

    def renew_items(self, item_ids: list[int], owner: str, lease_s: float, *, now: float) -> list[int]:
        held = []
        for item_id in item_ids:
            key = self._item_key(item_id)
            if key is not None and self._conditional_update(
                key, "SET #lu = :until", "#lo = :me", {"#lo": "lease_owner", "#lu": "lease_until"},
                {":me": owner, ":until": now + lease_s},
            ) is not None:
                held.append(item_id)
        return held

    def release_item(self, item_id: int, owner: str) -> None:
        key = self._item_key(item_id)
        if key is not None:
            self._conditional_update(key, "REMOVE #lo, #lu", "#lo = :me", {"#lo": "lease_owner", "#lu": "lease_until"}, {":me": owner})

    _RUN_NAMES = {"#ro": "run_owner", "#rh": "run_host", "#rs": "run_started_at", "#rb": "run_heartbeat_at",
                  "#rl": "run_lease_until", "#sb": "stop_requested_by", "#sa": "stop_requested_at"}

    def claim_batch(self, batch_id: int, owner: str, lease_s: float, *, now: float,
                    stale_owners: tuple[str, ...] = ()) -> BatchRun:
        owners = {f":o{i}": o for i, o in enumerate((owner, *stale_owners))}
        claimed = self._conditional_update(
            (f"BATCH#{batch_id}", "META"), "SET #ro = :me, #rh = :host, #rs = :now, #rb = :now, #rl = :until REMOVE #sb, #sa",
            f"attribute_exists(PK) AND (attribute_not_exists(#ro) OR #rl < :now OR #ro IN ({', '.join(owners)}))",
            self._RUN_NAMES, {":me": owner, ":host": owner.split("/", 1)[0], ":now": now, ":until": now + lease_s, **owners},
            returns="ALL_NEW",
        )
        row = claimed or self._get(f"BATCH#{batch_id}", "META")
        if row is None:
            raise KeyError(batch_id)
        return _run(row) or BatchRun()

    def heartbeat_batch(self, batch_id: int, owner: str, lease_s: float, *, now: float) -> BatchRun | None:
        row = self._conditional_update(
            (f"BATCH#{batch_id}", "META"), "SET #rb = :now, #rl = :until", "#ro = :me",
            {"#ro": "run_owner", "#rb": "run_heartbeat_at", "#rl": "run_lease_until"},
            {":me": owner, ":now": now, ":until": now + lease_s}, returns="ALL_NEW",
        )
        return _run(row) if row is not None else None

    def release_batch(self, batch_id: int, owner: str) -> None:
        self._conditional_update((f"BATCH#{batch_id}", "META"), "REMOVE " + ", ".join(self._RUN_NAMES), "#ro = :me",
                                 self._RUN_NAMES, {":me": owner})

    def request_stop(self, batch_id: int, who: str, *, now: float) -> None:
        self._conditional_update((f"BATCH#{batch_id}", "META"), "SET #sb = :who, #sa = :now", "attribute_exists(PK)",
                                 {"#sb": "stop_requested_by", "#sa": "stop_requested_at"}, {":who": who, ":now": now})

    # Edits ---------------------------------------------------------------------------------
    def edit_item(self, item_id: int, field: str, new_value: str | list[str] | None, who: str,
                  *, expected_version: int | None = None) -> Edit | None:
        for _ in range(_TX_RETRIES):
            row = self._item_row(item_id)
            if row is None:
                raise KeyError(item_id)
            old, new, updates = _apply_edit(_item(row), field, new_value)
            if old == new:
                return None  # already what this person wants: nothing to refuse
            if expected_version is not None and row["version"] != expected_version:
                raise StaleEditError(item_id, row.get("updated_by"), row.get("updated_at"), new_value, row["version"])
            now = utc_now()
            updates["updated_at"] = now
            updates["updated_by"] = who
            names = {f"#{k}": k for k in updates} | {"#version": "version"}
            values = _dump({f":{k}": v for k, v in updates.items()} | {":v": row["version"], ":one": 1})
            suffix = _unique_suffix()
            edit = {"PK": f"ITEM#{item_id}", "SK": f"EDIT#{suffix}", "item_id": item_id, "field": field,
                    "old": old, "new": new, "who": who, "at": now,
                    "GSI1PK": f"EDITS#{now[:7]}", "GSI1SK": f"{now}#{suffix}"}  # by month, for edits_since
            if self._transact([
                {"Update": {"TableName": self.table, "Key": _key(row["PK"], row["SK"]),
                            "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in updates) + ", #version = :v + :one",
                            "ConditionExpression": "#version = :v",
                            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}},
                {"Put": {"TableName": self.table, "Item": _dump(edit)}},
            ]):
                return Edit(item_id=item_id, field=field, old=old, new=new, who=who, at=now, version=row["version"] + 1)
        raise ServiceError("Someone else kept changing this item; reload and try again.")

    def edits(self, item_id: int) -> list[Edit]:
        return [Edit(item_id=r["item_id"], field=r["field"], old=r["old"], new=r["new"], who=r["who"], at=r["at"])
                for r in self._query(f"ITEM#{item_id}", prefix="EDIT#")]

    # Usage ledger ----------------------------------------------------------------------------
    def usage(self, batch_id: int | None = None) -> list[Usage]:
        batch_ids = [batch_id] if batch_id is not None else [b.id for b in self.list_batches()]
        rows = [r for b in batch_ids for r in self._query(f"BATCH#{b}", prefix="USAGE#")]
        return [_usage(r) for r in sorted(rows, key=lambda r: r["SK"])]

    def last_usage_at(self, kind: str) -> str | None:
        row = self._get("LASTUSE", kind)
        return row["at"] if row else None

    def usage_rows(self, since: str | None = None) -> list[tuple[str, Usage]]:
        rows: list[dict[str, Any]] = []
        for month in _months(since or "2000-01", utc_now()):
            keys = [(k["PK"], k["SK"]) for k in self._query_index(f"USAGE#{month}", sk_from=since)]
            rows.extend(self._batch_get(keys))
        return [(r["at"], _usage(r)) for r in sorted(rows, key=lambda r: r["SK"])]

    # Audit log -------------------------------------------------------------------------------
    def add_audit(self, who: str, action: str, result: str, detail: str = "") -> AuditEntry:
        now = utc_now()
        self._put({"PK": "AUDIT", "SK": f"{now}#{_unique_suffix()}", "at": now, "who": who, "action": action,
                   "result": result, "detail": detail})
        return AuditEntry(at=now, who=who, action=action, result=result, detail=detail)

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        return [AuditEntry(at=r["at"], who=r["who"], action=r["action"], result=r["result"], detail=r["detail"])
                for r in self._query("AUDIT", forward=False, limit=limit)]

    # Caption cache and async invocations ------------------------------------------------------
    def cached_caption(self, content_key: str, model_id: str) -> CaptionResult | None:
        row = self._get(f"CAPTION#{content_key}", f"MODEL#{model_id}")
        if row is None:
            return None
        return CaptionResult(caption=row["caption"], answers=json.loads(row["answers"]), model_id=model_id, cached=True)

    def remember_invocation(self, invocation: AsyncInvocation) -> None:
        self._put({"PK": f"ASYNC#{invocation.content_key}", "SK": f"MODEL#{invocation.model_id}", **invocation.__dict__})

    def pending_invocation(self, content_key: str, model_id: str) -> AsyncInvocation | None:
        row = self._get(f"ASYNC#{content_key}", f"MODEL#{model_id}")
        if row is None:
            return None
        return AsyncInvocation(**{k: row[k] for k in AsyncInvocation.__dataclass_fields__})

    def forget_invocation(self, content_key: str, model_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key=_key(f"ASYNC#{content_key}", f"MODEL#{model_id}"))

    # Batch transform jobs ----------------------------------------------------------------------
    def save_transform_job(self, job: TransformJobRecord) -> None:
        existing = self._get(f"BATCH#{job.batch_id}", f"TRANSFORM#{job.job_name}")
        now = utc_now()
        created = (existing or {}).get("created_at") or job.created_at or now
        row = {**job.__dict__, "created_at": created, "updated_at": now,
               "PK": f"BATCH#{job.batch_id}", "SK": f"TRANSFORM#{job.job_name}"}
        if job.active:  # sparse index: only active jobs are listed for resume
            row |= {"GSI1PK": "ACTIVEJOBS", "GSI1SK": f"{created}#{job.job_name}"}
        self._put(row)

    def transform_jobs(self, batch_id: int) -> list[TransformJobRecord]:
        rows = list(self._query(f"BATCH#{batch_id}", prefix="TRANSFORM#"))
        return [_job(r) for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)]

    def active_transform_jobs(self) -> list[TransformJobRecord]:
        keys = [(k["PK"], k["SK"]) for k in self._query_index("ACTIVEJOBS")]
        jobs = [_job(r) for r in self._batch_get(keys)]
        return sorted((j for j in jobs if j.active), key=lambda j: j.created_at)

    # OpenAI Batch API summaries ----------------------------------------------------------------
    def remember_openai_batch(self, record: OpenAIBatchRecord) -> None:
        self._put({"PK": f"BATCH#{record.batch_id}", "SK": f"OPENAIBATCH#{record.openai_batch_id}", **record.__dict__})

    def pending_openai_batch(self, batch_id: int) -> OpenAIBatchRecord | None:
        rows = list(self._query(f"BATCH#{batch_id}", prefix="OPENAIBATCH#"))
        if not rows:
            return None
        row = max(rows, key=lambda r: float(r["submitted_at"]))
        return OpenAIBatchRecord(**{k: row[k] for k in OpenAIBatchRecord.__dataclass_fields__} | {"submitted_at": float(row["submitted_at"])})

    def forget_openai_batch(self, batch_id: int, openai_batch_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key=_key(f"BATCH#{batch_id}", f"OPENAIBATCH#{openai_batch_id}"))

    def cache_caption(self, content_key: str, caption: CaptionResult) -> None:
        self._put({"PK": f"CAPTION#{content_key}", "SK": f"MODEL#{caption.model_id}", "caption": caption.caption,
                   "answers": json.dumps(caption.answers), "created_at": utc_now()})

    # Analytics ----------------------------------------------------------------------------------
    def edits_since(self, since: str | None = None) -> list[Edit]:
        """One GSI1 Query per month from `since` (partition EDITS#<yyyy-mm>, sort key from `since`),
        then the edit rows by BatchGetItem: never item by item. Edits saved before the index entry
        existed (older versions of this store) are listed once `backfill_edit_index` has run."""
        rows: list[dict[str, Any]] = []
        for month in _months(since or "2000-01", utc_now()):
            keys = [(k["PK"], k["SK"]) for k in self._query_index(f"EDITS#{month}", sk_from=since)]
            rows.extend(self._batch_get(keys))
        return [Edit(item_id=r["item_id"], field=r["field"], old=r.get("old"), new=r.get("new"), who=r["who"], at=r["at"])
                for r in sorted(rows, key=lambda r: r["GSI1SK"])]

    def backfill_edit_index(self, *, page_size: int = 500,
                            on_page: Callable[["EditIndexBackfill"], None] | None = None) -> "EditIndexBackfill":
        """Give edit rows saved before GSI1 listed edits (older versions of this store) the index entry edit_item
        writes (GSI1PK EDITS#<yyyy-mm>, GSI1SK <at>#<ns>#<rand>), so `edits_since` (the Quality page) finds them.

        No index lists such rows, so this is the one Scan in the store: `page_size` rows read a page (keys and `at`
        only, filtered to edit rows without the entry), each found row updated with a condition (still there and still
        without the entry). Running it again, after a stop or on two machines at once, writes each row once and changes
        nothing else (no item version, no other attribute); a row without a readable `at` is counted and left alone."""
        report = EditIndexBackfill()
        args: dict[str, Any] = {
            "TableName": self.table, "Limit": max(1, page_size), "ProjectionExpression": "PK, SK, #at",
            "FilterExpression": "begins_with(PK, :item) AND begins_with(SK, :edit) AND attribute_not_exists(GSI1PK)",
            "ExpressionAttributeNames": {"#at": "at"},
            "ExpressionAttributeValues": {":item": {"S": "ITEM#"}, ":edit": {"S": "EDIT#"}},
        }
        while True:
            page = self.client.scan(**args)
            report.pages += 1
            report.rows_read += int(page.get("ScannedCount", 0))
            for raw in page.get("Items", []):
                row = _load(raw)
                at = row.get("at")
                if not isinstance(at, str) or len(at) < 7:
                    report.no_time += 1
                    continue
                try:
                    self.client.update_item(
                        TableName=self.table, Key=_key(row["PK"], row["SK"]), UpdateExpression="SET GSI1PK = :pk, GSI1SK = :sk",
                        ConditionExpression="attribute_exists(PK) AND attribute_not_exists(GSI1PK)",
                        ExpressionAttributeValues={":pk": {"S": f"EDITS#{at[:7]}"}, ":sk": {"S": f"{at}#{row['SK'][len('EDIT#'):]}"}})
                    report.indexed += 1
                except self.client.exceptions.ConditionalCheckFailedException:
                    report.done_elsewhere += 1  # another run indexed it between our read and write (or it was deleted)
            if on_page is not None:
                on_page(report)
            if "LastEvaluatedKey" not in page:
                return report
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Attribute taxonomy versions (pipeline/admin/taxonomy.py): PK TAXONOMY, SK V#<version:06d> / ACTIVE ------
    def save_taxonomy(self, document: str, who: str, *, expected_latest: int) -> TaxonomyVersion:
        """Version expected_latest + 1, written only if no item has that key yet (a conditional Put): of two
        admins saving from the same version, one wins and the other gets StaleTaxonomyError."""
        from pipeline.errors import StaleTaxonomyError

        latest = self._latest_taxonomy()
        if (latest.version if latest else 0) != expected_latest:
            raise StaleTaxonomyError(expected_latest, latest.version, latest.created_by, latest.created_at)
        now, version = utc_now(), expected_latest + 1
        try:
            self.client.put_item(TableName=self.table, ConditionExpression="attribute_not_exists(PK)", Item=_dump({
                "PK": "TAXONOMY", "SK": f"V#{version:06d}", "version": version, "document": document,
                "created_by": who, "created_at": now}))
        except self.client.exceptions.ConditionalCheckFailedException:
            latest = self._latest_taxonomy()
            raise StaleTaxonomyError(expected_latest, latest.version if latest else version, latest.created_by if latest else None,
                                     latest.created_at if latest else None) from None
        return TaxonomyVersion(version=version, document=document, created_by=who, created_at=now)

    def _latest_taxonomy(self) -> TaxonomyVersion | None:
        row = next(self._query("TAXONOMY", prefix="V#", forward=False, limit=1), None)
        return _taxonomy(row, None) if row else None

    def taxonomy_versions(self) -> list[TaxonomyVersion]:
        active = self._get("TAXONOMY", "ACTIVE")
        return [_taxonomy(r, active) for r in self._query("TAXONOMY", prefix="V#")]

    def get_taxonomy(self, version: int) -> TaxonomyVersion | None:
        row = self._get("TAXONOMY", f"V#{version:06d}")
        return _taxonomy(row, self._get("TAXONOMY", "ACTIVE")) if row else None

    def activate_taxonomy(self, version: int, who: str) -> None:
        if version and self._get("TAXONOMY", f"V#{version:06d}") is None:
            raise ValueError(f"no taxonomy version {version}")
        self._put({"PK": "TAXONOMY", "SK": "ACTIVE", "version": version, "activated_by": who, "activated_at": utc_now()})

    def active_taxonomy(self) -> TaxonomyVersion | None:
        active = self._get("TAXONOMY", "ACTIVE")
        if active is None:
            return None
        if active["version"] == 0:
            return TaxonomyVersion(version=0, document="", created_by="", created_at="", active=True,
                                   activated_by=active["activated_by"], activated_at=active["activated_at"])
        return self.get_taxonomy(active["version"])

    # Brand voice and languages (issue 19) -------------------------------------------------------
    def style_guide(self) -> StyleGuide:
        row = self._get("CONFIG", "STYLE_GUIDE")
        if row is None:
            return StyleGuide()
        return StyleGuide(tone=row["tone"], avoid=json.loads(row["avoid"]), prefer=json.loads(row["prefer"]),
                          version=int(row["version"]), updated_by=row.get("updated_by"), updated_at=row.get("updated_at"))

    def save_style_guide(self, guide: StyleGuide, who: str, *, expected_version: int) -> StyleGuide:
        """Conditional PutItem: written only while the stored version is `expected_version` (0: none stored yet)."""
        from pipeline.errors import StyleGuideConflict

        now = utc_now()
        item = {"PK": "CONFIG", "SK": "STYLE_GUIDE", "tone": guide.tone, "avoid": json.dumps(guide.avoid, ensure_ascii=False),
                "prefer": json.dumps(guide.prefer, ensure_ascii=False), "version": expected_version + 1,
                "updated_by": who, "updated_at": now}
        condition = "attribute_not_exists(PK)" if expected_version == 0 else "#version = :v"
        args: dict[str, Any] = {"TableName": self.table, "Item": _dump(item), "ConditionExpression": condition}
        if expected_version:
            args |= {"ExpressionAttributeNames": {"#version": "version"},
                     "ExpressionAttributeValues": _dump({":v": expected_version})}
        try:
            self.client.put_item(**args)
        except self.client.exceptions.ConditionalCheckFailedException:
            current = self.style_guide()
            raise StyleGuideConflict(current.updated_by, current.updated_at) from None
        return self.style_guide()

    def set_batch_languages(self, batch_id: int, languages: list[str] | tuple[str, ...]) -> None:
        self._put({"PK": f"BATCH#{batch_id}", "SK": "LANGUAGES", "languages": json.dumps(list(languages))})

    def batch_languages(self, batch_id: int) -> list[str]:
        row = self._get(f"BATCH#{batch_id}", "LANGUAGES")
        return list(json.loads(row["languages"])) if row else []

    # Near-duplicate photos (issue 19) --------------------------------------------------------------
    def _phash_put(self, item_id: int, phash: str | None) -> list[dict[str, Any]]:
        """PK PHASH / SK <item id:012d>: one small row per tagged photo, so the catalogue is one Query (newest
        first), never a Scan. Written in the item's result transaction."""
        key = self._item_key(item_id) if phash else None
        if key is None:
            return []
        batch_id, seq = int(key[0].split("#", 1)[1]), int(key[1].split("#", 1)[1])
        return [{"Put": {"TableName": self.table, "Item": _dump({
            "PK": "PHASH", "SK": f"{item_id:012d}", "phash": phash, "batch_id": batch_id, "seq": seq})}}]

    def near_duplicate_catalogue(self, limit: int) -> list[tuple[str, int, int, int]]:
        """(phash, batch id, item id, seq) of the newest `limit` tagged photos: one paged Query on PK PHASH
        (about 60 bytes a row: 100,000 rows are about 6 MB, 6 pages of 1 MB)."""
        if limit <= 0:
            return []
        return [(row["phash"], int(row["batch_id"]), int(row["SK"]), int(row["seq"]))
                for row in self._query("PHASH", forward=False, limit=int(limit))]

    def set_reuse_near_duplicates(self, batch_id: int, reuse: bool) -> None:
        self._put({"PK": f"BATCH#{batch_id}", "SK": "REUSE", "reuse": int(bool(reuse))})

    def reuse_near_duplicates(self, batch_id: int) -> bool:
        row = self._get(f"BATCH#{batch_id}", "REUSE")
        return bool(row and row.get("reuse"))


_RESULT_COLUMNS = ("content_key", "image_path", "caption", "title", "summary", "word_count", "checks",
                   "caption_model", "summary_model", "processed_at", "updated_at", "error", "sku", "ref",
                   "updated_by", "lease_owner", "lease_until", "stage_ms", "error_kind", "taxonomy_version")

_RESULT_COLUMNS += ("summaries",)  # issue 19: extra-language summaries (absent on items written before)
_RESULT_COLUMNS += ("phash", "near_duplicate", "reused_from")  # issue 19: near-duplicate photos (absent: None)
_RESULT_COLUMNS += SEO_FIELDS  # issue 19: SEO title, meta description, alt text (absent on items written before: "")


def _item(row: dict[str, Any]) -> ItemRecord:
    """Items keep SQLite's column names and JSON text, so one mapper serves both stores."""
    return _sqlite_item({**dict.fromkeys(_RESULT_COLUMNS), **row})


def _months(since: str, now: str) -> list[str]:
    year, month = int(since[:4]), int(since[5:7])
    end = (int(now[:4]), int(now[5:7]))
    months = []
    while (year, month) <= end:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _batch(row: dict[str, Any]) -> BatchRecord:
    return BatchRecord(id=row["id"], name=row["name"], created_at=row["created_at"], created_by=row["created_by"],
                       notices=json.loads(row["notices"]), total=row["total"], done=row["done"], failed=row["failed"],
                       run=_run(row))


def _run(row: dict[str, Any]) -> BatchRun | None:
    if row.get("run_owner") is None and row.get("stop_requested_by") is None:
        return None
    number = lambda name: float(row[name]) if row.get(name) is not None else None  # noqa: E731
    return BatchRun(owner=row.get("run_owner"), host=row.get("run_host"), started_at=number("run_started_at"),
                    heartbeat_at=number("run_heartbeat_at"), lease_until=number("run_lease_until"),
                    stop_requested_by=row.get("stop_requested_by"), stop_requested_at=number("stop_requested_at"))


def _taxonomy(row: dict[str, Any], active: dict[str, Any] | None) -> TaxonomyVersion:
    on = active is not None and active["version"] == row["version"]
    return TaxonomyVersion(version=row["version"], document=row["document"], created_by=row["created_by"], created_at=row["created_at"],
                           active=on, activated_by=active["activated_by"] if on else None, activated_at=active["activated_at"] if on else None)


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(kind=row["kind"], model=row["model"], input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                 invocations=row["invocations"], latency_ms=float(row["latency_ms"]))


def _job(row: dict[str, Any]) -> TransformJobRecord:
    return TransformJobRecord(**{k: row[k] for k in TransformJobRecord.__dataclass_fields__})

