"""The JSON request/response contract between the pipeline and the captioning endpoint.

Request  (application/json):
    {"image": "<base64 JPEG>",
     "caption_prompt": "",
     "questions": [{"name": "color", "question": "What is the main colour?", "prefix": "the colour is"}],
     "max_new_tokens": 30}
Response (application/json):
    {"caption": "...", "answers": {"color": "..."}, "model_id": "...", "revision": "...", "latency_ms": 123.4}
Error (any status; the toolkit answers 400 for every handler exception):
    {"code": 400, "type": "...", "message": "[refused] The image could not be decoded."}
    A message starting with REFUSED_MARKER is the photo's fault (shown, not retried); any other
    error is a model or GPU fault (retryable). See sagemaker/code/inference.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from pipeline.attributes import AttributeSpec
from pipeline.errors import BadInputError, ServiceError

REFUSED_MARKER = "[refused]"  # set by sagemaker/code/inference.py's RequestError


def build_request(jpeg: bytes, questions: list[AttributeSpec], *, caption_prompt: str = "", max_new_tokens: int = 30) -> bytes:
    payload = {
        "image": base64.b64encode(jpeg).decode("ascii"),
        "caption_prompt": caption_prompt,
        "questions": [{"name": q.name, "question": q.question, "prefix": q.prefix} for q in questions],
        "max_new_tokens": max_new_tokens,
    }
    return json.dumps(payload).encode("utf-8")


def parse_response(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
        caption = str(data["caption"])
        answers = {str(k): str(v) for k, v in dict(data.get("answers") or {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceError("The captioning endpoint sent an answer this dashboard does not understand.") from exc
    return {
        "caption": caption,
        "answers": answers,
        "model_id": str(data.get("model_id") or ""),
        "revision": data.get("revision"),
        "latency_ms": float(data.get("latency_ms") or 0.0),
    }


def endpoint_error(body: bytes | str | None, status: int | None = None) -> BadInputError | ServiceError:
    """The endpoint's error answer (real-time ModelError, async failure file) -> the error a person sees."""
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body or "")
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("error") or text)
    except ValueError:
        pass
    text = text.strip()
    if text.startswith(REFUSED_MARKER):
        reason = text[len(REFUSED_MARKER):].strip().splitlines()[0][:300] if text[len(REFUSED_MARKER):].strip() else "no reason given"
        return BadInputError(f"The captioning model refused this photo: {reason}")
    detail = f" (HTTP {status})" if status else ""
    return ServiceError(f"The captioning model failed on this photo{detail}; it can be retried. If it keeps failing, an admin should check the endpoint logs.")
