"""The SageMaker Hugging Face serving stack, driven the way the container drives it.

What runs here is the published code: `mms.model_loader.MmsModelLoader` loads
`sagemaker_huggingface_inference_toolkit.handler_service` (which imports `code/inference.py` from the
model directory), and `mms.service.Service.predict` handles each request and encodes the worker's
binary answer. Only two thin parts are ours, and each copies named upstream code:

- `request_batch` builds the batch the Java frontend sends to the Python worker
  (multi-model-server `RequestInput`: parameter "body" with the raw bytes, the HTTP headers as
  byte pairs). The container's MMS runs with `decode_input_request=false` (sagemaker-inference's
  default-mms.properties), so the body arrives as bytes.
- `to_http` turns the worker's answer into the HTTP reply: 200 with the body and the content type
  the handler set, otherwise MMS `Job.sendError` → `NettyUtils.sendError`: the status code and
  `{"code", "type": "InternalServerException", "message"}` (GSON pretty-printed).

`toolkit_compat()` is the one shim: PyPI's toolkit 2.6.0 imports `is_tf_available` from
`transformers.file_utils`, which transformers 5 removed. The pinned container (see
sagemaker/container.json) ships a toolkit build that imports under its transformers 5.5.3; this only
restores the two flags the import needs and changes nothing on the request path tested here.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

HANDLER_SERVICE = "sagemaker_huggingface_inference_toolkit.handler_service"
_ids = itertools.count(1)


def toolkit_compat() -> None:
    import transformers.file_utils as file_utils

    if not hasattr(file_utils, "is_tf_available"):
        file_utils.is_tf_available = lambda: False  # transformers 5 dropped TensorFlow support
    if not hasattr(file_utils, "is_torch_available"):
        from transformers.utils import is_torch_available

        file_utils.is_torch_available = is_torch_available


@dataclass
class HttpReply:
    status: int
    body: bytes
    content_type: str

    def json(self):
        return json.loads(self.body)


class ModelServer:
    """One MMS worker with the toolkit's handler service loaded from `model_dir` (like /opt/ml/model)."""

    def __init__(self, model_dir: Path | str, *, env: dict[str, str] | None = None) -> None:
        toolkit_compat()
        from mms.model_loader import MmsModelLoader

        # Each MMS worker is a fresh process: forget a handler another model directory imported.
        for name in ("inference", "blip_core"):
            sys.modules.pop(name, None)
        saved = {key: os.environ.get(key) for key in (env or {})}
        os.environ.update(env or {})
        try:
            self.service = MmsModelLoader().load("model", str(model_dir), HANDLER_SERVICE, -1, 1)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.handler = sys.modules["inference"]
        self.lock = threading.Lock()  # an MMS worker handles one request at a time

    def invoke(self, body: bytes, content_type: str | None = "application/json", accept: str | None = None) -> HttpReply:
        with self.lock:
            return to_http(self.service.predict(request_batch(body, content_type, accept)))


def unpacked_artifact(target: Path, weights_dir: Path | None = None) -> Path:
    """What SageMaker puts in /opt/ml/model: package.py's archive, unpacked."""
    from support.scripts import load_script

    archive = load_script("package").build_archive(target / "dist", weights_dir)
    model_dir = target / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


def request_batch(body: bytes, content_type: str | None, accept: str | None) -> list[dict]:
    headers = {"Content-Type": content_type, "Accept": accept}
    return [{
        "requestId": f"req-{next(_ids)}".encode(),
        "parameters": [{"name": "body", "contentType": content_type or "", "value": body}],
        "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers.items() if v is not None],
    }]


def to_http(message: bytes) -> HttpReply:
    code, text, predictions = decode_predict_response(message)
    if code != 200:
        error = {"code": code, "type": "InternalServerException", "message": text}
        return HttpReply(code, (json.dumps(error, indent=2) + "\n").encode(), "application/json")
    (status, content_type, body), = predictions
    return HttpReply(status, body, content_type)


def decode_predict_response(message: bytes) -> tuple[int, str, list[tuple[int, str, bytes]]]:
    """Read mms.protocol.otf_message_handler.create_predict_response's frame."""
    offset = 0

    def integer() -> int:
        nonlocal offset
        (value,) = struct.unpack_from("!i", message, offset)
        offset += 4
        return value

    def chunk() -> bytes:
        nonlocal offset
        length = integer()
        data = message[offset:offset + max(length, 0)]
        offset += max(length, 0)
        return bytes(data)

    code, text = integer(), chunk().decode()
    predictions = []
    while True:
        request_id_length = integer()
        if request_id_length == -1:  # end of list
            break
        offset += request_id_length
        content_type = chunk().decode()
        status = integer()
        chunk()  # reason phrase
        headers = {chunk().decode(): chunk().decode() for _ in range(integer())}
        predictions.append((status, headers.get("content-type", content_type), chunk()))
    return code, text, predictions
