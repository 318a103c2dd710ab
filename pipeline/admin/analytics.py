"""Admin analytics over what the store recorded: Health (throughput, stage latency, failures, caption
cache, endpoint history) and Quality (how much of each field people accepted, edited or rejected).

UI-free and plain: a Store and a period in, dataclasses out; the dashboard's Health and Quality pages
draw them. Everything comes from the store, so the figures are the same on every dashboard task.

Sources:
- items processed in the period (`processed_at`): status, `stage_ms` (stage -> milliseconds) and
  `error_kind`, where the runner recorded them (items processed before timings were kept have none);
- the usage ledger: paid caption calls (kinds local / endpoint / transform / vision). A cache hit makes no
  call and no usage row, so hits = items that got a caption - paid caption calls in the period;
- the audit log: endpoint start / stop / auto-stop and what each did;
- the edit history (`Store.edits_since`): who changed which field from what to what.

Percentiles are nearest-rank: p95 of n values is the ceil(0.95 n)-th smallest, always an observed value.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from pipeline.models import SUMMARIZER_SOURCE, AuditEntry, Edit, ItemRecord
from pipeline.store import Store

STAGES = ("fetch", "normalize", "checks", "caption", "summarize", "save")
CAPTION_USAGE_KINDS = ("local", "endpoint", "transform", "vision")  # one row per captioned photo that was paid for
# (vision_sample, the captioner comparison's calls, is paid but captions no item: not counted here)
TEXT_FIELDS = ("caption", "title", "summary", "tags")
SUMMARY_FIELDS = ("title", "summary", "tags")  # written by the summarizer; caption and attributes by the captioner
# SEO and accessibility fields (issue 19), editable in Review: written by the summary model (SEO_FIELDS_BY=model) or by
# the offline template (SEO_FIELDS_BY=template, and always with the offline summarizer), grouped as TEMPLATE then.
SEO_FIELDS = ("seo_title", "meta_description", "alt_text")
TEMPLATE = "template"
LANGUAGE_PREFIX = "summary:"  # an extra-language summary, "summary:de" (written by the summary model)
FIELD_ORDER = (*TEXT_FIELDS, *SEO_FIELDS)  # then summary:<code> right after summary, then attribute:<name>
UNCLASSIFIED = "unclassified"
NO_CATEGORY = "(no category)"
NO_MODEL = "(unknown model)"

PERIODS: dict[str, timedelta] = {
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 90 days": timedelta(days=90),
}

Outcome = Literal["accepted", "edited", "rejected", "awaiting"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def period_bounds(choice: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(since, until) for one of PERIODS, ending now."""
    until = now or utc_now()
    return until - PERIODS[choice], until


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _inside(text: str | None, since: datetime, until: datetime) -> bool:
    moment = _when(text)
    return moment is not None and since <= moment < until


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (0 < p <= 100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def items_processed(store: Store, since: datetime, until: datetime) -> list[ItemRecord]:
    """Items whose outcome (result or error) was recorded in [since, until), oldest first.
    Batches with nothing done, or created after `until`, are not read."""
    found: list[ItemRecord] = []
    for batch in store.list_batches():
        created = _when(batch.created_at)
        if batch.done == 0 or (created is not None and created >= until):
            continue
        found.extend(i for i in store.list_items(batch.id) if i.status in ("ok", "error") and _inside(i.processed_at, since, until))
    return sorted(found, key=lambda i: (_when(i.processed_at), i.id))


def stage_timings(item: ItemRecord) -> dict[str, float]:
    return dict(item.stage_ms or {})


def error_kind(item: ItemRecord) -> str:
    return item.error_kind or UNCLASSIFIED


# Health ---------------------------------------------------------------------------------------
@dataclass
class ThroughputPoint:
    start: datetime  # the hour or day this point counts
    ok: int
    failed: int


@dataclass
class StageLatency:
    stage: str
    count: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass
class FailureReason:
    error_kind: str
    count: int
    example: str  # the newest such item's message
    example_item_id: int


@dataclass
class CacheStats:
    captioned: int  # items that got a caption in the period (from the cache or a paid call)
    paid_calls: int  # caption calls in the usage ledger in the period
    hits: int

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.captioned if self.captioned else None


@dataclass
class EndpointEvent:
    at: datetime
    who: str
    action: str  # start | stop | autostop
    result: str  # started | stopped | already running | already stopped | refused | error | kept running
    state: str  # running | stopped | unknown: what the endpoint was after this entry
    detail: str


@dataclass
class EndpointHistory:
    state_at_start: str  # running | stopped | unknown, from the last entry before the period
    events: list[EndpointEvent]
    running_hours: float  # inside the period, as the audit log has it

    def timeline(self, since: datetime, until: datetime) -> list[tuple[datetime, str]]:
        """(moment, state) steps from `since` to `until` for a step chart."""
        points = [(since, self.state_at_start)] + [(e.at, e.state) for e in self.events]
        return points + [(until, points[-1][1])]


@dataclass
class Health:
    since: datetime
    until: datetime
    bucket: Literal["hour", "day"]
    ok: int
    failed: int
    throughput: list[ThroughputPoint]
    stages: list[StageLatency]
    failures: list[FailureReason]
    cache: CacheStats
    endpoint: EndpointHistory
    items_with_timings: int

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def hours(self) -> float:
        return max((self.until - self.since).total_seconds() / 3600, 1e-9)

    @property
    def per_hour(self) -> float:
        return self.processed / self.hours

    @property
    def per_day(self) -> float:
        return self.per_hour * 24

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.processed if self.processed else None


def _bucket_start(moment: datetime, bucket: str) -> datetime:
    moment = moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def throughput(items: list[ItemRecord], since: datetime, until: datetime, bucket: Literal["hour", "day"]) -> list[ThroughputPoint]:
    """One point per hour or day of the period (empty ones included, so a chart shows the gaps)."""
    step = timedelta(days=1) if bucket == "day" else timedelta(hours=1)
    points: dict[datetime, ThroughputPoint] = {}
    cursor = _bucket_start(since, bucket)
    while cursor < until:
        points[cursor] = ThroughputPoint(cursor, 0, 0)
        cursor += step
    for item in items:
        start = _bucket_start(_when(item.processed_at) or since, bucket)
        point = points.setdefault(start, ThroughputPoint(start, 0, 0))
        if item.status == "ok":
            point.ok += 1
        else:
            point.failed += 1
    return [points[k] for k in sorted(points)]


def stage_latencies(items: list[ItemRecord]) -> list[StageLatency]:
    """p50 / p95 per stage over the items that recorded it (known stages first, then any others)."""
    values: dict[str, list[float]] = defaultdict(list)
    for item in items:
        for stage, ms in stage_timings(item).items():
            values[stage].append(float(ms))
    order = [s for s in STAGES if s in values] + sorted(s for s in values if s not in STAGES)
    return [StageLatency(s, len(values[s]), percentile(values[s], 50), percentile(values[s], 95)) for s in order]


def failure_reasons(items: list[ItemRecord]) -> list[FailureReason]:
    """Failed items by error kind, most frequent first (ties by name), each with its newest message."""
    counts: Counter[str] = Counter()
    newest: dict[str, ItemRecord] = {}
    for item in items:  # oldest first: the last one seen is the newest
        if item.status != "error":
            continue
        kind = error_kind(item)
        counts[kind] += 1
        newest[kind] = item
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return [FailureReason(kind, n, newest[kind].error or "", newest[kind].id) for kind, n in ranked]


def cache_stats(store: Store, items: list[ItemRecord], since: datetime, until: datetime) -> CacheStats:
    captioned = sum(1 for i in items if i.status == "ok" or "caption" in stage_timings(i))
    paid = sum(u.invocations for at, u in store.usage_rows(since.isoformat(timespec="seconds"))
               if u.kind in CAPTION_USAGE_KINDS and _inside(at, since, until))
    return CacheStats(captioned=captioned, paid_calls=paid, hits=max(0, captioned - paid))


_STATE_AFTER = {"started": "running", "already running": "running", "kept running": "running",
                "stopped": "stopped", "already stopped": "stopped"}


def endpoint_history(audit: Iterable[AuditEntry], since: datetime, until: datetime) -> EndpointHistory:
    """Start / stop / auto-stop entries in the period, each with the state it left the endpoint in
    (a refused or failed action leaves it as it was); the state at the start comes from the entries before.
    `audit` newest first, as Store.audit_log returns it (entries stamped in the same second keep that order)."""
    state, state_at_start, events = "unknown", None, []
    for entry in sorted(reversed(list(audit)), key=lambda e: (_when(e.at) or since)):
        at = _when(entry.at)
        if at is None or at >= until:
            continue
        if at >= since and state_at_start is None:
            state_at_start = state
        state = _STATE_AFTER.get(entry.result, state)
        if at >= since:
            events.append(EndpointEvent(at, entry.who, entry.action, entry.result, state, entry.detail))
    history = EndpointHistory(state_at_start if state_at_start is not None else state, events, 0.0)
    steps = history.timeline(since, until)
    history.running_hours = sum((end - start).total_seconds() / 3600
                                for (start, state_then), (end, _) in zip(steps, steps[1:]) if state_then == "running")
    return history


def health(store: Store, since: datetime, until: datetime, *, bucket: Literal["hour", "day"] | None = None,
           audit_limit: int = 10_000) -> Health:
    """Everything the Health page shows for [since, until). Hourly points up to two days, daily beyond."""
    bucket = bucket or ("hour" if until - since <= timedelta(days=2) else "day")
    items = items_processed(store, since, until)
    ok = sum(1 for i in items if i.status == "ok")
    return Health(
        since=since, until=until, bucket=bucket, ok=ok, failed=len(items) - ok,
        throughput=throughput(items, since, until, bucket), stages=stage_latencies(items),
        failures=failure_reasons(items), cache=cache_stats(store, items, since, until),
        endpoint=endpoint_history(store.audit_log(limit=audit_limit), since, until),
        items_with_timings=sum(1 for i in items if stage_timings(i)),
    )


# Quality --------------------------------------------------------------------------------------
@dataclass
class FieldQuality:
    field: str  # caption | title | summary | tags | attribute:<name>
    group: str  # "all", a model id, or a category
    accepted: int = 0  # approved with the model's value kept
    edited: int = 0  # a person changed it (kept even if the item is still pending)
    rejected: int = 0  # the item was rejected
    awaiting: int = 0  # nobody has reviewed it yet: not part of the shares

    @property
    def reviewed(self) -> int:
        return self.accepted + self.edited + self.rejected

    def share(self, outcome: Outcome) -> float | None:
        return getattr(self, outcome) / self.reviewed if self.reviewed else None


@dataclass
class CommonEdit:
    field: str
    old: str
    new: str
    count: int


@dataclass
class Quality:
    since: datetime
    until: datetime
    items: int  # tagged items processed in the period
    by_field: list[FieldQuality]
    by_model: list[FieldQuality]  # caption fields by caption model (as recorded, revision included), summary fields by summary model
    by_category: list[FieldQuality]
    common_edits: list[CommonEdit]


def fields_of(item: ItemRecord, edited: Iterable[str] = ()) -> list[str]:
    """Every field of the item a person can edit in Review: caption, title, summary, each extra-language summary
    (`summary:<code>`), tags, the SEO fields and each attribute. `edited`: the item's fields with edits. An SEO field
    or a language summary counts where something was written (items tagged before they existed have none) or edited."""
    edited = set(edited)
    languages = sorted(set(item.summaries) | {f[len(LANGUAGE_PREFIX):] for f in edited if f.startswith(LANGUAGE_PREFIX)})
    seo = [name for name in SEO_FIELDS if getattr(item, name, "") or name in edited]
    return (["caption", "title", "summary", *(LANGUAGE_PREFIX + code for code in languages), "tags", *seo]
            + [f"attribute:{a.name}" for a in item.attributes])


def model_of(item: ItemRecord, field_name: str, seo_fields_by: str = TEMPLATE) -> str:
    """Who wrote the field: caption and attributes the captioning model (as recorded, revision included), except an
    attribute the summarizer guessed (AttributeValue.source: its model, edited or not); title,
    summary, language summaries and tags the summary model; SEO fields the summary model with SEO_FIELDS_BY=model,
    else the offline template (items do not record who wrote them: `seo_fields_by` is the setting the page runs with;
    the offline summarizer always uses its template)."""
    if field_name in SEO_FIELDS:
        if seo_fields_by == TEMPLATE or item.summary_offline:
            return TEMPLATE
        return item.summary_model or NO_MODEL
    if field_name.startswith("attribute:"):  # the summarizer's answer kept for a required attribute: its model's
        attribute = item.attribute(field_name.split(":", 1)[1])
        if attribute is not None and attribute.source.startswith(SUMMARIZER_SOURCE):
            return attribute.source[len(SUMMARIZER_SOURCE):] or item.summary_model or NO_MODEL
    summarizer = field_name in SUMMARY_FIELDS or field_name.startswith(LANGUAGE_PREFIX)
    model = item.summary_model if summarizer else item.caption_model
    return model or NO_MODEL


def category_of(item: ItemRecord) -> str:
    """The CSV's category hint, else the item's category attribute (as reviewed), else NO_CATEGORY."""
    hint = next((v for k, v in item.hints.items() if k.lower() == "category" and v and v.strip()), None)
    if hint:
        return hint.strip()
    attribute = item.attribute("category")
    return attribute.value if attribute is not None and attribute.value else NO_CATEGORY


def field_outcome(item: ItemRecord, edits: list[Edit]) -> Outcome:
    """How a person treated one field of one item. `edits`: that field's edits, oldest first.
    Edited means the value now differs from what the model wrote (changed and changed back is not)."""
    if item.review_status == "rejected":
        return "rejected"
    if edits and (edits[0].old or "") != (edits[-1].new or ""):
        return "edited"
    return "accepted" if item.review_status == "approved" else "awaiting"


def _sort_key(row: FieldQuality) -> tuple:
    field_name = row.field
    if field_name.startswith(LANGUAGE_PREFIX):
        rank: float = FIELD_ORDER.index("summary") + 0.5
    else:
        rank = FIELD_ORDER.index(field_name) if field_name in FIELD_ORDER else len(FIELD_ORDER)
    return (rank, field_name, row.group)


def quality(store: Store, since: datetime, until: datetime, *, top_edits: int = 20, seo_fields_by: str = TEMPLATE) -> Quality:
    """Everything the Quality page shows: items tagged in [since, until) and what people did with
    them (all their edits from `since` on); the most common edits made in the period. `seo_fields_by`: the
    SEO_FIELDS_BY setting, who wrote the SEO fields (see `model_of`)."""
    items = [i for i in items_processed(store, since, until) if i.status == "ok"]
    edits = store.edits_since(since.isoformat(timespec="seconds"))
    per_item: dict[tuple[int, str], list[Edit]] = defaultdict(list)
    for edit in edits:
        per_item[(edit.item_id, edit.field)].append(edit)
    tables: dict[str, dict[tuple[str, str], FieldQuality]] = {"all": {}, "model": {}, "category": {}}
    edited_fields: dict[int, set[str]] = defaultdict(set)
    for item_id, field_name in per_item:
        edited_fields[item_id].add(field_name)
    for item in items:
        for field_name in fields_of(item, edited_fields.get(item.id, ())):
            outcome = field_outcome(item, per_item.get((item.id, field_name), []))
            for table, group in (("all", "all"), ("model", model_of(item, field_name, seo_fields_by)), ("category", category_of(item))):
                row = tables[table].setdefault((field_name, group), FieldQuality(field_name, group))
                setattr(row, outcome, getattr(row, outcome) + 1)
    pairs = Counter((e.field, e.old or "", e.new or "") for e in edits if e.field != "review_status" and _inside(e.at, since, until))
    common = [CommonEdit(f, old, new, n) for (f, old, new), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_edits]]
    ordered = {name: sorted(rows.values(), key=_sort_key) for name, rows in tables.items()}
    return Quality(since=since, until=until, items=len(items), by_field=ordered["all"], by_model=ordered["model"],
                   by_category=ordered["category"], common_edits=common)
