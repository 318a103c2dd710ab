"""Admin comparison of two captioners on a sample of one batch's photos (issue 19): the configured one
(BLIP-2 / BLIP: local, SageMaker endpoint) and the vision LLM (pipeline/captioners/openai_vision.py).

UI-free: the CLI (`python -m pipeline compare-captioners BATCH_ID --sample N`) and the Admin page
`dashboard/pages/compare.py` call `compare_captioners` and draw what it returns.

What it does, per photo of the sample (at most MAX_SAMPLE, one call at a time so latencies are not
queueing time): reads the item's photo from its source and normalizes it as the runner does, then asks
each captioner for the caption and the attribute answers. Nothing about the items changes: no result,
caption, cache entry or edit is written. The vision model's calls are paid, so each leaves its usage row
in the ledger under its item, as kind `vision_sample` (month-to-date costs count them; the Health page
does not, since no item was captioned); the local / endpoint calls write none (the Health page counts
those rows as paid captions of real runs).

What it reports, per captioner:
- cost per photo: priced from the calls' usage rows with prices.json — OpenAI tokens at the model's
  input/output price; a SageMaker endpoint is paid by the instance-hour, so its figure is the instance
  time the photo took (latency x hourly price: a lower bound, idle hours not counted); the local
  captioner runs on this server's CPU, with no per-photo charge (0);
- latency p50 / p95 (nearest rank, as the Health page) of the calls that answered;
- acceptance rate from the quality analytics (pipeline/admin/analytics.py, last ACCEPTANCE_DAYS days):
  the share of reviewed items whose caption (and attributes) the reviewer kept unchanged, among items
  captioned by that model. A model whose captions nobody has reviewed yet — the vision model until it
  has captioned real batches (CAPTIONER=openai-vision) and people reviewed them — has no acceptance
  rate, and the report says so instead of showing one. The sample's captions are not reviewed: they are
  shown side by side with the stored caption for a person to judge.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline.admin import analytics
from pipeline.admin.costs import PriceTable, token_price_model
from pipeline.errors import ConfigError, UserFacingError, describe_error, usage_of
from pipeline.models import CaptionResult, ItemRecord, Usage

MAX_SAMPLE = 50
ACCEPTANCE_DAYS = 90


@dataclass
class CaptionerRun:
    """One captioner in the comparison: a label for people and the adapter."""

    label: str
    captioner: Any  # pipeline.captioners.Captioner

    @property
    def model_id(self) -> str:
        return str(getattr(self.captioner, "model_id", self.label))


@dataclass
class SampleRow:
    """One photo of the sample: what the item holds now and what each captioner said (or why not)."""

    item_id: int
    seq: int
    source: str
    stored_caption: str | None
    captions: dict[str, str | None] = field(default_factory=dict)  # captioner label -> caption (None: failed)
    answers: dict[str, dict[str, str]] = field(default_factory=dict)  # captioner label -> raw attribute answers
    errors: dict[str, str] = field(default_factory=dict)  # captioner label -> one sentence
    latency_ms: dict[str, float] = field(default_factory=dict)
    usage: dict[str, list[Usage]] = field(default_factory=dict)


@dataclass
class CaptionerReport:
    label: str
    model_id: str
    photos: int  # asked
    answered: int
    failed: int
    cost_per_photo_usd: float | None  # None: no price for what it used
    cost_basis: str  # how the cost figure was made, in one sentence
    total_usd: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    caption_accepted: float | None  # share of reviewed captions kept unchanged; None: none reviewed
    attributes_accepted: float | None
    reviewed: int  # reviewed items captioned by this model (acceptance period)
    acceptance_note: str  # where the acceptance figure comes from, or why there is none


@dataclass
class Comparison:
    batch_id: int
    batch_name: str
    rows: list[SampleRow]
    reports: list[CaptionerReport]
    notes: list[str]


def sample_items(items: list[ItemRecord], size: int, seed: int) -> list[ItemRecord]:
    """Up to `size` items that have a photo to read, drawn at random with a fixed seed (the same sample
    every time for the same batch), in batch order. Tagged items first: they are the ones with a stored
    caption to compare against."""
    usable = [i for i in items if i.ref is not None]
    tagged = [i for i in usable if i.status == "ok"]
    pool = tagged if len(tagged) >= size else tagged + [i for i in usable if i.status != "ok"]
    chosen = random.Random(seed).sample(pool, min(size, len(pool)))
    return sorted(chosen, key=lambda i: i.seq)


def compare_captioners(stages, batch_id: int, sample: int, captioners: list[CaptionerRun], prices: PriceTable, *,
                       instance_type: str = "ml.g4dn.xlarge", now=None) -> Comparison:
    """Both captioners on the same `sample` photos of batch `batch_id` (see the module docstring).
    `stages`: the runner's Stages (store, image reading limits, normalize options, attribute schema)."""
    from pipeline.batches.runner import read_and_normalize

    if not 1 <= sample <= MAX_SAMPLE:
        raise UserFacingError(f"The sample must be 1 to {MAX_SAMPLE} photos (it was {sample}).")
    store = stages.store
    batch = store.get_batch(batch_id)
    if batch is None:
        raise UserFacingError(f"There is no batch {batch_id}.")
    chosen = sample_items(store.list_items(batch_id), sample, seed=batch_id)
    if not chosen:
        raise UserFacingError(f"Batch {batch_id} has no photos to compare (every item failed before its photo was read).")
    notes: list[str] = []
    if len(chosen) < sample:
        notes.append(f"The batch has {len(chosen)} photo(s) to compare; all of them were used.")
    rows: list[SampleRow] = []
    for item in chosen:
        row = SampleRow(item_id=item.id, seq=item.seq, source=item.source,
                        stored_caption=item.caption if item.status == "ok" else None)
        rows.append(row)
        try:
            if item.ref.kind in ("file", "zip"):
                stages.images.ensure_upload(Path(item.ref.location))  # another task's upload: fetched as the runner does
            image = read_and_normalize(stages, item.ref)
        except Exception as error:  # this photo cannot be read now: its row says why, the sample goes on
            for run in captioners:
                row.captions[run.label] = None
                row.errors[run.label] = f"The photo could not be read: {describe_error(error)}"
            continue
        for run in captioners:
            _ask(run, image, stages.schema.attributes, row, store)
    since = (now or analytics.utc_now()) - timedelta(days=ACCEPTANCE_DAYS)
    quality = analytics.quality(store, since, now or analytics.utc_now())
    reports = [_report(run, rows, prices, quality, instance_type) for run in captioners]
    return Comparison(batch_id=batch.id, batch_name=batch.name, rows=rows, reports=reports, notes=notes)


