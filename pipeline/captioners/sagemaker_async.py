"""Captioning through a SageMaker async endpoint (CAPTIONER=sagemaker-async).

One photo = one request JSON in S3 (`<SAGEMAKER_ASYNC_S3>/input/`), one `InvokeEndpointAsync`,
then its result is collected from the output or failure location SageMaker answers with.
Collecting waits on SNS -> SQS notifications when ASYNC_SQS_QUEUE_URL is set, and otherwise (and
as a safety net for lost notifications) looks at S3 with capped exponential backoff.

A paid-for request is written to the store's invocation journal before waiting, so a process
killed mid-batch waits for the same result after a restart instead of paying again.
An endpoint scaled to zero instances is not an error: requests queue in SageMaker while it starts,
`readiness()` says so (pages and the CLI show the expected wait) and deadlines include that wait.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from pipeline.attributes import AttributeSpec
from pipeline.captioners.contract import build_request, endpoint_error, parse_response
from pipeline.errors import ConfigError, ServiceError
from pipeline.ingest.fetch import parse_s3_prefix, read_s3_object_if_exists
from pipeline.models import AsyncInvocation, CaptionResult, NormalizedImage, Usage


@dataclass(frozen=True)
class Readiness:
    """Whether the captioner can answer soon; `message` is for a merchandiser."""

    ready: bool
    message: str = ""
    expected_wait_s: float = 0.0


class SageMakerAsyncCaptioner:
    def __init__(
        self,
        *,
        runtime: Any,
        s3: Any,
        control: Any,
        journal: Any,
        endpoint_name: str,
        s3_uri: str,
        timeout_s: float = 900.0,
        poll_max_s: float = 20.0,
        poll_min_s: float = 1.0,
        warmup_s: float = 600.0,
        max_in_flight: int = 32,
        max_new_tokens: int = 30,
        caption_prompt: str = "",
        notifications: "SqsNotifications | None" = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.runtime, self.s3, self.control, self.journal = runtime, s3, control, journal
        self.endpoint_name = endpoint_name
        self.bucket, self.prefix = parse_s3_prefix(s3_uri)
        self.timeout_s, self.poll_max_s, self.poll_min_s, self.warmup_s = timeout_s, poll_max_s, poll_min_s, warmup_s
        self.max_in_flight = max_in_flight
        self.max_new_tokens, self.caption_prompt = max_new_tokens, caption_prompt
        self.notifications = notifications
        self.clock, self.sleep = clock, sleep
        self.model_id = f"sagemaker:{endpoint_name}"  # same model as the real-time mode: the cache is shared
        self._readiness: tuple[float, Readiness] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, journal) -> "SageMakerAsyncCaptioner":
        import boto3
        from botocore.config import Config

        if not settings.sagemaker_async_s3:
            raise ConfigError("CAPTIONER=sagemaker-async needs SAGEMAKER_ASYNC_S3 (s3://bucket/prefix of the async endpoint).")
        config = Config(region_name=settings.aws_region, retries={"max_attempts": 6, "mode": "adaptive"},
                        max_pool_connections=max(10, settings.async_max_in_flight + 4))
        runtime = boto3.client("sagemaker-runtime", config=config, endpoint_url=settings.sagemaker_runtime_url or None)
        notifications = None
        if settings.async_sqs_queue_url:
            notifications = SqsNotifications(boto3.client("sqs", config=config), settings.async_sqs_queue_url)
        return cls(
            runtime=runtime, s3=boto3.client("s3", config=config), control=boto3.client("sagemaker", config=config),
            journal=journal, endpoint_name=settings.sagemaker_endpoint, s3_uri=settings.sagemaker_async_s3,
            timeout_s=settings.async_timeout_s, poll_max_s=settings.async_poll_max_s,
            warmup_s=settings.endpoint_warmup_minutes * 60, max_in_flight=settings.async_max_in_flight,
            max_new_tokens=settings.max_new_tokens, notifications=notifications,
        )

    # --- Captioner protocol ---------------------------------------------------------------------
    def warm_up(self) -> None:
        """Nothing to load. A missing endpoint is reported per photo (an admin may start it meanwhile)."""

    def readiness(self) -> Readiness:
        """Asked before and during a batch; cached for 30 s so it costs one DescribeEndpoint per half minute."""
        with self._lock:  # one DescribeEndpoint at a time; the other photos use its answer
            if self._readiness is None or self.clock() - self._readiness[0] >= 30:
                self._readiness = (self.clock(), self._describe_readiness())
            return self._readiness[1]

    def caption(self, image: NormalizedImage, questions: list[AttributeSpec]) -> tuple[CaptionResult, Usage]:
        started = self.clock()
        invocation = self.journal.pending_invocation(image.content_key, self.model_id)
        resumed = invocation is not None  # sent by an earlier process: its result may be there already
        if invocation is None:
            invocation = self._invoke(image, questions)
        if self.notifications is not None:
            self.notifications.expect(invocation.inference_id)
        try:
            outcome = self._wait(invocation, self._deadline(invocation), look_first=resumed)
        finally:
            if self.notifications is not None:
                self.notifications.done(invocation.inference_id)
        self.journal.forget_invocation(image.content_key, self.model_id)
        if outcome is None:
            minutes = round(self.timeout_s / 60)
            raise ServiceError(f"No caption came back from the endpoint within {minutes} minutes (result lost or endpoint "
                               "overloaded). Retry this photo.")
        kind, body = outcome
        if kind == "failed":
            raise _failure(body)
        data = parse_response(body)
        latency = (self.clock() - started) * 1000
        result = CaptionResult(caption=data["caption"], answers=data["answers"], model_id=self.model_id, latency_ms=latency)
        return result, Usage(kind="endpoint", model=data["model_id"] or self.endpoint_name, invocations=1, latency_ms=latency)

    # --- steps ------------------------------------------------------------------------------------
    def _invoke(self, image: NormalizedImage, questions: list[AttributeSpec]) -> AsyncInvocation:
        from botocore.exceptions import BotoCoreError, ClientError

        body = build_request(image.jpeg, questions, caption_prompt=self.caption_prompt, max_new_tokens=self.max_new_tokens)
        # Named by content: the same photo and questions always reuse one input object.
        key = f"{self.prefix}/input/{image.content_key}-{hashlib.sha256(body).hexdigest()[:12]}.json".lstrip("/")
        inference_id = uuid.uuid4().hex
        if self.notifications is not None:
            self.notifications.expect(inference_id)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
            answer = self.runtime.invoke_endpoint_async(
                EndpointName=self.endpoint_name, InputLocation=f"s3://{self.bucket}/{key}", ContentType="application/json",
                Accept="application/json", InferenceId=inference_id,
                InvocationTimeoutSeconds=int(min(3600, max(1, self.timeout_s))),
            )
        except (ClientError, BotoCoreError) as exc:
            if self.notifications is not None:
                self.notifications.done(inference_id)
            if isinstance(exc, ClientError):
                raise _explain(exc, self.endpoint_name) from exc
            raise ServiceError(f"The captioning endpoint {self.endpoint_name} could not be reached ({type(exc).__name__}).") from exc
        invocation = AsyncInvocation(
            content_key=image.content_key, model_id=self.model_id, inference_id=answer.get("InferenceId") or inference_id,
            output_location=answer["OutputLocation"], failure_location=answer.get("FailureLocation") or "",
            invoked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        self.journal.remember_invocation(invocation)
        return invocation

    def _deadline(self, invocation: AsyncInvocation) -> float:
        invoked = datetime.fromisoformat(invocation.invoked_at).timestamp()
        offset = self.clock() - time.time()  # the journal keeps wall time; waits use this captioner's clock
        readiness = self.readiness()
        return invoked + offset + self.timeout_s + (0.0 if readiness.ready else readiness.expected_wait_s)

    def _wait(self, invocation: AsyncInvocation, deadline: float, *, look_first: bool) -> tuple[str, bytes] | None:
        """Look at S3 after each pause; pauses grow 1.5x up to ASYNC_POLL_MAX_S (a notification ends one early)."""
        delay = self.poll_min_s
        while True:
            if look_first:
                found = self._look(invocation)
                if found is not None:
                    return found
            look_first = True
            left = deadline - self.clock()
            if left <= 0:
                return None
            pause = min(delay, left)
            if self.notifications is not None:
                self.notifications.wait_for(invocation.inference_id, pause)
            else:
                self.sleep(pause)
            delay = min(delay * 1.5, self.poll_max_s)

    def _look(self, invocation: AsyncInvocation) -> tuple[str, bytes] | None:
        body = read_s3_object_if_exists(self.s3, invocation.output_location)
        if body is not None:
            return "ok", body
        if invocation.failure_location:
            body = read_s3_object_if_exists(self.s3, invocation.failure_location)
            if body is not None:
                return "failed", body
        return None

    def _describe_readiness(self) -> Readiness:
        from botocore.exceptions import BotoCoreError, ClientError

        wait = self.warmup_s
        try:
            endpoint = self.control.describe_endpoint(EndpointName=self.endpoint_name)
        except ClientError:
            return Readiness(False, f"The captioning endpoint {self.endpoint_name} is not running. An admin can start it "
                                    "on the Admin page; photos wait until then or fail after the timeout.", wait)
        except BotoCoreError:
            return Readiness(True)  # cannot tell: do not block on the status check
        status = endpoint.get("EndpointStatus")
        variants = endpoint.get("ProductionVariants") or [{}]
        instances = variants[0].get("CurrentInstanceCount", 1)
        if status in ("Creating", "Updating", "SystemUpdating") or (status == "InService" and not instances):
            return Readiness(False, f"The captioning endpoint is warming up (starting from zero instances). Expected wait "
                                    f"about {round(wait / 60)} minutes; photos are queued and finish on their own.", wait)
        return Readiness(True)


def _failure(body: bytes) -> Exception:
    """A failure file holds the model server's error answer."""
    return endpoint_error(body)


