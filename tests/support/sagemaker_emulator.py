"""What SageMaker does behind async invocations and batch transform jobs, run inside moto.

moto (5.2.5) answers InvokeEndpointAsync with canned data and marks transform jobs Completed at
once without reading anything. These emulators do the real work against moto's S3: read the
request objects, run a responder (the real handler with the tiny model, or a simulated one with a
chosen latency for benchmarks), write output / failure files where SageMaker would, publish the
SNS notification, and move transform jobs through InProgress -> Completed | Failed.
Fault injection: lost outputs, scale-from-zero (no instance until `scale_out()`), jobs that fail
part way.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable
from urllib.parse import urlparse

from moto.core.exceptions import JsonRESTError
from moto.core.utils import utcnow
from moto.s3.models import s3_backends
from moto.sagemaker.models import SageMakerModelBackend, sagemaker_backends
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
from moto.sns.models import sns_backends

ACCOUNT, REGION = "123456789012", "us-east-1"
Responder = Callable[[bytes], "tuple[int, bytes]"]


def _s3():
    return s3_backends[ACCOUNT]["aws"]


def _split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def read_object(uri: str) -> bytes:
    bucket, key = _split(uri)
    return bytes(_s3().get_object(bucket, key).value)


def write_object(uri: str, data: bytes) -> None:
    bucket, key = _split(uri)
    _s3().put_object(bucket, key, value=data)


def handler_responder(server) -> Responder:
    """The real handler inside the published serving stack (support.model_server.ModelServer)."""

    def respond(body: bytes) -> tuple[int, bytes]:
        reply = server.invoke(body, "application/json", "application/json")
        return reply.status, reply.body

    return respond


def simulated_responder(latency_s: float = 0.0) -> Responder:
    """A stand-in for benchmarks of the orchestration: answers the contract after `latency_s`."""

    def respond(body: bytes) -> tuple[int, bytes]:
        request = json.loads(body)
        time.sleep(latency_s)
        answers = {q["name"]: "red" for q in request.get("questions", [])}
        return 200, json.dumps({"caption": "a product photo", "answers": answers, "model_id": "simulated"}).encode()

    return respond


class _Refused(JsonRESTError):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code, "injected fault")
        self.code = status


class AsyncEndpointEmulator:
    def __init__(self, respond: Responder, *, s3_uri: str, capacity: int = 2, instances: int = 1,
                 lose: set[int] | None = None, sns_topic: str | None = None,
                 refuse: list[tuple[int, str]] | None = None) -> None:
        self.respond, self.s3_uri = respond, s3_uri.rstrip("/")
        self.pool = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="fake-async")
        self.lose = lose or set()
        self.refuse = list(refuse or [])  # (status, code) answered to the next calls before any work
        self.refused = 0
        self.sns_topic = sns_topic
        self.invocations = 0
        self.requests: list[str] = []
        self.written = 0
        self.handled = 0  # requests finished one way or another: answered, failed or lost
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._instances = threading.Event()
        if instances:
            self._instances.set()

    def install(self, monkeypatch) -> "AsyncEndpointEmulator":
        emulator = self

        def invoke_endpoint_async(response: SageMakerRuntimeResponse):
            endpoint = response.path.split("/")[2]
            if endpoint not in sagemaker_backends[ACCOUNT][REGION].endpoints:
                from moto.sagemaker.exceptions import ValidationError

                raise ValidationError(message=f"Endpoint {endpoint} of account {ACCOUNT} not found.")
            with emulator._lock:
                refusal = emulator.refuse.pop(0) if emulator.refuse else None
                emulator.refused += bool(refusal)
            if refusal:
                raise _Refused(*refusal)
            inference_id = response.headers.get("X-Amzn-SageMaker-Inference-Id") or uuid.uuid4().hex
            output, failure = emulator.submit(response.headers["X-Amzn-SageMaker-InputLocation"], inference_id)
            headers = {"X-Amzn-SageMaker-OutputLocation": output, "X-Amzn-SageMaker-FailureLocation": failure}
            return 200, headers, json.dumps({"InferenceId": inference_id})

        monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint_async", invoke_endpoint_async)
        return self

    def settled(self) -> bool:
        """Every request sent so far is handled: an output not written by now never will be."""
        with self._lock:
            return self.handled == self.invocations

    def wait_for_progress(self, seen: int, timeout_s: float) -> None:
        """Until `handled` moves past `seen` (or `timeout_s` passes)."""
        with self._progress:
            self._progress.wait_for(lambda: self.handled != seen, timeout_s)

    def scale_out(self) -> None:
        """The scale-from-zero alarm fired and an instance came up: queued requests start."""
        self._instances.set()

    def submit(self, input_location: str, inference_id: str) -> tuple[str, str]:
        with self._lock:
            number = self.invocations
            self.invocations += 1
            self.requests.append(input_location)
        name = uuid.uuid4().hex
        output, failure = f"{self.s3_uri}/output/{name}.out", f"{self.s3_uri}/failure/{name}-error.out"
        self.pool.submit(self._run, number, input_location, output, failure, inference_id)
        return output, failure

    def _run(self, number: int, input_location: str, output: str, failure: str, inference_id: str) -> None:
        try:
            self._handle(number, input_location, output, failure, inference_id)
        finally:
            with self._progress:
                self.handled += 1
                self._progress.notify_all()

    def _handle(self, number: int, input_location: str, output: str, failure: str, inference_id: str) -> None:
        self._instances.wait()
        status, payload = self.respond(read_object(input_location))
        if number in self.lose:
            return  # the result never arrives
        write_object(output if status == 200 else failure, payload)
        with self._lock:
            self.written += 1
        if self.sns_topic:
            message = {"inferenceId": inference_id, "invocationStatus": "Completed" if status == 200 else "Failed",
                       "responseParameters": {"outputLocation": output} if status == 200 else {},
                       "failureLocation": failure if status != 200 else None, "eventName": "InferenceResult"}
            sns_backends[ACCOUNT][REGION].publish(json.dumps(message), arn=self.sns_topic)


class TransformEmulator:
    """Batch transform: one output `<input key>.out` per input object, in input order."""

    def __init__(self, respond: Responder, *, fail_after: int | None = None, hold: threading.Event | None = None,
                 hold_timeout_s: float = 60.0) -> None:
        self.respond, self.fail_after = respond, fail_after
        self.hold = hold  # set() lets a held job run: tests look at it while InProgress
        self.hold_timeout_s = hold_timeout_s  # a held job runs anyway after this long (a test that never sets it)
        self.jobs: list[str] = []
        self.threads: list[threading.Thread] = []

    def install(self, monkeypatch) -> "TransformEmulator":
        original = SageMakerModelBackend.create_transform_job
        emulator = self

        def create_transform_job(backend, transform_job_name, model_name, *args, **kwargs):
            if model_name not in backend._models:
                from moto.sagemaker.exceptions import ValidationError

                raise ValidationError(message=f"Could not find model \"{model_name}\".")
            job = original(backend, transform_job_name, model_name, *args, **kwargs)
            job.transform_job_status = "InProgress"
            thread = threading.Thread(target=emulator._run, args=(job,), daemon=True)
            emulator.jobs.append(transform_job_name)
            emulator.threads.append(thread)
            thread.start()
            return job

        monkeypatch.setattr(SageMakerModelBackend, "create_transform_job", create_transform_job)
        return self

    def wait(self, timeout_s: float = 60) -> None:
        for thread in self.threads:
            thread.join(timeout_s)

    def _run(self, job) -> None:
        if self.hold is not None:
            self.hold.wait(self.hold_timeout_s)
        job.transform_start_time = utcnow()
        try:
            self._transform(job)
        finally:
            job.transform_end_time = utcnow()

    def _transform(self, job) -> None:
        source = job.transform_input["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = _split(source)
        out_bucket, out_prefix = _split(job.transform_output["S3OutputPath"])
        keys = sorted(k for k in list(_s3().get_bucket(bucket).keys.keys()) if k.startswith(prefix))
        for number, key in enumerate(keys):
            if self.fail_after is not None and number >= self.fail_after:
                job.transform_job_status = "Failed"
                job.failure_reason = "ClientError: See job logs for more information"
                return
            status, payload = self.respond(bytes(_s3().get_object(bucket, key).value))
            if status != 200:
                job.transform_job_status = "Failed"
                job.failure_reason = f"ClientError: {payload.decode(errors='replace')[:200]}"
                return
            relative = key[len(prefix):].lstrip("/")
            _s3().put_object(out_bucket, f"{out_prefix.rstrip('/')}/{relative}.out", value=payload)
        job.transform_job_status = "Completed"
