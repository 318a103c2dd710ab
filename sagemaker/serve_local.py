"""Serve the SageMaker handler locally with the container contract: GET /ping, POST /invocations.

    python sagemaker/serve_local.py --model-dir DIR [--port 8080] [--code-dir sagemaker/code]

The handler module is imported from the code directory and its functions looked up by name, as
the SageMaker inference toolkits do. Bad requests answer 400 with {"error": "..."}; model failures
answer 500 with a plain message; never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

DEFAULT_CODE_DIR = Path(__file__).resolve().parent / "code"
log = logging.getLogger("serve_local")


def load_handler(code_dir: Path) -> ModuleType:
    """Import code_dir/inference.py the way the container does (code dir on sys.path, module by name)."""
    code_dir = Path(code_dir).resolve()
    if str(code_dir) not in sys.path:
        sys.path.append(str(code_dir))  # appended: never in front of site-packages
    spec = importlib.util.spec_from_file_location("inference", code_dir / "inference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["inference"] = module  # as importlib.import_module("inference") would
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    for name in ("model_fn", "input_fn", "predict_fn", "output_fn"):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(f"{code_dir / 'inference.py'} has no {name}()")
    return module


class HandlerService:
    """model_fn once, then input_fn -> predict_fn -> output_fn per request (one request at a time per model)."""

    def __init__(self, handler: ModuleType, model_dir: str) -> None:
        self.handler = handler
        self.model = handler.model_fn(model_dir)
        self.lock = threading.Lock()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, bytes, str]:
        try:
            request = self.handler.input_fn(body, content_type)
            with self.lock:
                prediction = self.handler.predict_fn(request, self.model)
            payload, out_type = self.handler.output_fn(prediction, accept or "application/json")
        except ValueError as exc:  # the handler's RequestError is a ValueError: the client's fault
            return getattr(exc, "status", 400), json.dumps({"error": str(exc)}).encode(), "application/json"
        except Exception:
            log.exception("prediction failed")  # full detail in the server log only
            return 500, json.dumps({"error": "The model failed to process this request."}).encode(), "application/json"
        return 200, payload.encode() if isinstance(payload, str) else payload, out_type


def make_server(service: HandlerService, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args) -> None:
            log.info(fmt, *args)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/ping":
                return self._reply(200, b"{}", "application/json")
            self._reply(404, b'{"error": "not found"}', "application/json")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                return self._reply(404, b'{"error": "not found"}', "application/json")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._reply(*service.invoke(body, self.headers.get("Content-Type", ""), self.headers.get("Accept", "")))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="directory with the model weights (e.g. from make-test-model)")
    parser.add_argument("--code-dir", default=str(DEFAULT_CODE_DIR))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        service = HandlerService(load_handler(Path(args.code_dir)), args.model_dir)
    except Exception as exc:
        print(f"error: could not load the model: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    server = make_server(service, args.host, args.port)
    print(f"serving {args.model_dir} on http://{args.host}:{server.server_address[1]} (GET /ping, POST /invocations)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
