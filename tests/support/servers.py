"""Small HTTP servers on 127.0.0.1 that speak real protocols, for tests of real clients.

- `FakeOpenAI`: the Chat Completions endpoint (`POST /v1/chat/completions`) with scripted replies,
  including 429 / 500 errors and slow answers, driven through the official `openai` SDK.
- `FakeSageMakerRuntime`: the sagemaker-runtime REST API (`POST /endpoints/{name}/invocations`),
  answering with a handler function or scripted AWS errors, driven through boto3.
- `serve_files`: plain static files (and a slow / redirecting path) for URL-fetch tests.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class _Server:
    def __init__(self, handler_class: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        omit_length = headers.pop("X-Test-Omit-Length", None)  # a server that does not say how big
        for key, value in headers.items():
            self.send_header(key, value)
        if omit_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


# OpenAI ---------------------------------------------------------------------------------------
@dataclass
class Reply:
    """One scripted answer: a structured-output object, an HTTP error, or a delay first.

    Errors carry OpenAI's error body (`error_code` e.g. "insufficient_quota", `error_type`, `error_message`);
    answers can end with another `finish_reason`, carry a `refusal`, send `raw_content` verbatim (truncated
    JSON), omit `usage`, or `hang` (never answer until the server closes)."""

    content: dict[str, Any] | None = None
    status: int = 200
    delay_s: float = 0.0
    prompt_tokens: int = 120
    completion_tokens: int = 60
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    retry_after_ms: str | None = "1"
    finish_reason: str = "stop"
    refusal: str | None = None
    raw_content: str | None = None
    usage: bool = True
    hang: bool = False


@dataclass
class FakeOpenAIState:
    script: list[Reply] = field(default_factory=list)
    default: Reply | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    headers: list[dict[str, str]] = field(default_factory=list)  # each request's headers (lower-case names)
    on_request: Callable[[dict[str, Any]], None] | None = None  # e.g. to move a test's clock
    responder: Callable[[dict[str, Any]], Reply] | None = None  # picks the reply from the request (before script)
    released: threading.Event = field(default_factory=threading.Event)  # set on close: hanging replies end


class _OpenAIHandler(_Handler):
    def do_POST(self) -> None:
        state: FakeOpenAIState = self.server.owner.state  # type: ignore[attr-defined]
        request = json.loads(self._body() or b"{}")
        with state.lock:
            state.requests.append(request)
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            if state.responder is not None:
                reply = state.responder(request)
            else:
                reply = state.script.pop(0) if state.script else state.default
        if state.on_request is not None:
            state.on_request(request)
        if self.path.rstrip("/") != "/v1/chat/completions" or reply is None:
            return self._send(404, b'{"error": {"message": "not scripted", "type": "invalid_request_error"}}', {"Content-Type": "application/json"})
        if reply.hang:
            state.released.wait(120)
            return None
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status != 200:
            kind = reply.error_type or ("rate_limit_error" if reply.status == 429 else "server_error")
            error = {"message": reply.error_message or f"scripted {reply.status}", "type": kind, "param": None, "code": reply.error_code}
            headers = {"Content-Type": "application/json"}
            if reply.retry_after_ms is not None:
                headers["retry-after-ms"] = reply.retry_after_ms
            return self._send(reply.status, json.dumps({"error": error}).encode(), headers)
        content = reply.raw_content if reply.raw_content is not None else (None if reply.refusal else json.dumps(reply.content))
        completion = {
            "id": f"chatcmpl-{len(state.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "unknown"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": reply.refusal},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }],
        }
        if reply.usage:
            completion["usage"] = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                                   "total_tokens": reply.prompt_tokens + reply.completion_tokens}
        self._send(200, json.dumps(completion).encode(), {"Content-Type": "application/json"})


class FakeOpenAI(_Server):
    def __init__(self) -> None:
        super().__init__(_OpenAIHandler)
        self.state = FakeOpenAIState()

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __exit__(self, *exc) -> None:
        self.state.released.set()
        super().__exit__(*exc)


# SageMaker runtime ----------------------------------------------------------------------------
@dataclass
class AwsError:
    status: int
    code: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


class _RuntimeHandler(_Handler):
    def do_POST(self) -> None:
        owner: FakeSageMakerRuntime = self.server.owner  # type: ignore[attr-defined]
        parts = self.path.strip("/").split("/")
        body = self._body()
        with owner.lock:
            owner.calls.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})
            scripted = owner.errors.pop(0) if owner.errors else None
        if scripted is not None:
            payload = {"__type": scripted.code, "message": scripted.message, **scripted.extra}
            return self._send(scripted.status, json.dumps(payload).encode(), {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": scripted.code})
        if len(parts) != 3 or parts[0] != "endpoints" or parts[2] != "invocations" or parts[1] not in owner.endpoints:
            name = parts[1] if len(parts) > 1 else "?"
            payload = {"__type": "ValidationError", "message": f"Endpoint {name} of account 123456789012 not found."}
            return self._send(400, json.dumps(payload).encode(), {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ValidationError"})
        status, answer = owner.handler(body, self.headers.get("Content-Type", ""))
        if status >= 400:
            payload = {"__type": "ModelError", "message": f"Received client error ({status}) from primary", "OriginalStatusCode": status, "OriginalMessage": answer.decode()}
            return self._send(424, json.dumps(payload).encode(), {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ModelError"})
        self._send(200, answer, {"Content-Type": "application/json", "x-Amzn-Invoked-Production-Variant": "AllTraffic"})


class FakeSageMakerRuntime(_Server):
    """`handler(body, content_type) -> (status, response bytes)` plays the model container."""

    def __init__(self, handler: Callable[[bytes, str], tuple[int, bytes]], endpoints: tuple[str, ...] = ("blip2-endpoint",)) -> None:
        super().__init__(_RuntimeHandler)
        self.handler = handler
        self.endpoints = set(endpoints)
        self.errors: list[AwsError] = []
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()


# Static files ---------------------------------------------------------------------------------
class _FileHandler(_Handler):
    def do_GET(self) -> None:
        owner: FileServer = self.server.owner  # type: ignore[attr-defined]
        route = owner.routes.get(self.path)
        if route is None:
            return self._send(404, b"not found")
        status, body, headers, delay = route
        hold = owner.holds.get(self.path)
        if hold is not None:
            hold.wait(120)  # answers only once the test sets it (or the server closes)
        if delay:
            time.sleep(delay)
        self._send(status, body, headers)


class FileServer(_Server):
    def __init__(self) -> None:
        super().__init__(_FileHandler)
        self.routes: dict[str, tuple[int, bytes, dict[str, str], float]] = {}
        self.holds: dict[str, threading.Event] = {}  # path -> event its answer waits for (see `add(hold=...)`)

    def add(self, path: str, body: bytes, *, status: int = 200, headers: dict[str, str] | None = None, delay: float = 0.0,
            hold: threading.Event | None = None) -> str:
        """`hold`: the answer waits until this event is set (an origin that has not answered yet, on no timer)."""
        self.routes[path] = (status, body, headers or {"Content-Type": "image/jpeg"}, delay)
        if hold is not None:
            self.holds[path] = hold
        return self.url + path

    def __exit__(self, *exc) -> None:
        for hold in self.holds.values():
            hold.set()  # held answers end, so no handler thread outlives the test
        super().__exit__(*exc)


# Slow origins ---------------------------------------------------------------------------------
class DripServer:
    """A TCP server on 127.0.0.1 that, per connection, optionally reads the HTTP request, sends
    `prefix` at once, then one `drip` every `interval_s` until `max_s` has passed, then closes.

    Each send is tiny and prompt, so a client's per-read timeout never fires: only an overall
    deadline ends the download. Examples: a body that never ends (`prefix` = status line and a
    large Content-Length), headers that never end (`prefix` = status line only), a TLS handshake
    that never ends (`read_request=False`, `prefix` = a TLS record header announcing 16 KB). With
    `drip=b""` the server sends nothing after `prefix` (a silent origin)."""

    def __init__(self, prefix: bytes = b"", *, drip: bytes = b"x", interval_s: float = 0.2, max_s: float = 5.0, read_request: bool = True) -> None:
        import socket as _socket

        self.prefix, self.drip, self.interval_s, self.max_s, self.read_request = prefix, drip, interval_s, max_s, read_request
        self.connections = 0
        self.stopped = threading.Event()
        self._listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self._listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        started = time.monotonic()
        try:
            conn.settimeout(1.0)
            if self.read_request:
                received = b""
                while b"\r\n\r\n" not in received and len(received) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    received += chunk
            conn.sendall(self.prefix)
            while not self.stopped.is_set() and time.monotonic() - started < self.max_s:
                if self.stopped.wait(self.interval_s):
                    break
                if self.drip:
                    conn.sendall(self.drip)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self._thread.join(2)
        self._listener.close()


# Request counter ------------------------------------------------------------------------------
class _CountingHandler(_Handler):
    def _count(self) -> None:
        owner: CountingServer = self.server.owner  # type: ignore[attr-defined]
        with owner.lock:
            owner.requests.append((self.command, self.path))
        body = owner.png if self.path.endswith(".png") else b"<html><body>phished</body></html>"
        self._send(200, body, {"Content-Type": "image/png" if self.path.endswith(".png") else "text/html"})

    do_GET = do_HEAD = do_POST = _count  # type: ignore[assignment]


class CountingServer(_Server):
    """Answers anything (a 1×1 PNG for *.png, a page otherwise) and records each request: a tracking
    beacon / phishing target that proves whether a browser ever loaded or followed a URL."""

    # 1x1 transparent PNG
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000005000155cdd3b80000000049454e44ae426082")

    def __init__(self) -> None:
        super().__init__(_CountingHandler)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]