def _explain(exc, endpoint_name: str) -> Exception:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", ""), error.get("Message", "")
    if code in ("ValidationError", "ValidationException") and "not found" in message.lower():
        return ServiceError(f"The captioning endpoint {endpoint_name} is not deployed. An admin can start it on the Admin page.")
    if code in ("ThrottlingException", "TooManyRequestsException", "SlowDown", "ServiceUnavailable"):
        return ServiceError(f"The captioning endpoint {endpoint_name} is busy (throttled); retry shortly.")
    if code in ("AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
        return ConfigError(f"This dashboard is not allowed to use the endpoint {endpoint_name} or its S3 location ({code}).")
    return ServiceError(f"The captioning endpoint {endpoint_name} failed ({code or 'unknown error'}); try again later.")


class SqsNotifications:
    """Results announced by SageMaker's SNS topics, delivered to one SQS queue.

    A single receiver thread long-polls the queue and wakes the photo waiting for that inference id
    (interest is registered when the request is sent, so an early notification is never missed).
    Notifications for requests this process is not waiting for go back to the queue for a while,
    for another task. Waiters still look at S3 at their backoff interval, so a lost message only
    delays a photo.
    """

    def __init__(self, sqs: Any, queue_url: str, *, foreign_visibility_s: int = 60) -> None:
        self.sqs, self.queue_url, self.foreign_visibility_s = sqs, queue_url, foreign_visibility_s
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished: dict[str, None] = {}  # recently collected ids (insertion-ordered, bounded)
        self.received = 0

    def expect(self, inference_id: str) -> threading.Event:
        self._start()
        with self._lock:
            return self._events.setdefault(inference_id, threading.Event())

    def wait_for(self, inference_id: str, timeout_s: float) -> None:
        self.expect(inference_id).wait(timeout_s)

    def done(self, inference_id: str) -> None:
        """Collected (maybe by an S3 look first): its notification, when it comes, is just deleted."""
        with self._lock:
            self._events.pop(inference_id, None)
            self._finished[inference_id] = None
            while len(self._finished) > 10_000:
                self._finished.pop(next(iter(self._finished)))

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._receive_forever, name="async-results", daemon=True)
                self._thread.start()

    def _receive_forever(self) -> None:
        while True:
            try:
                self.receive_once()
            except Exception:  # a receive failure must not stop waiters: they fall back to S3 looks
                time.sleep(5)

    def receive_once(self, wait_s: int = 20) -> None:
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
        delete = []
        for message in answer.get("Messages", []):
            self.received += 1
            inference_id = _inference_id(message.get("Body", ""))
            with self._lock:
                event = self._events.get(inference_id or "")
                ours = event is not None or inference_id is None or inference_id in self._finished
            if event is not None:
                event.set()
            if ours:  # ours, or not a result notification at all
                delete.append({"Id": str(len(delete)), "ReceiptHandle": message["ReceiptHandle"]})
            else:
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                   VisibilityTimeout=self.foreign_visibility_s)
        if delete:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=delete)


def _inference_id(body: str) -> str | None:
    """SNS wraps SageMaker's message in {"Type": "Notification", "Message": "..."} unless raw delivery is on."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "Message" in data and "inferenceId" not in data:
            data = json.loads(data["Message"])
        return str(data.get("inferenceId")) if data.get("inferenceId") else None
    except (ValueError, AttributeError, TypeError):
        return None
