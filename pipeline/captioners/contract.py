"""The JSON request/response contract between the pipeline and the captioning endpoint.

Request  (application/json):
    {"image": "<base64 JPEG>",
     "caption_prompt": "",
     "questions": [{"name": "color", "question": "What is the main colour?", "prefix": "the colour is"}],
     "max_new_tokens": 30}
Response (application/json):
    {"caption": "...", "answers": {"color": "..."}, "model_id": "...", "revision": "...", "latency_ms": 123.4}
"""

from __future__ import annotations

import base64
import json
from typing import Any

from pipeline.attributes import AttributeSpec
from pipeline.errors import ServiceError


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