def _ask(run: CaptionerRun, image, questions, row: SampleRow, store) -> None:
    try:
        result, call = run.captioner.caption(image, questions)
    except ConfigError:
        raise  # a missing key or unknown model fails every photo alike: one sentence for the whole comparison
    except Exception as error:
        paid = usage_of(error)
        row.captions[run.label] = None
        row.errors[run.label] = describe_error(error)
        row.usage[run.label] = paid
        _record_paid(store, row.item_id, paid)
        return
    assert isinstance(result, CaptionResult)
    row.captions[run.label] = result.caption
    row.answers[run.label] = dict(result.answers)
    row.latency_ms[run.label] = result.latency_ms or call.latency_ms
    row.usage[run.label] = [call]
    _record_paid(store, row.item_id, [call])


def _record_paid(store, item_id: int, usage: list[Usage]) -> None:
    """The sample's paid vision calls, as `vision_sample`: priced month to date, not paid captions of items on Health."""
    paid = [replace(u, kind="vision_sample") for u in usage if u.kind == "vision"]
    if paid:
        store.record_usage(item_id, paid)


def usage_usd(usage: Usage, prices: PriceTable, instance_type: str) -> float | None:
    """What one call cost, from its usage row (see the module docstring); None when no price applies."""
    if usage.kind in ("llm", "vision", "vision_sample"):
        model = token_price_model(usage.model, prices)
        if model is None:
            return None
        return (usage.input_tokens * prices.usd(f"openai_input_per_million:{model}")
                + usage.output_tokens * prices.usd(f"openai_output_per_million:{model}")) / 1e6
    if usage.kind == "endpoint":
        key = f"sagemaker_hosting_hour:{instance_type}"
        return usage.latency_ms / 3_600_000 * prices.usd(key) if key in prices.prices else None
    if usage.kind == "local":
        return 0.0
    return None


def _basis(kinds: set[str], instance_type: str) -> str:
    if kinds and kinds <= {"llm", "vision", "vision_sample"}:
        return "OpenAI tokens billed (input incl. the photo, output) at prices.json's per-million price."
    if kinds == {"endpoint"}:
        return (f"Endpoint instance time the photo took at the {instance_type} hourly price (a lower bound: the "
                "endpoint's idle hours are not counted).")
    if kinds == {"local"}:
        return "Runs on this server's CPU: no per-photo charge."
    if not kinds:
        return "No call answered, so there is nothing to price."
    return "Mixed call kinds: " + ", ".join(sorted(kinds)) + "."


