"""Small HTTP servers on 127.0.0.1 that speak real protocols, for tests of real clients.

- `FakeOpenAI`: the Chat Completions endpoint (`POST /v1/chat/completions`) with scripted replies,
  including 429 / 500 errors and slow answers, driven through the official `openai` SDK; and the
  Batch API (`/v1/files` upload + content, `/v1/batches` create / retrieve / cancel / list), whose
  batches run every JSONL line through that same chat-completions handler, with controllable states
  (see `BatchPlan`).
  `vision_responder` answers image messages (base64 data URLs) as a vision model would, for the
  vision captioner (CAPTIONER=openai-vision).
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
    # Batch API (files + batches): what was uploaded and created, and how the next batches behave
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"object": FileObject dict, "content": bytes}
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> Batch dict (+ "_plan", "_looks")
    batch_creates: list[dict[str, Any]] = field(default_factory=list)  # each POST /v1/batches body, in order
    batch_plan: "BatchPlan" = field(default_factory=lambda: BatchPlan())
    batch_looks: list[str] = field(default_factory=list)  # ids of each GET /v1/batches/{id}, in order
    files_error: Reply | None = None  # when set, every POST /v1/files answers this error (bad key, outage)


@dataclass
class BatchPlan:
    """How the next created batch behaves. It answers `in_progress` to its first `looks_in_progress`
    retrievals; at the next one every JSONL line runs through the chat-completions handler (script /
    responder / default, as for real-time requests) and the batch ends as `end`:

    - "completed": answered lines in the output file, error answers (4xx/5xx) in the error file;
    - "expired": only the first `answered_lines` lines run, the rest are `batch_expired` errors;
    - "failed": nothing runs (a validation failure, `errors` carries `failure_message`);
    - "hold": stays `in_progress` forever (a batch that never finishes; for deadline and restart tests).
    `cancel` makes it `cancelling` and, at the next retrieval, `cancelled` with no lines run."""

    looks_in_progress: int = 1
    end: str = "completed"
    answered_lines: int = 0
    failure_message: str = "The model `gpt-4o` does not exist or you do not have access to it."


def _error_body(reply: Reply) -> dict[str, Any]:
    kind = reply.error_type or ("rate_limit_error" if reply.status == 429 else "server_error")
    return {"error": {"message": reply.error_message or f"scripted {reply.status}", "type": kind, "param": None, "code": reply.error_code}}


def _completion_body(state: FakeOpenAIState, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
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
    return completion


def _next_reply(state: FakeOpenAIState, request: dict[str, Any], headers: dict[str, str]) -> Reply | None:
    with state.lock:
        state.requests.append(request)
        state.headers.append(headers)
        if state.responder is not None:
            reply = state.responder(request)
        else:
            reply = state.script.pop(0) if state.script else state.default
    if state.on_request is not None:
        state.on_request(request)
    return reply


_JSON = {"Content-Type": "application/json"}


class _OpenAIHandler(_Handler):
    def do_POST(self) -> None:
        state: FakeOpenAIState = self.server.owner.state  # type: ignore[attr-defined]
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/files":
            if state.files_error is not None:
                self._body()
                return self._send(state.files_error.status, json.dumps(_error_body(state.files_error)).encode(), _JSON)
            return self._upload(state)
        if path == "/v1/batches":
            return self._create_batch(state)
        if path.startswith("/v1/batches/") and path.endswith("/cancel"):
            return self._cancel_batch(state, path.split("/")[3])
        request = json.loads(self._body() or b"{}")
        reply = _next_reply(state, request, {k.lower(): v for k, v in self.headers.items()})
        if path != "/v1/chat/completions" or reply is None:
            return self._send(404, b'{"error": {"message": "not scripted", "type": "invalid_request_error"}}', _JSON)
        if reply.hang:
            state.released.wait(120)
            return None
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status != 200:
            headers = dict(_JSON)
            if reply.retry_after_ms is not None:
                headers["retry-after-ms"] = reply.retry_after_ms
            return self._send(reply.status, json.dumps(_error_body(reply)).encode(), headers)
        self._send(200, json.dumps(_completion_body(state, request, reply)).encode(), _JSON)

    def do_GET(self) -> None:
        state: FakeOpenAIState = self.server.owner.state  # type: ignore[attr-defined]
        parts = self.path.split("?")[0].strip("/").split("/")
        with state.lock:
            if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content" and parts[2] in state.files:
                return self._send(200, state.files[parts[2]]["content"], {"Content-Type": "application/octet-stream"})
            if parts[:2] == ["v1", "files"] and len(parts) == 3 and parts[2] in state.files:
                return self._send(200, json.dumps(state.files[parts[2]]["object"]).encode(), _JSON)
            if parts[:2] == ["v1", "batches"] and len(parts) == 3 and parts[2] in state.batches:
                state.batch_looks.append(parts[2])
                batch = state.batches[parts[2]]
            elif parts == ["v1", "batches"]:
                listed = [_public(b) for b in reversed(list(state.batches.values()))]
                page = {"object": "list", "data": listed, "has_more": False,
                        "first_id": listed[0]["id"] if listed else None, "last_id": listed[-1]["id"] if listed else None}
                return self._send(200, json.dumps(page).encode(), _JSON)
            else:
                return self._send(404, b'{"error": {"message": "No such object", "type": "invalid_request_error"}}', _JSON)
        _advance(state, batch)  # outside the lock: lines go through the chat handler, which takes it
        with state.lock:
            self._send(200, json.dumps(_public(batch)).encode(), _JSON)

    def _upload(self, state: FakeOpenAIState) -> None:
        from email.parser import BytesParser
        from email.policy import HTTP

        body = self._body()
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        fields: dict[str, Any] = {}
        filename = "upload"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename = part.get_filename()
            fields[name] = part.get_payload(decode=True)
        with state.lock:
            file_id = f"file-{len(state.files) + 1}"
            obj = {"id": file_id, "object": "file", "bytes": len(fields.get("file") or b""), "created_at": int(time.time()),
                   "filename": filename, "purpose": (fields.get("purpose") or b"").decode(), "status": "processed"}
            state.files[file_id] = {"object": obj, "content": fields.get("file") or b""}
        self._send(200, json.dumps(obj).encode(), _JSON)

    def _create_batch(self, state: FakeOpenAIState) -> None:
        request = json.loads(self._body() or b"{}")
        with state.lock:
            state.batch_creates.append(request)
            if request.get("input_file_id") not in state.files:
                return self._send(400, b'{"error": {"message": "No such file", "type": "invalid_request_error", "code": "invalid_file"}}', _JSON)
            batch_id = f"batch_{len(state.batches) + 1}"
            lines = state.files[request["input_file_id"]]["content"].decode().splitlines()
            batch = {"id": batch_id, "object": "batch", "endpoint": request.get("endpoint"), "input_file_id": request["input_file_id"],
                     "completion_window": request.get("completion_window"), "status": "in_progress", "created_at": int(time.time()),
                     "metadata": request.get("metadata"), "output_file_id": None, "error_file_id": None, "errors": None,
                     "request_counts": {"total": len([line for line in lines if line.strip()]), "completed": 0, "failed": 0},
                     "_plan": state.batch_plan, "_looks": 0, "_cancel": False}
            state.batches[batch_id] = batch
        self._send(200, json.dumps(_public(batch)).encode(), _JSON)

    def _cancel_batch(self, state: FakeOpenAIState, batch_id: str) -> None:
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                return self._send(404, b'{"error": {"message": "No such batch", "type": "invalid_request_error"}}', _JSON)
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"], batch["_cancel"] = "cancelling", True
        self._send(200, json.dumps(_public(batch)).encode(), _JSON)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _advance(state: FakeOpenAIState, batch: dict[str, Any]) -> None:
    """One retrieval of `batch`: moves it along its plan (see BatchPlan)."""
    with state.lock:
        plan: BatchPlan = batch["_plan"]
        if batch["status"] not in ("in_progress", "cancelling", "validating"):
            return
        if batch["_cancel"]:
            batch["status"], batch["cancelled_at"] = "cancelled", int(time.time())
            return
        batch["_looks"] += 1
        if plan.end == "hold" or batch["_looks"] <= plan.looks_in_progress:
            return
        batch["status"] = "finalizing"  # nobody else runs its lines meanwhile
        if plan.end == "failed":
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": [{"code": "model_not_found", "message": plan.failure_message, "line": 1}]})
            return
        lines = [json.loads(line) for line in state.files[batch["input_file_id"]]["content"].decode().splitlines() if line.strip()]
    answered = len(lines) if plan.end == "completed" else plan.answered_lines
    output, errors = [], []
    for number, line in enumerate(lines):
        if number >= answered:
            errors.append({"id": f"batch_req_{number}", "custom_id": line["custom_id"], "response": None,
                           "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
            continue
        reply = _next_reply(state, line["body"], {})
        if reply is None or reply.hang:
            reply = Reply(status=500)
        if reply.status != 200:
            errors.append({"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None,
                           "response": {"status_code": reply.status, "request_id": f"req_{number}", "body": _error_body(reply)}})
        else:
            output.append({"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None,
                           "response": {"status_code": 200, "request_id": f"req_{number}", "body": _completion_body(state, line["body"], reply)}})
    with state.lock:
        for kind, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(state.files) + 1}"
                content = "".join(json.dumps(row) + "\n" for row in rows).encode()
                state.files[file_id] = {"content": content, "object": {
                    "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                    "filename": f"{batch['id']}_{kind[:-8]}.jsonl", "purpose": "batch_output", "status": "processed"}}
                batch[kind] = file_id
        batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}
        batch["status"] = "completed" if plan.end == "completed" else "expired"
        batch["completed_at" if plan.end == "completed" else "expired_at"] = int(time.time())


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


def image_parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The `image_url` parts of a chat-completions request's user messages ({"url": ..., "detail": ...} each)."""
    parts = []
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            parts.extend(part["image_url"] for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    return parts


# Input tokens of one detail-"low" image, per OpenAI's published image-token rule (see pipeline/captioners/openai_vision.py)
VISION_LOW_TOKENS = {"gpt-4o": 85, "gpt-4o-mini": 2833}


def vision_responder(seen: list[bytes] | None = None, *, text_tokens: int = 300, completion_tokens: int = 40) -> Callable[[dict[str, Any]], Reply]:
    """A `FakeOpenAIState.responder` that answers image messages the way a vision model does: it decodes
    each base64 data URL (an undecodable one is OpenAI's 400 `invalid_image_format`), names the photo's
    main colour from its pixels, and answers every question of the request's JSON schema. Usage counts
    `text_tokens` plus OpenAI's per-image tokens for detail "low" (85 / 2,833), else 765 (high, 512-px tiles
    of a 768-px photo: 85 + 4 x 170). Decoded photos are appended to `seen`."""
    import base64
    import io

    from PIL import Image

    def respond(request: dict[str, Any]) -> Reply:
        images = image_parts(request)
        if not images:
            return Reply(status=400, error_type="invalid_request_error", error_message="no image in the request", retry_after_ms=None)
        tokens = text_tokens
        colours = []
        for part in images:
            url = str(part.get("url") or "")
            header, _, data = url.partition(",")
            try:
                if not (header.startswith("data:image/") and header.endswith(";base64")):
                    raise ValueError(header)
                raw = base64.b64decode(data, validate=True)
                with Image.open(io.BytesIO(raw)) as picture:
                    r, g, b = picture.convert("RGB").resize((1, 1)).getpixel((0, 0))
            except Exception:
                return Reply(status=400, error_code="invalid_image_format", error_type="invalid_request_error", retry_after_ms=None,
                             error_message="You uploaded an unsupported image. Please make sure your image is valid.")
            if seen is not None:
                seen.append(raw)
            colours.append("red" if r > max(g, b) + 40 else "blue" if b > max(r, g) + 40 else "green" if g > max(r, b) + 40 else "grey")
            model = str(request.get("model") or "")
            low = next((n for name, n in sorted(VISION_LOW_TOKENS.items(), key=lambda kv: -len(kv[0])) if model.startswith(name)), 85)
            tokens += low if part.get("detail") == "low" else 765
        schema = (((request.get("response_format") or {}).get("json_schema") or {}).get("schema") or {})
        names = list((((schema.get("properties") or {}).get("answers") or {}).get("properties") or {}))
        answers = {name: (colours[0] if name == "color" else "unknown") for name in names}
        return Reply({"caption": f"a {colours[0]} product on a plain background", "answers": answers},
                     prompt_tokens=tokens, completion_tokens=completion_tokens)

    return respond


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
