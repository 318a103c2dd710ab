"""Plain data passed between the pipeline's stages. No behaviour beyond small derived views."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SourceKind = Literal["file", "zip", "url", "s3"]
ItemStatus = Literal["pending", "running", "ok", "error"]
ReviewStatus = Literal["pending", "approved", "rejected"]


@dataclass(frozen=True)
class SourceRef:
    """Where an image's bytes can be read again later (so a batch can resume in another process)."""

    kind: SourceKind
    location: str  # file path, zip path, http(s) URL or s3:// URI
    member: str | None = None  # member name when kind == "zip"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SourceRef":
        return cls(kind=data["kind"], location=data["location"], member=data.get("member"))


@dataclass
class SourceItem:
    """One product to tag, as found by ingest. `error` set means it fails without processing."""

    source: str
    ref: SourceRef | None
    sku: str | None = None
    hints: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class IngestReport:
    items: list[SourceItem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # skipped files, duplicate SKUs: shown, not fatal


@dataclass
class PhotoChecks:
    width: int
    height: int
    too_small: bool
    blur_score: float  # variance of the Laplacian; low means blurry
    blurry: bool
    brightness: float  # mean luma 0..255
    too_dark: bool
    too_bright: bool
    plain_background: bool
    white_background: bool
    dominant_colors: list[str]

    def warnings(self) -> list[str]:
        notes = []
        if self.too_small:
            notes.append(f"small photo ({self.width}x{self.height})")
        if self.blurry:
            notes.append("looks blurry")
        if self.too_dark:
            notes.append("too dark")
        if self.too_bright:
            notes.append("overexposed")
        if not self.plain_background:
            notes.append("busy background")
        return notes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PhotoChecks":
        return cls(**data)


@dataclass
class NormalizedImage:
    jpeg: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    original_bytes: int
    content_key: str  # sha256 of `jpeg`
    checks: PhotoChecks
    checks_ms: float = 0.0  # time spent computing `checks` (reported as its own stage)
    phash: str | None = None  # 64-bit perceptual hash, 16 hex digits (pipeline/images/perceptual.py; issue 19)


SUMMARIZER_SOURCE = "summarizer:"  # AttributeValue.source prefix of a value the summarizer guessed


@dataclass
class AttributeValue:
    name: str
    raw: str  # what the model answered
    value: str  # mapped onto the vocabulary when possible, else the raw answer
    in_vocab: bool  # False means: kept, but flagged for review
    # Who answered `value`: "captioner" (also every row stored before this field existed), or "summarizer:<model>" when
    # the captioner left an attribute the item's category requires empty or outside the allowed values and the
    # summarizer's structured output answered an allowed one (pipeline/attributes.py keep_required_guesses). Such a
    # guess is stored with in_vocab=False (flagged for review); `raw` stays the captioner's answer.
    source: str = "captioner"

    @property
    def guessed_by(self) -> str | None:
        """The summary model that guessed this value, None when the captioner answered it."""
        if not self.source.startswith(SUMMARIZER_SOURCE):
            return None
        return self.source[len(SUMMARIZER_SOURCE):] or "the summarizer"


@dataclass
class CaptionResult:
    caption: str
    answers: dict[str, str]  # attribute name -> raw answer
    model_id: str
    latency_ms: float = 0.0
    cached: bool = False


@dataclass
class Usage:
    """One billable call: an LLM request or an endpoint invocation."""

    # transform: one image captioned by a batch transform job; transform_job: the job's billed
    # instance time, carried in latency_ms (instance-milliseconds) with invocations = 0.
    # llm_batch: one summary answered through OpenAI's Batch API (billed at half the token price).
    # vision: one photo captioned by the OpenAI vision captioner (CAPTIONER=openai-vision), billed by tokens;
    # vision_sample: the same call made by the captioner comparison on a sample (paid, but no item captioned).
    kind: Literal["llm", "endpoint", "local", "transform", "transform_job", "llm_batch", "vision", "vision_sample"]
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    invocations: int = 1
    latency_ms: float = 0.0


@dataclass
class SummaryRequest:
    caption: str
    attributes: list[AttributeValue]
    checks: PhotoChecks | None
    hints: dict[str, str]
    sku: str | None = None
    style: "StyleGuide | None" = None  # the admin's brand voice, sent in the shared system prompt (pipeline/admin/brand.py)
    languages: tuple[str, ...] = ()  # extra summary languages (ISO 639-1) besides English, one summary each


@dataclass
class SummaryResult:
    summary: str
    title: str
    tags: list[str]
    attributes: dict[str, str | None]  # the summarizer's view of the attributes (vocabulary values)
    model: str
    offline: bool
    usage: list[Usage] = field(default_factory=list)
    summaries: dict[str, str] = field(default_factory=dict)  # extra language -> summary (English is `summary`)
    # SEO and accessibility (issue 19; limits in pipeline/wordlimit.py SEO_LIMITS): "" when not written
    seo_title: str = ""
    meta_description: str = ""
    alt_text: str = ""


@dataclass
class ItemRecord:
    """An item as the store keeps it. Result fields are None until processed."""

    id: int
    batch_id: int
    seq: int
    source: str
    ref: SourceRef | None
    sku: str | None
    hints: dict[str, str]
    status: ItemStatus = "pending"
    error: str | None = None
    content_key: str | None = None
    image_path: str | None = None
    caption: str | None = None
    attributes: list[AttributeValue] = field(default_factory=list)
    title: str | None = None
    tags: list[str] = field(default_factory=list)
    summary: str | None = None
    word_count: int | None = None
    checks: PhotoChecks | None = None
    caption_model: str | None = None
    summary_model: str | None = None
    summary_offline: bool = False
    review_status: ReviewStatus = "pending"
    created_at: str | None = None
    processed_at: str | None = None
    updated_at: str | None = None
    version: int = 0  # +1 on every result, error or edit: a Review save sends the version it showed
    updated_by: str | None = None  # who made the newest change (a person, or "processing")
    lease_owner: str | None = None  # the runner (host/pid/uuid) processing it right now, while lease_until lasts
    lease_until: float | None = None  # epoch seconds
    stage_ms: dict[str, float] = field(default_factory=dict)  # stage -> ms of its last processing (fetch … summarize; save: the run's previous save)
    error_kind: str | None = None  # short stable code of why it failed (fetch_timeout, bad_image, summary_quota, …)
    taxonomy_version: int = 0  # the attribute taxonomy version it was tagged with (0: the shipped default schema)
    summaries: dict[str, str] = field(default_factory=dict)  # extra language -> summary (issue 19); English is `summary`
    # near-duplicate photos (issue 19, pipeline/images/perceptual.py): the photo's perceptual hash, the earlier item it
    # looks like ("batch 3 item 12, 4 bits apart"), and where its caption was copied from when it was reused
    phash: str | None = None
    near_duplicate: str | None = None
    reused_from: str | None = None
    # SEO and accessibility (issue 19): "" for items written before they were kept
    seo_title: str = ""
    meta_description: str = ""
    alt_text: str = ""

    def attribute(self, name: str) -> AttributeValue | None:
        return next((a for a in self.attributes if a.name == name), None)


@dataclass
class ItemResult:
    """What processing one item produced; the store writes it in one transaction."""

    content_key: str
    image_path: str
    caption: CaptionResult
    attributes: list[AttributeValue]
    summary: SummaryResult
    checks: PhotoChecks
    word_count: int
    taxonomy_version: int = 0  # the active attribute taxonomy when it was tagged (pipeline/admin/taxonomy.py)
    phash: str | None = None  # near-duplicates (issue 19): see ItemRecord
    near_duplicate: str | None = None
    reused_from: str | None = None


@dataclass
class BatchRecord:
    id: int
    name: str
    created_at: str
    created_by: str
    notices: list[str]
    total: int = 0
    done: int = 0  # ok + error
    failed: int = 0
    run: "BatchRun | None" = None  # who runs it, as the store has it (its lease may have ended: see BatchRun.live)


@dataclass
class BatchRun:
    """Which runner holds a batch (an expiring lease renewed by heartbeat) and any stop request on it."""

    owner: str | None = None  # host/pid/uuid of the runner; None: nobody has claimed it
    host: str | None = None
    started_at: float | None = None  # epoch seconds
    heartbeat_at: float | None = None
    lease_until: float | None = None
    stop_requested_by: str | None = None
    stop_requested_at: float | None = None

    def live(self, now: float) -> bool:
        return bool(self.owner) and self.lease_until is not None and self.lease_until >= now

    @property
    def since_text(self) -> str:
        return _utc_text(self.started_at)

    @property
    def heartbeat_text(self) -> str:
        return _utc_text(self.heartbeat_at)


def _utc_text(epoch: float | None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else "?"


@dataclass
class Edit:
    item_id: int
    field: str
    old: str | None
    new: str | None
    who: str
    at: str
    version: int | None = None  # the item's version after this edit


@dataclass
class AuditEntry:
    """One admin action (endpoint start / stop / auto-stop) and how it went."""

    at: str
    who: str
    action: str
    result: str
    detail: str = ""


@dataclass
class AsyncInvocation:
    """An async endpoint request already paid for: kept until its result is collected, so a
    restarted process waits for it instead of invoking (and paying) again."""

    content_key: str
    model_id: str
    inference_id: str
    output_location: str
    failure_location: str
    invoked_at: str  # ISO-8601 UTC


@dataclass
class TransformJobRecord:
    """A SageMaker batch transform job run for (part of) a batch. Its manifest (which input object
    belongs to which item) lives in S3 beside the inputs; the store keeps what pages show."""

    batch_id: int
    job_name: str
    status: str  # Preparing | InProgress | Completed | Failed | Stopped | Ingested
    s3_prefix: str  # s3://bucket/prefix/<job_name>/ holding manifest.json, input/, output/
    total: int = 0  # inputs sent to the job (distinct photos)
    done: int = 0  # outputs seen so far
    failure_reason: str = ""
    created_at: str = ""
    updated_at: str = ""

    @property
    def active(self) -> bool:
        return self.status not in ("Ingested",)


@dataclass
class OpenAIBatchRecord:
    """An OpenAI Batch API job submitted for a batch's summaries (pipeline.summarizers.openai_batch): kept
    until its answers are saved, so a resumed or restarted run waits for it instead of submitting (and
    paying for) the same summaries again."""

    batch_id: int
    openai_batch_id: str
    input_file_id: str
    submitted_at: float  # epoch seconds; OPENAI_BATCH_DEADLINE_S counts from here, across restarts
    requests: int = 0  # lines in the input file (one per item)
    status: str = "in_progress"  # the last status seen


@dataclass
class StyleGuide:
    """The admin-edited brand voice sent with every summary request (pipeline/admin/brand.py checks its sizes).
    `version` +1 on every save: a save sends the version it showed, as Review saves do."""

    tone: str = ""
    avoid: list[str] = field(default_factory=list)  # words/phrases an answer must not contain
    prefer: list[str] = field(default_factory=list)  # words/phrases to use where they fit
    version: int = 0  # 0: never saved
    updated_by: str | None = None
    updated_at: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.tone.strip() or self.avoid or self.prefer)


@dataclass
class TaxonomyVersion:
    """One saved version of the attribute taxonomy (pipeline/admin/taxonomy.py): immutable once saved;
    `document` is the JSON text (attributes, allowed values, synonyms, required). Version 0 is the shipped
    default (pipeline/attribute_schema.json), never stored."""

    version: int
    document: str
    created_by: str
    created_at: str
    active: bool = False
    activated_by: str | None = None
    activated_at: str | None = None