def _report(run: CaptionerRun, rows: list[SampleRow], prices: PriceTable, quality: analytics.Quality, instance_type: str) -> CaptionerReport:
    asked = [r for r in rows if run.label in r.captions]
    answered = [r for r in asked if r.captions.get(run.label) is not None]
    calls = [u for r in asked for u in r.usage.get(run.label, [])]
    costs = [usage_usd(u, prices, instance_type) for u in calls]
    photos_priced = len({id(r) for r in asked if r.usage.get(run.label)})
    total = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
    per_photo = None if total is None or not photos_priced else total / photos_priced
    basis = _basis({u.kind for u in calls}, instance_type)
    if total is None:
        basis = f"No price in prices.json for {', '.join(sorted({u.model for u in calls}))}; add it to PRICES_FILE."
    latencies = [r.latency_ms[run.label] for r in answered if run.label in r.latency_ms]
    caption_rows = [q for q in quality.by_model if q.group == run.model_id and q.field == "caption"]
    attribute_rows = [q for q in quality.by_model if q.group == run.model_id and q.field.startswith("attribute:")]
    reviewed = sum(q.reviewed for q in caption_rows)
    caption_share = sum(q.accepted for q in caption_rows) / reviewed if reviewed else None
    attribute_reviewed = sum(q.reviewed for q in attribute_rows)
    attribute_share = sum(q.accepted for q in attribute_rows) / attribute_reviewed if attribute_reviewed else None
    if reviewed:
        note = (f"From {reviewed} reviewed item(s) captioned by {run.model_id} in the last {ACCEPTANCE_DAYS} days "
                "(Quality page): kept unchanged when approved; edited or rejected counts against.")
    else:
        note = (f"No data: no item captioned by {run.model_id} has been reviewed in the last {ACCEPTANCE_DAYS} days, so there is "
                "no acceptance rate yet (it comes once batches are tagged with this captioner and reviewed). "
                "The sample's captions are not reviews; compare them by eye.")
    return CaptionerReport(
        label=run.label, model_id=run.model_id, photos=len(asked), answered=len(answered), failed=len(asked) - len(answered),
        cost_per_photo_usd=per_photo, cost_basis=basis, total_usd=total,
        latency_p50_ms=analytics.percentile(latencies, 50), latency_p95_ms=analytics.percentile(latencies, 95),
        caption_accepted=caption_share, attributes_accepted=attribute_share, reviewed=reviewed, acceptance_note=note)


def captioners_to_compare(settings, store, current=None) -> list[CaptionerRun]:
    """The configured captioner (BLIP-2 / BLIP) and the vision LLM (OPENAI_VISION_MODEL). With
    CAPTIONER=openai-vision, the other side is the local model (CAPTION_MODEL). `current`: the
    configured captioner already built (the dashboard's or the CLI's), so a local model is not
    loaded a second time."""
    from pipeline.captioners import make_captioner, photo_by_photo_problem
    from pipeline.captioners.local import LocalCaptioner
    from pipeline.captioners.openai_vision import OpenAIVisionCaptioner

    if settings.openai_api_key is None:
        raise ConfigError("The comparison needs OPENAI_API_KEY for the vision model (OPENAI_VISION_MODEL).")
    if (problem := photo_by_photo_problem(settings)) is not None:  # the sample is captioned photo by photo
        raise ConfigError(f"{problem}, so the comparison cannot caption its sample with BLIP-2.")
    vision = OpenAIVisionCaptioner.from_settings(settings)
    if settings.captioner == "openai-vision":
        first = CaptionerRun(f"local {settings.caption_model}", LocalCaptioner(settings.caption_model, max_new_tokens=settings.max_new_tokens))
    else:
        first = CaptionerRun(f"{settings.captioner} ({'BLIP-2 endpoint' if settings.captioner.startswith('sagemaker') else settings.caption_model})",
                             current if current is not None else make_captioner(settings, store))
    return [first, CaptionerRun(f"vision LLM {settings.openai_vision_model}", vision)]


def report_table(comparison: Comparison) -> list[dict[str, str]]:
    """The per-captioner figures as plain text cells (CLI and page)."""
    def money(value: float | None) -> str:
        return "no price" if value is None else f"${value:.6f}"

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f} ms"

    def share(value: float | None) -> str:
        return "no data" if value is None else f"{100 * value:.1f} %"

    return [{"Captioner": r.label, "Model id": r.model_id, "Photos": str(r.photos), "Failed": str(r.failed),
             "Cost per photo": money(r.cost_per_photo_usd), "Latency p50": ms(r.latency_p50_ms), "Latency p95": ms(r.latency_p95_ms),
             "Caption accepted": share(r.caption_accepted), "Attributes accepted": share(r.attributes_accepted),
             "Reviewed items": str(r.reviewed)} for r in comparison.reports]
