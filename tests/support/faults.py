"""Fault injection at the HTTP layer of a real boto3 client: the first N calls of an operation get
an error response (throttling, 5xx), so botocore's own retry logic is what the test exercises.

botocore sends `before-send` to every handler, and moto's in-process stub is one of them, so moto
still performs the call: the fault behaves like a response lost on its way back (the harsher case
for idempotence). Server-side refusals of InvokeEndpointAsync live in the async emulator."""

from __future__ import annotations

import threading

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kwargs):
        yield self.body


class FailFirst:
    def __init__(self, client, operation: str, count: int, *, status: int = 503, code: str = "ServiceUnavailable") -> None:
        self.left, self.status, self.code = count, status, code
        self.injected = 0
        self._lock = threading.Lock()
        self.xml = client.meta.service_model.protocol in ("rest-xml", "query")
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(f"before-send.{service}.{operation}", self._maybe_fail)

    def _maybe_fail(self, request, **_kwargs):
        with self._lock:
            if self.left <= 0:
                return None
            self.left -= 1
            self.injected += 1
        if self.xml:
            body = f"<Error><Code>{self.code}</Code><Message>injected</Message></Error>".encode()
            headers = {"Content-Type": "application/xml"}
        else:
            body = b'{"message": "injected"}'
            headers = {"x-amzn-ErrorType": self.code, "Content-Type": "application/json"}
        return AWSResponse(request.url, self.status, headers, _Raw(body))
