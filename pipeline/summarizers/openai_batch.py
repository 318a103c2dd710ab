"""Summaries of many items through OpenAI's Batch API: half the token price, answers within 24 h.

Used when a batch runs as a SageMaker batch transform job (OPENAI_BATCH_FOR_JOBS) or when the user
picks "Cheapest" (Tag page, CLI `tag --cheapest`), and at least OPENAI_BATCH_MIN_ITEMS items need a
summary. The run captions every item first; then:

    submit   one JSONL file, a /v1/chat/completions request per item (`custom_id` = item-<id>), built
             by the real-time summarizer (`request_body`: same model, structured output, shared system
             prompt first so prompt caching applies), `files.create(purpose="batch")`,
             `batches.create(completion_window="24h")`; the uploaded file is remembered in the store
             before the batch is created and the batch id right after, so a resumed or restarted run
             waits for that batch (found by its input file if the process died in between) instead
             of paying again; a Cheapest run also keeps an intent record from its start, so a run
             resumed by a restarted server (which was not told) still summarizes through the Batch API
    wait     `batches.retrieve` with backoff (5 s growing 1.5x up to OPENAI_BATCH_POLL_S) until the batch
             ends, a Stop (the items stay pending, the batch keeps running at OpenAI, Resume picks it
             up), or OPENAI_BATCH_DEADLINE_S after submission (then it is cancelled; answers it has are used)
    collect  the output and error files; each answered line goes through the real-time summarizer's
             own checks (`summarize_answer`: refusal / content filter, schema, vocabulary, the 50-word
             rule with its one corrective request, sent real-time); usage: one `llm_batch` row per
             answered line with its tokens (real-time corrective / fallback calls are `llm` rows)

Per-item outcomes, like the real-time path: a line OpenAI refused (4xx: content filter, invalid
request, quota) fails its own item with the message the real-time path gives. A line OpenAI could
not answer (429 / 5xx, batch expired, cancelled at the deadline, the whole batch failed, or no line
at all) is summarized one by one at the full price when OPENAI_BATCH_FALLBACK is on (the default:
the summary still arrives, and it costs no more than a real-time run would have), else it fails
with a retry message. A key / quota problem while submitting fails every item with its message.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Union

import openai
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from pipeline.errors import ConfigError, ServiceError, UserFacingError, attach_usage
from pipeline.models import OpenAIBatchRecord, SummaryRequest, SummaryResult, Usage
from pipeline.summarizers.openai_summarizer import (
    OpenAISummarizer,
    _is_transient,
    _refusal_error,
    _retry_wait,
    classify_error_answer,
)

ENDPOINT = "/v1/chat/completions"
FIRST_LOOK_S = 5.0
LOOK_GROWTH = 1.5
SUBMIT_TRIES = 3
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
UNSENT = "unsent:"  # id prefix of a record kept between the upload and batches.create (see _submit)
INTENT = "intent:cheapest"  # record kept from the start of a Cheapest run, so a resume after a restart keeps the Batch API

Outcome = Union[SummaryResult, Exception]  # an exception carries the calls paid for (pipeline.errors.usage_of)


def custom_id(item_id: int) -> str:
    return f"item-{item_id}"


@dataclass(frozen=True)
class _Ended:
    """How the wait ended: the batch as last seen (None when it could not be read) and why."""

    batch: Any
    why: str  # completed | expired | failed | cancelled | deadline | gone
    problem: UserFacingError | None = None  # a key / permission problem: every item fails with it


class OpenAIBatchSummarizer:
    name = "openai-batch"

    def __init__(
        self,
        realtime: OpenAISummarizer,
        store: Any,
        *,
        min_items: int = 50,
        for_jobs: bool = True,
        poll_s: float = 60.0,
        deadline_s: float = 90000.0,
        fallback: bool = True,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
        wait: Callable[[threading.Event | None, float], bool] | None = None,
    ) -> None:
        """`clock`: epoch seconds (the deadline counts from the submission time kept in the store);
        `wait(cancel, seconds)`: pause between looks, True when the run was stopped meanwhile."""
        self.realtime, self.store = realtime, store
        self.client = realtime.client  # the SDK's own retries are off; transient errors are retried here
        self.min_items, self.for_jobs, self.fallback = max(1, min_items), for_jobs, fallback
        self.poll_s, self.deadline_s = poll_s, deadline_s
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self.wait = wait or _wait

    @classmethod
    def from_settings(cls, settings, summarizer: Any, store: Any) -> "OpenAIBatchSummarizer | None":
        """None unless summaries come from OpenAI (the offline template has no batch to save on)."""
        if not isinstance(summarizer, OpenAISummarizer):
            return None
        return cls(summarizer, store, min_items=settings.openai_batch_min_items, for_jobs=settings.openai_batch_for_jobs,
                   poll_s=settings.openai_batch_poll_s, deadline_s=settings.openai_batch_deadline_s,
                   fallback=settings.openai_batch_fallback, concurrency=settings.concurrency)

    # --- when ---------------------------------------------------------------------------------
    def wanted(self, batch_id: int, items: int, *, cheapest: bool = False, job: bool = False) -> bool:
        """Whether this run's `items` summaries go through the Batch API: always when an OpenAI batch
        submitted for this batch is still waiting to be collected (never pay twice), else for at least
        OPENAI_BATCH_MIN_ITEMS items when the user picked Cheapest or the batch runs as a transform job."""
        if not items:
            return False
        if self.store.pending_openai_batch(batch_id) is not None:
            return True
        chosen = items >= self.min_items and (cheapest or (job and self.for_jobs))
        if chosen and cheapest:  # kept: a run resumed by a restarted server (which was not told) still uses it
            self.store.remember_openai_batch(OpenAIBatchRecord(batch_id=batch_id, openai_batch_id=INTENT, input_file_id="",
                                                               submitted_at=self.clock() - 1, requests=items, status="captioning"))
        return chosen

    # --- the whole round ------------------------------------------------------------------------
    def summarize_many(self, batch_id: int, requests: dict[int, SummaryRequest], *,
                       cancel: threading.Event | None = None) -> dict[int, Outcome] | None:
        """Item id -> its summary or its error, for every request; None when stopped while waiting (the
        OpenAI batch keeps running and stays remembered: the next run collects it)."""
        if not requests:
            return {}
        record = self.store.pending_openai_batch(batch_id)
        if record is not None and record.openai_batch_id == INTENT:
            record = None  # nothing submitted yet
        if record is None or record.openai_batch_id.startswith(UNSENT):
            if cancel is not None and cancel.is_set():
                return None
            try:
                record = self._submit(batch_id, requests) if record is None else self._adopt_or_create(record)
            except ConfigError as exc:  # key, quota, permission: the same for every item, and for real-time
                return {item_id: exc for item_id in requests}
            except UserFacingError as exc:
                return self._without_answers(requests, {item_id: exc for item_id in requests})
        ended = self._wait(record, cancel)
        if ended is None:
            return None
        if ended.problem is not None:
            return {item_id: ended.problem for item_id in requests}
        return self._collect(ended, requests)

    def forget(self, batch_id: int) -> None:
        """Every answer of the batch's OpenAI batch is saved: a later run (Retry failed) decides anew."""
        while (record := self.store.pending_openai_batch(batch_id)) is not None:
            self.store.forget_openai_batch(batch_id, record.openai_batch_id)

    # --- submit ---------------------------------------------------------------------------------
    def request_lines(self, requests: dict[int, SummaryRequest]) -> bytes:
        """The JSONL input file: the real-time request of each item, on the main model."""
        model = self.realtime.model
        lines = [json.dumps({"custom_id": custom_id(item_id), "method": "POST", "url": ENDPOINT,
                             "body": self.realtime.request_body(self.realtime.messages_for(request), model, request.languages,
                                                                     self.realtime.required_for(request))},
                            ensure_ascii=False)
                 for item_id, request in requests.items()]
        return ("\n".join(lines) + "\n").encode()

    def _submit(self, batch_id: int, requests: dict[int, SummaryRequest]) -> OpenAIBatchRecord:
        content = self.request_lines(requests)
        uploaded = self._call(lambda: self.client.files.create(
            file=(f"product-tagger-batch-{batch_id}.jsonl", content, "application/jsonl"), purpose="batch"))
        unsent = OpenAIBatchRecord(batch_id=batch_id, openai_batch_id=UNSENT + uploaded.id, input_file_id=uploaded.id,
                                   submitted_at=self.clock(), requests=len(requests), status="uploaded")
        self.store.remember_openai_batch(unsent)  # a crash from here on: the next run looks for a batch made from this file
        return self._create(unsent)

    def _create(self, unsent: OpenAIBatchRecord) -> OpenAIBatchRecord:
        created = self._call(lambda: self.client.batches.create(
            input_file_id=unsent.input_file_id, endpoint=ENDPOINT, completion_window="24h",
            metadata={"product_tagger_batch": str(unsent.batch_id)}))
        return self._sent(unsent, created)

    def _sent(self, unsent: OpenAIBatchRecord, batch: Any) -> OpenAIBatchRecord:
        record = replace(unsent, openai_batch_id=batch.id, status=batch.status)
        self.store.remember_openai_batch(record)  # a restart waits for this one
        self.store.forget_openai_batch(unsent.batch_id, unsent.openai_batch_id)
        return record

    def _adopt_or_create(self, unsent: OpenAIBatchRecord) -> OpenAIBatchRecord:
        """The file was uploaded but the batch id never kept (the process died around batches.create): the
        batch made from that file if OpenAI has one (among its 100 newest), else create it now."""
        page = self._call(lambda: self.client.batches.list(limit=100))
        made = next((b for b in page.data if b.input_file_id == unsent.input_file_id), None)
        return self._sent(unsent, made) if made is not None else self._create(unsent)

    def _call(self, request: Callable[[], Any]) -> Any:
        """One Files / Batches request, transient errors retried with backoff; else one plain error."""
        last: Exception | None = None
        for attempt in range(SUBMIT_TRIES):
            if attempt:
                self.wait(None, min(_retry_wait(last, attempt), 30.0))
            try:
                return request()
            except openai.APIStatusError as exc:
                if not _is_transient(exc):
                    raise _refusal_error(exc, self.realtime.model) from exc
                last = exc
            except openai.APIConnectionError as exc:
                last = exc
            except openai.OpenAIError as exc:
                raise ServiceError(f"OpenAI's Batch API answer could not be read ({type(exc).__name__}).") from exc
        status = getattr(last, "status_code", None)
        raise ServiceError("OpenAI's Batch API is unavailable right now"
                           + (f" (HTTP {status})" if status else " (could not connect)") + "; the summaries were not submitted.")

    # --- wait -----------------------------------------------------------------------------------
    def _wait(self, record: OpenAIBatchRecord, cancel: threading.Event | None) -> _Ended | None:
        pause = min(FIRST_LOOK_S, self.poll_s)
        deadline = record.submitted_at + self.deadline_s
        while True:
            if cancel is not None and cancel.is_set():
                return None
            try:
                batch = self.client.batches.retrieve(record.openai_batch_id)
            except openai.APIStatusError as exc:
                if exc.status_code == 404:
                    return _Ended(None, "gone")
                if not _is_transient(exc):
                    return _Ended(None, "gone", _refusal_error(exc, self.realtime.model))
                batch = None  # look again later
            except openai.OpenAIError:
                batch = None
            if batch is not None:
                if batch.status != record.status:
                    record = replace(record, status=batch.status)
                    self.store.remember_openai_batch(record)
                if batch.status in ENDED:
                    return _Ended(batch, batch.status)
            left = deadline - self.clock()
            if left <= 0:
                return _Ended(self._cancel(record) or batch, "deadline")
            if self.wait(cancel, min(pause, left)):
                return None
            pause = min(pause * LOOK_GROWTH, self.poll_s)

    def _cancel(self, record: OpenAIBatchRecord) -> Any:
        """Past the deadline: cancel it (what it answered so far is still in its files) and look once more."""
        try:
            self.client.batches.cancel(record.openai_batch_id)
            return self.client.batches.retrieve(record.openai_batch_id)
        except openai.OpenAIError:
            return None

    # --- collect --------------------------------------------------------------------------------
    def _lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        text = self._call(lambda: self.client.files.content(file_id)).text
        lines = []
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a damaged line: its item counts as unanswered
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                lines.append(line)
        return lines

    def _collect(self, ended: _Ended, requests: dict[int, SummaryRequest]) -> dict[int, Outcome]:
        batch = ended.batch
        try:
            lines = self._lines(getattr(batch, "error_file_id", None)) + self._lines(getattr(batch, "output_file_id", None))
        except UserFacingError as exc:  # answers paid for but unreadable now: the next run reads them again
            return {item_id: ServiceError(f"{exc} The answers are kept at OpenAI; retry the items.") for item_id in requests}
        answered = {line["custom_id"]: line for line in lines}  # an answer wins over an error for the same line
        unanswered = self._unanswered_error(ended)

        def outcome(item_id: int) -> tuple[int, Outcome | None, UserFacingError | None]:
            """(item, its outcome) or (item, None, why it needs the fallback)."""
            line = answered.get(custom_id(item_id))
            if line is None:
                return item_id, None, unanswered
            response = line.get("response") or {}
            status = response.get("status_code")
            if status == 200:
                return item_id, self._from_answer(requests[item_id], response.get("body") or {}), None
            if status is None:  # no answer at all: e.g. batch_expired
                error = line.get("error") or {}
                return item_id, None, ServiceError(f"OpenAI's Batch API did not answer for this product ({error.get('code') or 'no answer'}).")
            body = response.get("body") or {}
            transient, problem = classify_error_answer(status, body.get("error") if isinstance(body, dict) else None, self.realtime.model)
            return item_id, (None if transient else problem), (problem if transient else None)

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            first = list(pool.map(outcome, requests))
        outcomes: dict[int, Outcome] = {item_id: result for item_id, result, _ in first if result is not None}
        retry = {item_id: why for item_id, result, why in first if result is None and why is not None}
        outcomes.update(self._without_answers({i: requests[i] for i in retry}, retry))
        return outcomes

    def _from_answer(self, request: SummaryRequest, body: dict[str, Any]) -> Outcome:
        """One answered line: paid (an `llm_batch` row), then the real-time path's checks."""
        model = str(body.get("model") or self.realtime.model)
        tokens = body.get("usage") if isinstance(body.get("usage"), dict) else None
        usage = [Usage("llm_batch", model, int(tokens.get("prompt_tokens") or 0), int(tokens.get("completion_tokens") or 0), 1, 0.0)] if tokens else []
        try:
            completion = ChatCompletion.model_validate(body)
        except ValidationError:
            return attach_usage(ServiceError("OpenAI's batch answer for this product could not be read; retry the item."), usage)
        try:
            return self.realtime.summarize_answer(request, completion, self.realtime.model, usage)
        except Exception as exc:  # noqa: BLE001 - per item; it carries the calls paid for
            return exc

    def _unanswered_error(self, ended: _Ended) -> ServiceError:
        if ended.why == "expired":
            return ServiceError("OpenAI's Batch API did not answer for this product within its 24-hour window.")
        if ended.why == "deadline":
            return ServiceError(f"OpenAI's Batch API had not answered for this product after {self.deadline_s / 3600:g} h "
                                "(OPENAI_BATCH_DEADLINE_S), so the batch was cancelled.")
        if ended.why == "failed":
            errors = getattr(getattr(ended.batch, "errors", None), "data", None) or []
            reason = next((e.message for e in errors if getattr(e, "message", None)), "no reason given")
            return ServiceError(f"OpenAI refused the whole batch of summaries ({reason[:200]}).")
        if ended.why == "cancelled":
            return ServiceError("The OpenAI batch was cancelled before it answered for this product.")
        if ended.why == "gone":
            return ServiceError("OpenAI no longer knows the batch these summaries were submitted in.")
        return ServiceError("OpenAI's batch answer had no line for this product.")

    def _without_answers(self, requests: dict[int, SummaryRequest], why: dict[int, UserFacingError]) -> dict[int, Outcome]:
        """Items the Batch API did not answer: one by one at the full price (OPENAI_BATCH_FALLBACK), or their error."""
        if not requests:
            return {}
        if not self.fallback:
            return {item_id: ServiceError(f"{str(why[item_id]).rstrip('.')}; retry the failed items.") for item_id in requests}

        def one(item_id: int) -> tuple[int, Outcome]:
            try:
                return item_id, self.realtime.summarize(requests[item_id])
            except Exception as exc:  # noqa: BLE001 - per item; it carries the calls paid for
                return item_id, exc

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return dict(pool.map(one, requests))


def _wait(cancel: threading.Event | None, seconds: float) -> bool:
    if cancel is None:
        time.sleep(seconds)
        return False
    return cancel.wait(seconds)
