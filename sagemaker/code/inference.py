"""SageMaker inference handler for BLIP-2, loaded by the Hugging Face inference toolkit.

model_fn -> input_fn -> predict_fn -> output_fn, each one job. The model-side captioning code is
`blip_core.py`, copied next to this file by `sagemaker/package.py` (in the repo it is
`pipeline/blip_core.py`, shared with the in-process captioner).

What the toolkit does around these functions (sagemaker-huggingface-inference-toolkit
`HuggingFaceHandlerService.handle`), and why the code below is shaped by it:
- JSON bodies reach `input_fn` as `str` (decoded UTF-8), images as `bytes`.
- Whatever `output_fn` returns is the response body, sent as the request's Accept type
  (application/json when absent or */*). So `output_fn` returns the body only.
- Every exception becomes HTTP 400 with `{"code": 400, "type": ..., "message": str(exc)}`. The
  status cannot tell a bad photo from a model fault, so a refused request's message starts with
  REFUSED_MARKER; a message without it is a model/GPU fault the client may retry.
- If HF_MODEL_ID is set, the toolkit downloads that model itself and never imports this file.
  So the Hub model comes from BLIP2_MODEL_ID / BLIP2_MODEL_REVISION, which the toolkit ignores.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import time
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

import blip_core  # packaged next to this file

REFUSED_MARKER = "[refused]"  # also in pipeline/captioners/contract.py, which parses it
MAX_REQUEST_BYTES = int(os.environ.get("MAX_REQUEST_BYTES", 10 * 1024 * 1024))
MAX_PIXELS = int(os.environ.get("MAX_PIXELS", 50_000_000))
MAX_QUESTIONS = 16
MAX_TEXT_CHARS = 300  # a caption prompt, question or prefix; longer prompts grow memory, not answers
MAX_JSON_DEPTH = 4  # {"questions": [{"name": ...}]} is 3 deep
MAX_NEW_TOKENS = blip_core.MAX_NEW_TOKENS_CAP
DEFAULT_QUESTIONS = [
    blip_core.Question("category", "What kind of product is this?", "a photo of a"),
    blip_core.Question("color", "What is the main colour of the product?", "the colour of the product is"),
    blip_core.Question("material", "What material is the product made of?", "the product is made of"),
    blip_core.Question("pattern", "What pattern does the product have?", "the pattern of the product is"),
    blip_core.Question("style", "What is the style of the product?", "the style of the product is"),
]
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_ACCEPT = ("application/json", "*/*")
# The closing quote is optional: an unterminated string runs to the end in one linear match (with a required
# quote, every quote of `"\\"\\"...` started a scan to the end: quadratic, seconds for a 40 KB body).
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')
JSON_BRACKETS = re.compile(rb"[\[\]{}]")


class RequestError(ValueError):
    """The request is refused: the client shows `reason` to the person, and does not retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{REFUSED_MARKER} {reason}")
        self.reason = reason


@dataclass
class Request:
    image: Image.Image
    questions: list = field(default_factory=lambda: list(DEFAULT_QUESTIONS))
    caption_prompt: str = ""
    max_new_tokens: int = blip_core.DEFAULT_MAX_NEW_TOKENS


def model_fn(model_dir: str, context=None):
    """Weights packaged in model_dir, else BLIP2_MODEL_ID at the pinned BLIP2_MODEL_REVISION. Once per worker."""
    model_id = os.environ.get("BLIP2_MODEL_ID", "")
    revision = os.environ.get("BLIP2_MODEL_REVISION") or None
    packaged = os.path.isfile(os.path.join(model_dir, "config.json"))
    if not packaged and not (model_id and revision):
        raise RuntimeError("No model: package weights into the model data, or set BLIP2_MODEL_ID and a pinned BLIP2_MODEL_REVISION.")
    load_in_8bit = os.environ.get("LOAD_IN_8BIT", "false").lower() in ("1", "true", "yes")
    loaded = blip_core.load_captioning_model(model_dir if packaged else model_id, revision=None if packaged else revision, load_in_8bit=load_in_8bit)
    loaded.model_id, loaded.revision = (model_id or loaded.model_id), revision  # what was deployed, not a local path
    return loaded


