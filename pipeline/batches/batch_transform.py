"""Large batches through a SageMaker batch transform job on the same model as the endpoint.

    prepare   read + normalize every photo here (thumbnails, content keys, photo checks, the perceptual hash and
              the near-duplicate it looks like, as a run records them), finish
              photos whose caption is cached, and, when the batch reuses near-duplicates, photos that look like
              one already tagged (that item's caption, as a run reuses it); a look-alike of another photo of
              this job is left out of the job and takes that photo's output at ingest. Write one request JSON
              per distinct photo to
              <SAGEMAKER_TRANSFORM_S3>/<job>/input/<content key>.json and a manifest.json
              (item -> content key, stored photo, checks) beside them
    start     CreateTransformJob: one record per file, outputs <job>/output/<content key>.json.out
    follow    DescribeTransformJob every TRANSFORM_POLL_S, counting outputs for the progress bar
    ingest    each item's output -> summary -> store; an item without output fails with the job's
              reason, so "Retry failed" redoes only those. With OPENAI_BATCH_FOR_JOBS (and at least
              OPENAI_BATCH_MIN_ITEMS items) the captions are kept first, the job is marked
              "Summarizing", and the summaries come from one OpenAI Batch API job
              (pipeline/batches/batch_summaries.py); a restart then goes straight back to that wait

The job record (store) and the manifest (S3) are all a restarted dashboard needs to pick a running
job back up. Ingest skips items already saved, so running it twice bills nothing twice.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

from pipeline.captioners.contract import build_request, parse_response
from pipeline.admin.costs import Assumptions, JobEstimate, PriceTable, estimate_transform_job
from pipeline.admin.taxonomy import follow_active_taxonomy
from pipeline.errors import ConfigError, ServiceError, describe_error
from pipeline.ingest.fetch import parse_s3_prefix, read_s3_object_if_exists
from pipeline.models import CaptionResult, ItemRecord, PhotoChecks, TransformJobRecord, Usage
from pipeline.observability import ItemTrace, error_kind
from pipeline.observability.trace import SaveTimes
from pipeline.batches.runner import Stages, complete_item, near_duplicate_index, prepare_image, reused_caption, take_batch
from pipeline.images.perceptual import CatalogueEntry, HashIndex, Match
from pipeline.store import new_runner_id

TERMINAL = ("Completed", "Failed", "Stopped")


@dataclass(frozen=True)
class TransformOptions:
    s3_uri: str  # s3://bucket/prefix for all jobs
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    poll_s: float = 30.0
    max_new_tokens: int = 30
    concurrency: int = 4  # photos prepared / summaries written at once


class BatchTransformRunner:
    def __init__(self, stages: Stages, *, sagemaker: Any, s3: Any, options: TransformOptions,
                 model_name: Callable[[], str], sleep: Callable[[float], None] = time.sleep) -> None:
        self.stages, self.sagemaker, self.s3, self.options = stages, sagemaker, s3, options
        self.bucket, self.prefix = parse_s3_prefix(options.s3_uri)
        self.model_name, self.sleep = model_name, sleep

    @classmethod
    def from_settings(cls, settings, stages: Stages) -> "BatchTransformRunner":
        import boto3
        from botocore.config import Config

        from pipeline.admin.endpoint import EndpointController

        if not settings.sagemaker_transform_s3:
            raise ConfigError("Batch jobs need SAGEMAKER_TRANSFORM_S3 (s3://bucket/prefix for their inputs and outputs).")
        config = Config(region_name=settings.aws_region, retries={"max_attempts": 6, "mode": "adaptive"})
        sagemaker = boto3.client("sagemaker", config=config)

        def model_name() -> str:
            if settings.sagemaker_model_name:
                return settings.sagemaker_model_name
            controller = EndpointController(endpoint_name=settings.sagemaker_endpoint, mode=settings.sagemaker_mode,
                                            clients={"sagemaker": sagemaker}, store=stages.store, warmup_minutes=0)
            config = controller.saved_config()
            if config is None:
                raise ConfigError("No deployed model found for batch jobs; deploy the endpoint once or set SAGEMAKER_MODEL_NAME.")
            return config["ProductionVariants"][0]["ModelName"]

        options = TransformOptions(
            s3_uri=settings.sagemaker_transform_s3, instance_type=settings.transform_instance_type,
            instance_count=settings.transform_instance_count, poll_s=settings.transform_poll_s,
            max_new_tokens=settings.max_new_tokens, concurrency=settings.concurrency,
        )
        return cls(stages, sagemaker=sagemaker, s3=boto3.client("s3", config=config), options=options, model_name=model_name)

    # --- the whole run ---------------------------------------------------------------------------
    def run(self, batch_id: int, *, retry_failed: bool = False, cancel: threading.Event | None = None) -> TransformJobRecord | None:
        """Follow this batch's unfinished job if it has one, else prepare and start a new one."""
        job = self.active_job(batch_id) or self.start(batch_id, retry_failed=retry_failed)
        return self.follow(job, cancel=cancel) if job else None

    def active_job(self, batch_id: int) -> TransformJobRecord | None:
        return next((j for j in self.stages.store.transform_jobs(batch_id) if j.active), None)

    # --- prepare + start -------------------------------------------------------------------------
    def start(self, batch_id: int, *, retry_failed: bool = False) -> TransformJobRecord | None:
        """Prepare and start one job, holding the batch's lease meanwhile: a second task or CLI pressing
        Run at the same moment gets BatchBusyError instead of paying for a second job."""
        store, owner = self.stages.store, new_runner_id()
        if self.stages.leases.enabled:
            take_batch(store, batch_id, owner, self.stages.leases)
        try:
            return self.active_job(batch_id) or self._start(batch_id, retry_failed=retry_failed)
        finally:
            if self.stages.leases.enabled:
                store.release_batch(batch_id, owner)

    def _start(self, batch_id: int, *, retry_failed: bool) -> TransformJobRecord | None:
        self.stages = follow_active_taxonomy(self.stages)  # the questions of the taxonomy active when the job starts
        items = self.stages.store.items_to_process(batch_id, retry_failed=retry_failed)
        job_name = f"tag-b{batch_id}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"  # unique, ≤ 63 chars
        job_prefix = f"{self.prefix}/{job_name}".lstrip("/")
        near, reuse = near_duplicate_index(self.stages, batch_id)  # issue 19: the catalogue once per job, as once per run
        save_times = SaveTimes()  # photos finished here (cached, unreadable) store the previous save's time, as a run's do
        in_job = {item.id for item in items} if reuse else set()  # look-alikes of these ride on their output
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            prepared = [p for p in pool.map(lambda item: self._prepare(item, job_prefix, near, save_times, in_job), items)
                        if p is not None]
            if reuse:
                prepared = self._settle_reuse(prepared, job_prefix, save_times, pool)
        if not prepared:
            return None  # every photo was cached, reused or unreadable: nothing to send
        self._write(f"{job_prefix}/manifest.json", json.dumps({"items": prepared}).encode())
        job = TransformJobRecord(batch_id=batch_id, job_name=job_name, status="InProgress", s3_prefix=f"s3://{self.bucket}/{job_prefix}/",
                                 total=len({p["content_key"] for p in prepared if "caption_key" not in p}))
        self._create_job(job_name, job_prefix)
        self.stages.store.save_transform_job(job)
        return job

    def _prepare(self, item: ItemRecord, job_prefix: str, near: HashIndex | None = None,
                 save_times: SaveTimes | None = None, in_job: set[int] | frozenset[int] = frozenset()) -> dict | None:
        """Photo stored and request written: the manifest entry. Cached or unreadable photos finish here. The photo's
        perceptual hash (and the earlier photo it looks like) is taken here, where it is normalized, and travels in
        the manifest to be saved with the result: without it later uploads are never compared with this photo.

        `in_job` (the job's item ids) is given when the batch reuses near-duplicates: a photo that looks like one
        already tagged finishes here with that item's caption (no job work, as a run reuses it); one that looks like
        another photo of this job gets an entry with `reuse_item` and its request held aside (not in the job's input)
        for _settle_reuse to decide."""
        usage: list[Usage] = []
        trace = ItemTrace(item.batch_id, item.id)  # stage events, metrics and stage_ms, as a run's items get them
        save_times = save_times if save_times is not None else SaveTimes()
        try:
            image, image_path = prepare_image(self.stages, item, None, trace)
            match = (near.nearest_then_add(image.phash, self.stages.near_duplicates.max_distance,
                                           CatalogueEntry(image.phash, item.batch_id, item.id, item.seq))
                     if near is not None and image.phash else None)
            looks_like = f"looks like {match.entry.label} ({match.distance} bits apart)" if match is not None else None
            reused = reused_caption(self.stages, match) if match is not None and in_job else None
            cached = self.stages.store.cached_caption(image.content_key, self._model_id()) if self.stages.use_cache else None
            if reused is not None or cached is not None:  # the runner's order: a reused caption before the cache
                entry = {"item_id": item.id, "content_key": image.content_key, "image_path": image_path,
                         "checks": image.checks.to_dict(), "phash": image.phash, "near_duplicate": looks_like,
                         "reused_from": f"caption reused from {match.entry.label}" if reused is not None and match else None}
                self._finish_here(item, entry, reused or cached, trace, save_times, usage)
                return None
            body = build_request(image.jpeg, self.stages.schema.attributes, max_new_tokens=self.options.max_new_tokens)
            if match is not None and match.entry.item_id in in_job:  # a look-alike of a photo in this job: held aside
                self._write(f"{job_prefix}/held/{item.id}.json", body)
                return {"item_id": item.id, "content_key": image.content_key, "image_path": image_path,
                        "checks": image.checks.to_dict(), "stage_ms": dict(trace.stage_ms), "phash": image.phash,
                        "near_duplicate": looks_like, "reuse_item": match.entry.item_id, "reuse_seq": match.entry.seq,
                        "reused_from": f"caption reused from {match.entry.label}"}
            self._write(f"{job_prefix}/input/{image.content_key}.json", body)  # duplicates overwrite: one record per photo
        except Exception as exc:  # one bad photo fails its own row; the job goes on without it
            self._save_failure(item, exc, usage, trace, save_times)
            return None
        return {"item_id": item.id, "content_key": image.content_key, "image_path": image_path, "checks": image.checks.to_dict(),
                "stage_ms": dict(trace.stage_ms), "phash": image.phash, "near_duplicate": looks_like}

    def _save_failure(self, item: ItemRecord, exc: Exception, usage: list[Usage], trace: ItemTrace, save_times: SaveTimes) -> None:
        """The item's row says why it failed, with what was paid for it; timed and counted as the runner does a failure."""
        trace.fail(trace.error_kind or error_kind(exc, "item"))
        with trace.stage("save"):
            self.stages.store.save_error(item.id, describe_error(exc), usage, error_kind=trace.error_kind,
                                         stage_ms=save_times.stamped(trace.stage_ms))
        save_times.saved(trace)
        trace.finish(ok=False)
        trace.count_usage(usage)

    def _finish_here(self, item: ItemRecord, entry: dict, caption: CaptionResult, trace: ItemTrace, save_times: SaveTimes,
                     usage: list[Usage]) -> None:
        """An item whose caption is known before the job (cached, or reused from a tagged look-alike): summarized and
        saved now, never sent. Raises as complete_item does; the caller saves the failure."""
        trace.cache(True)
        with trace.stage("summarize"):
            result = complete_item(self.stages, item, content_key=entry["content_key"], image_path=entry["image_path"],
                                   checks=PhotoChecks.from_dict(entry["checks"]), caption=caption, usage=usage)
        result.phash, result.near_duplicate, result.reused_from = entry["phash"], entry["near_duplicate"], entry.get("reused_from")
        with trace.stage("save"):
            self.stages.store.save_result(item.id, result, usage, stage_ms=save_times.stamped(trace.stage_ms))
        save_times.saved(trace)
        trace.finish(ok=True)
        trace.count_usage(usage)

    def _settle_reuse(self, prepared: list[dict], job_prefix: str, save_times: SaveTimes, pool: ThreadPoolExecutor) -> list[dict]:
        """Each look-alike held aside by _prepare follows its match (and that one's, ...) to the photo whose output it
        will take: one sent to this job (the entry gets `caption_key`, the output it reads at ingest; nothing is paid
        for it). A chain ending at a photo finished while being prepared (cached, or itself reused) reuses that
        item's caption now; one ending at a photo that failed, or whose caption lacks an attribute asked now, is sent
        after all (its held request copied into the job's input). Matches point only to photos hashed before, so
        chains end."""
        by_item = {entry["item_id"]: entry for entry in prepared}
        kept, finish = [], []
        for entry in prepared:
            if "reuse_item" not in entry:
                kept.append(entry)
                continue
            source = entry
            while "reuse_item" in source and source["reuse_item"] in by_item:
                source = by_item[source["reuse_item"]]
            if "reuse_item" not in source:  # a photo this job captions
                kept.append({**{k: v for k, v in entry.items() if k not in ("reuse_item", "reuse_seq")},
                             "caption_key": source["content_key"]})
            else:  # the chain's last photo was finished (or failed) while being prepared
                finish.append((entry, source["reuse_item"], source["reuse_seq"]))

        def settle(task: tuple[dict, int, int]) -> dict | None:
            entry, item_id, seq = task
            item = self.stages.store.get_item(entry["item_id"])
            if item is None:
                return None
            match = Match(CatalogueEntry("", item.batch_id, item_id, seq), 0)  # a photo of this job: same batch
            caption = reused_caption(self.stages, match)
            plain = {k: v for k, v in entry.items() if k not in ("reuse_item", "reuse_seq")}
            if caption is None:  # nothing to reuse after all: this photo goes to the job
                self.s3.copy_object(Bucket=self.bucket, Key=f"{job_prefix}/input/{entry['content_key']}.json",
                                    CopySource={"Bucket": self.bucket, "Key": f"{job_prefix}/held/{entry['item_id']}.json"})
                return {**plain, "reused_from": None}
            usage: list[Usage] = []
            trace = ItemTrace(item.batch_id, item.id)
            trace.stage_ms.update(entry.get("stage_ms") or {})
            try:
                self._finish_here(item, plain, caption, trace, save_times, usage)
            except Exception as exc:  # the summary failed: this item's row says why, as in _prepare
                self._save_failure(item, exc, usage, trace, save_times)
            return None

        sent = [entry for entry in pool.map(settle, finish) if entry is not None]
        return kept + sent

    def _create_job(self, job_name: str, job_prefix: str) -> None:
        from botocore.exceptions import ClientError

        base = f"s3://{self.bucket}/{job_prefix}"
        try:
            self.sagemaker.create_transform_job(
                TransformJobName=job_name, ModelName=self.model_name(),
                BatchStrategy="SingleRecord", MaxConcurrentTransforms=1, MaxPayloadInMB=6,
                ModelClientConfig={"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1},
                TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{base}/input/"}},
                                "ContentType": "application/json", "SplitType": "None", "CompressionType": "None"},
                TransformOutput={"S3OutputPath": f"{base}/output/", "Accept": "application/json", "AssembleWith": "None"},
                TransformResources={"InstanceType": self.options.instance_type, "InstanceCount": self.options.instance_count},
                Tags=[{"Key": "app", "Value": "product-tagging"}],
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ServiceError(f"The batch job could not start ({error.get('Code', 'error')}: {error.get('Message', '')[:200]}).") from exc

    # --- follow + ingest -------------------------------------------------------------------------
    def follow(self, job: TransformJobRecord, *, cancel: threading.Event | None = None) -> TransformJobRecord:
        """Until the job ends (then ingest) or `cancel` is set (the job keeps running in AWS)."""
        if job.status == "Summarizing":  # captions ingested before a stop or restart: wait for the summaries again
            return self._ingest_later(job, None, cancel)
        while True:
            described = self.sagemaker.describe_transform_job(TransformJobName=job.job_name)
            status = described["TransformJobStatus"]
            job = replace(job, status=status, done=self._outputs_written(job),
                          failure_reason=described.get("FailureReason", "") or "")
            self.stages.store.save_transform_job(job)
            if status in TERMINAL:
                return self.ingest(job, described, cancel=cancel)
            if cancel is not None and cancel.is_set():
                return job
            self.sleep(self.options.poll_s)

    def ingest(self, job: TransformJobRecord, described: dict | None = None, *,
               cancel: threading.Event | None = None) -> TransformJobRecord:
        # answers map onto the active taxonomy (a restarted task's stages start at the default); one activated
        # while the job ran applies here too: an attribute the job was not asked is left unanswered
        self.stages = follow_active_taxonomy(self.stages)
        later = self.stages.batch_summarizer
        if later is not None and later.wanted(job.batch_id, job.total, job=True):
            return self._ingest_later(job, described, cancel)
        manifest = self._manifest(job)
        billed_keys: set[str] = set()
        lock = threading.Lock()
        save_times = SaveTimes()  # each item stores the previous save's time in this ingest (see SaveTimes)
        started = self._created_at(job)

        def ingest_entry(entry: dict) -> None:
            item = self.stages.store.get_item(entry["item_id"])
            if item is None or item.status == "ok":
                return  # saved by an earlier ingest of this job
            reused = "caption_key" in entry  # a look-alike reusing another photo's output: never billed
            with lock:  # identical photos share one output: bill the first, the others count as cached
                first = not reused and entry["content_key"] not in billed_keys
                if not reused:
                    billed_keys.add(entry["content_key"])
            usage = [Usage(kind="transform", model=job.job_name, invocations=1)] if first else []
            trace = ItemTrace(job.batch_id, item.id)
            trace.stage_ms.update(entry.get("stage_ms") or {})  # fetch .. checks, timed (and logged) when the job was prepared
            try:
                with trace.stage("caption"):  # reading and checking the job's answer for this photo
                    output_key = entry.get("caption_key") or entry["content_key"]
                    body = read_s3_object_if_exists(self.s3, self._uri(job, f"output/{output_key}.json.out"))
                    if body is None:
                        raise ServiceError(self._missing_reason(job))
                    data = parse_response(body)
                caption = CaptionResult(caption=data["caption"], answers=data["answers"], model_id=self._model_id(), cached=not first)
                trace.cache(caption.cached)
                with trace.stage("summarize"):
                    result = complete_item(self.stages, item, content_key=entry["content_key"], image_path=entry["image_path"],
                                           checks=PhotoChecks.from_dict(entry["checks"]), caption=caption, usage=usage)
                result.phash, result.near_duplicate = entry.get("phash"), entry.get("near_duplicate")  # absent: older manifests
                result.reused_from = entry.get("reused_from")
            except Exception as exc:
                paid = [u for u in usage if u.kind != "transform"]
                if not paid and _failed_alike(item, exc, started):
                    return  # saved by an earlier ingest of this job (a crash after it): nothing new to save or count
                self._save_failure(item, exc, paid, trace, save_times)
                return
            with trace.stage("save"):
                self.stages.store.save_result(item.id, result, usage, stage_ms=save_times.stamped(trace.stage_ms))
            save_times.saved(trace)
            trace.finish(ok=True)
            trace.count_usage(usage)  # the job's invocation for this photo, the summary's tokens

        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            list(pool.map(ingest_entry, manifest))
        billed = _billed_ms(described, self.options.instance_count)
        if billed and manifest:
            self.stages.store.record_usage(manifest[0]["item_id"], [Usage(kind="transform_job", model=job.job_name,
                                                                           invocations=0, latency_ms=billed)])
        job = replace(job, status="Ingested", done=self._outputs_written(job))
        self.stages.store.save_transform_job(job)
        return job

    def _manifest(self, job: TransformJobRecord) -> list[dict]:
        return json.loads(read_s3_object_if_exists(self.s3, self._uri(job, "manifest.json")) or b'{"items": []}')["items"]

    def _ingest_later(self, job: TransformJobRecord, described: dict | None, cancel: threading.Event | None) -> TransformJobRecord:
        """Captions in, summaries through OpenAI's Batch API: every caption (and what the job cost) is kept
        before the wait and the job marked "Summarizing", so a stop or restart waits again, billing nothing twice."""
        from pipeline.batches.batch_summaries import Captioned, summarize_captioned

        store, manifest = self.stages.store, self._manifest(job)
        if job.status != "Summarizing":
            billed = _billed_ms(described, self.options.instance_count)
            if billed and manifest:
                store.record_usage(manifest[0]["item_id"], [Usage(kind="transform_job", model=job.job_name, invocations=0, latency_ms=billed)])
        captioned, billed_keys = [], set()
        save_times = SaveTimes()  # shared with the summaries' saves: one chain of saves in this process run
        again = job.status == "Summarizing"  # a restart: every manifest entry was read (and failures saved) once already
        for entry in manifest:
            item = store.get_item(entry["item_id"])
            if item is None or item.status == "ok":
                continue
            key = entry["content_key"]
            reused = "caption_key" in entry  # a look-alike reusing another photo's output: never billed
            first = not reused and key not in billed_keys and store.cached_caption(key, self._model_id()) is None  # cached: billed by an earlier ingest
            if not reused:
                billed_keys.add(key)
            usage = [Usage(kind="transform", model=job.job_name, invocations=1)] if first else []
            trace = ItemTrace(job.batch_id, item.id)
            trace.stage_ms.update(entry.get("stage_ms") or {})  # fetch .. checks, timed (and logged) when the job was prepared
            try:
                with trace.stage("caption"):  # reading and checking the job's answer for this photo
                    body = read_s3_object_if_exists(self.s3, self._uri(job, f"output/{entry.get('caption_key') or key}.json.out"))
                    if body is None:
                        raise ServiceError(self._missing_reason(job))
                    data = parse_response(body)
            except Exception as exc:
                if again and item.status == "error":
                    continue  # its answer was as unreadable in this job's first pass, which saved and counted the failure
                with trace.stage("save"):
                    store.save_error(item.id, describe_error(exc), [], error_kind=trace.error_kind or error_kind(exc, "caption"),
                                     stage_ms=save_times.stamped(trace.stage_ms))
                save_times.saved(trace)
                trace.finish(ok=False)
                continue
            caption = CaptionResult(caption=data["caption"], answers=data["answers"], model_id=self._model_id(), cached=not first)
            trace.cache(caption.cached)
            trace.count_usage(usage)  # billed once: a restart finds the caption cached (summarize_captioned keeps it first)
            captioned.append(Captioned(item=item, content_key=key, image_path=entry["image_path"],
                                       checks=PhotoChecks.from_dict(entry["checks"]), caption=caption, usage=usage,
                                       phash=entry.get("phash"), near_duplicate=entry.get("near_duplicate"),
                                       reused_from=entry.get("reused_from"), stage_ms=dict(trace.stage_ms), trace=trace))
        job = replace(job, status="Summarizing", done=self._outputs_written(job))
        store.save_transform_job(job)
        if not summarize_captioned(self.stages, job.batch_id, captioned, self.stages.batch_summarizer, cancel=cancel,
                                   save_times=save_times):
            return job  # stopped: the OpenAI batch keeps running; Resume (or a restart) waits for it again
        job = replace(job, status="Ingested")
        store.save_transform_job(job)
        return job

    def _created_at(self, job: TransformJobRecord) -> str:
        """When the job's record was first saved (the store's clock, as items' processed_at)."""
        if job.created_at:
            return job.created_at
        return next((j.created_at for j in self.stages.store.transform_jobs(job.batch_id) if j.job_name == job.job_name), "")

    def _missing_reason(self, job: TransformJobRecord) -> str:
        if job.status == "Completed":
            return "The batch job finished without a result for this photo. Retry it."
        reason = f" ({job.failure_reason[:200]})" if job.failure_reason else ""
        return f"The batch job stopped before this photo{reason}. Press Retry failed to run it again."

    # --- S3 helpers --------------------------------------------------------------------------------
    def _model_id(self) -> str:
        return getattr(self.stages.captioner, "model_id", "sagemaker")

    def _uri(self, job: TransformJobRecord, relative: str) -> str:
        return job.s3_prefix.rstrip("/") + "/" + relative

    def _write(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def _outputs_written(self, job: TransformJobRecord) -> int:
        bucket, prefix = parse_s3_prefix(self._uri(job, "output/"))
        count = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            count += sum(1 for o in page.get("Contents", []) if o["Key"].endswith(".out"))
        return count


def job_estimate(settings, photos: int) -> JobEstimate:
    """Cost and time of a job for `photos`, from the same estimator and price table as the Admin page."""
    prices = PriceTable.load(settings.prices_file)
    assumptions = Assumptions(instance_type=settings.transform_instance_type)
    return estimate_transform_job(photos, settings.transform_instance_type, settings.transform_instance_count, prices, assumptions)


def use_job_by_default(settings, photos: int) -> bool:
    return settings.transform_threshold > 0 and photos >= settings.transform_threshold


def _failed_alike(item: ItemRecord, exc: Exception, job_created_at: str) -> bool:
    """The item's stored failure already says what saving `exc` would and was saved since the job was created (by an
    earlier ingest of this job, before a crash): saving it again would change nothing but count the failure twice. A
    failure from before the job (a job for Retry failed) is saved anew (timestamps are to the second: one saved in the
    second the job was created counts as this job's)."""
    return (item.status == "error" and item.error == describe_error(exc) and bool(job_created_at)
            and (item.processed_at or "") >= job_created_at)


def _billed_ms(described: dict | None, instance_count: int) -> float:
    if not described or not described.get("TransformStartTime") or not described.get("TransformEndTime"):
        return 0.0
    seconds = (described["TransformEndTime"] - described["TransformStartTime"]).total_seconds()
    return max(0.0, seconds) * 1000 * max(1, instance_count)
