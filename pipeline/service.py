"""Assembling the pipeline from Settings: the one place that decides which adapters run."""

from __future__ import annotations

from pathlib import Path

from pipeline.attributes import load_attribute_schema
from pipeline.captioners import Captioner, make_captioner
from pipeline.images.decode_budget import configure_default_budget, configure_raw_budget
from pipeline.ingest.fetch import FetchLimits
from pipeline.ingest.sources import IngestLimits, collect_sources, stage_sources
from pipeline.models import BatchRecord
from pipeline.batches.runner import LeaseOptions, NearDuplicateOptions, NormalizeOptions, Stages
from pipeline.settings import Settings
from pipeline.store import ImageStore, LocalImageStore, Store
from pipeline.store.sqlite_store import SqliteStore
from pipeline.summarizers import Summarizer, make_batch_summarizer, make_summarizer


def fetch_limits(settings: Settings) -> FetchLimits:
    return FetchLimits(
        max_bytes=settings.max_file_bytes,
        timeout_s=settings.url_timeout_s,
        allow_private=settings.allow_private_urls,
        s3_allowed_buckets=tuple(settings.s3_allowed_buckets),
        zip_max_ratio=settings.zip_max_ratio,
        deadline_s=settings.fetch_deadline_s,
    )


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_images=settings.max_images_per_batch,
        max_file_bytes=settings.max_file_bytes,
        zip_max_total_bytes=settings.zip_max_total_bytes,
        zip_max_ratio=settings.zip_max_ratio,
    )


def open_store(settings: Settings) -> Store:
    if settings.store == "dynamodb":
        from pipeline.store.dynamo_store import DynamoStore

        return DynamoStore.from_settings(settings)
    return SqliteStore(settings.db_path)


def open_image_store(settings: Settings) -> ImageStore:
    if settings.image_bucket:
        from pipeline.store.s3_images import S3ImageStore

        return S3ImageStore.from_settings(settings)
    return LocalImageStore(settings.image_dir)


def build_stages(
    settings: Settings,
    *,
    store: Store | None = None,
    captioner: Captioner | None = None,
    summarizer: Summarizer | None = None,
) -> Stages:
    schema = load_attribute_schema(settings.attribute_schema)
    store = store or open_store(settings)
    configure_default_budget(settings.decode_budget_mb)  # one budget of pixels in flight for the process
    configure_raw_budget(settings.raw_bytes_budget_mb)  # and one of raw image bytes, taken before it
    summarizer = summarizer or make_summarizer(settings, schema)
    return Stages(
        store=store,
        images=open_image_store(settings),
        captioner=captioner or make_captioner(settings, store),
        summarizer=summarizer,
        schema=schema,
        fetch_limits=fetch_limits(settings),
        normalize=NormalizeOptions(max_side=settings.max_side, max_pixels=settings.max_pixels, quality=settings.jpeg_quality),
        use_cache=settings.caption_cache,
        s3_client_factory=lambda: _s3_client(settings),
        leases=lease_options(settings),
        batch_summarizer=make_batch_summarizer(settings, summarizer, store),  # OpenAI Batch API (openai_batch.py)
        near_duplicates=NearDuplicateOptions(settings.near_duplicate_max_distance, settings.near_duplicate_catalogue_max),  # issue 19
    )


def lease_options(settings: Settings) -> LeaseOptions:
    """Per-item deadline over all stages; an async photo may legitimately wait for the endpoint's warm-up."""
    deadline = settings.item_deadline_s
    if settings.captioner == "sagemaker-async":
        deadline = max(deadline, settings.async_timeout_s + 60 * settings.endpoint_warmup_minutes + settings.openai_deadline_s)
    return LeaseOptions(lease_s=settings.lease_s, item_deadline_s=deadline, stop_grace_s=settings.stop_grace_s,
                        poll_s=min(1.0, settings.lease_s / 4))


def build_transform_runner(settings: Settings, stages: Stages):
    """Batch jobs need a SageMaker model and a transform location; the local captioner has neither."""
    if settings.captioner in ("local", "openai-vision") or not settings.sagemaker_transform_s3:
        return None
    from pipeline.batches.batch_transform import BatchTransformRunner

    return BatchTransformRunner.from_settings(settings, stages)


def create_batch(store: Store, settings: Settings, paths: list[Path], *, name: str, created_by: str) -> BatchRecord:
    """Ingest `paths` and record every item (good or bad) before anything is processed; items that would
    certainly fail (unreadable photo header, private URL) are recorded as rejected, as on the Tag page."""
    report = stage_sources(collect_sources([Path(p) for p in paths], ingest_limits(settings)), allow_private_urls=settings.allow_private_urls)
    return store.create_batch(name, created_by, report)


def _s3_client(settings: Settings):
    import boto3

    return boto3.client("s3", region_name=settings.aws_region)