def input_fn(request_body, request_content_type: str, context=None) -> Request:
    """Raw image bytes (default prompts) or the pipeline's JSON contract -> Request."""
    body = request_body.encode("utf-8") if isinstance(request_body, str) else bytes(request_body)
    if len(body) > MAX_REQUEST_BYTES:
        raise RequestError(f"The request is larger than {MAX_REQUEST_BYTES // (1024 * 1024)} MB.")
    content_type = (request_content_type or "").split(";")[0].strip().lower()
    if content_type in IMAGE_CONTENT_TYPES:
        return Request(image=decode_image(body))
    if content_type == "application/json":
        return parse_json_request(body)
    raise RequestError(f"Unsupported content type {request_content_type!r}; send image/jpeg, image/png, application/x-image or application/json.")


def predict_fn(request: Request, model, context=None) -> dict:
    """Caption + every attribute answer for one image in one batched generate."""
    started = time.perf_counter()
    answers = blip_core.caption_and_answer(
        model, request.image, request.questions, caption_prompt=request.caption_prompt, max_new_tokens=request.max_new_tokens
    )
    return {
        "caption": answers.caption,
        "answers": answers.answers,
        "model_id": model.model_id,
        "revision": model.revision,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def output_fn(prediction: dict, accept: str = "application/json", context=None) -> str:
    """The JSON body {caption, answers, model_id, revision, latency_ms}; the toolkit sends it as `accept`."""
    if (accept or "application/json").split(";")[0].strip().lower() not in JSON_ACCEPT:
        raise RequestError(f"Unsupported Accept {accept!r}; this endpoint answers application/json.")
    return json.dumps(prediction)


def decode_image(data: bytes) -> Image.Image:
    if not data:
        raise RequestError("The image is empty.")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise RequestError(f"The image is larger than {MAX_PIXELS // 1_000_000} megapixels.")
        image.load()
    except RequestError:
        raise
    except Image.DecompressionBombError as exc:
        raise RequestError("The image is too large to decode safely.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RequestError("The image could not be decoded.") from exc
    return image.convert("RGB")


def parse_json_request(body: bytes) -> Request:
    if json_depth(body) > MAX_JSON_DEPTH:
        raise RequestError(f"The JSON request is nested more than {MAX_JSON_DEPTH} levels deep.")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RequestError("The request body is not valid JSON.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        raise RequestError('The JSON request needs "image": a base64-encoded JPEG or PNG.')
    try:
        image_bytes = base64.b64decode(data["image"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError('"image" is not valid base64.') from exc
    questions = parse_questions(data["questions"]) if "questions" in data else DEFAULT_QUESTIONS
    max_new_tokens = data.get("max_new_tokens", blip_core.DEFAULT_MAX_NEW_TOKENS)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise RequestError(f'"max_new_tokens" must be a whole number from 1 to {MAX_NEW_TOKENS}.')
    return Request(
        image=decode_image(image_bytes),
        questions=questions,
        caption_prompt=bounded_text(data.get("caption_prompt", ""), "caption_prompt"),
        max_new_tokens=max_new_tokens,
    )


def parse_questions(raw) -> list:
    shape = '"questions" must be a list of {"name", "question", "prefix"} objects.'
    if not isinstance(raw, list) or not all(isinstance(q, dict) and "name" in q and "question" in q for q in raw):
        raise RequestError(shape)
    if len(raw) > MAX_QUESTIONS:
        raise RequestError(f"At most {MAX_QUESTIONS} questions per request ({len(raw)} sent).")
    return [
        blip_core.Question(bounded_text(q["name"], "name"), bounded_text(q["question"], "question"), bounded_text(q.get("prefix", ""), "prefix"))
        for q in raw
    ]


def bounded_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f'"{name}" must be text.')
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(f'"{name}" is longer than {MAX_TEXT_CHARS} characters.')
    return value


def json_depth(body: bytes) -> int:
    """Deepest [ / { nesting outside strings, counted before parsing (a deep document exhausts the parser)."""
    depth = deepest = 0
    for bracket in JSON_BRACKETS.findall(JSON_STRING.sub(b"", body)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest
