"""SageMaker inference handler for BLIP-2 (PyTorch / Hugging Face inference-toolkit contract).

model_fn -> input_fn -> predict_fn -> output_fn, each one job. The model-side captioning code is
`blip_core.py`, copied next to this file by `sagemaker/package.py` (in the repo it is
`pipeline/blip_core.py`, shared with the in-process captioner).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import time
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

try:
    import blip_core  # packaged next to this file
except ImportError:  # running from the repository (serve_local.py, tests)
    from pipeline import blip_core

MAX_REQUEST_BYTES = int(os.environ.get("MAX_REQUEST_BYTES", 10 * 1024 * 1024))
MAX_PIXELS = int(os.environ.get("MAX_PIXELS", 50_000_000))
DEFAULT_QUESTIONS = [
    blip_core.Question("category", "What kind of product is this?", "a photo of a"),
    blip_core.Question("color", "What is the main colour of the product?", "the colour of the product is"),
    blip_core.Question("material", "What material is the product made of?", "the product is made of"),
    blip_core.Question("pattern", "What pattern does the product have?", "the pattern of the product is"),
    blip_core.Question("style", "What is the style of the product?", "the style of the product is"),
]
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")


class RequestError(ValueError):
    """A bad request: answered as a 4xx with this plain message, never a stack trace."""

    status = 400


@dataclass
class Request:
    image: Image.Image
    questions: list = field(default_factory=lambda: list(DEFAULT_QUESTIONS))
    caption_prompt: str = ""
    max_new_tokens: int = blip_core.DEFAULT_MAX_NEW_TOKENS


def model_fn(model_dir: str, context=None):
    """Weights packaged in model_dir, else HF_MODEL_ID at the pinned HF_MODEL_REVISION. Loaded once per worker."""
    source = model_dir if os.path.isfile(os.path.join(model_dir, "config.json")) else os.environ.get("HF_MODEL_ID")
    if not source:
        raise RuntimeError("No model: package weights into model.tar.gz or set HF_MODEL_ID (and HF_MODEL_REVISION).")
    revision = None if source == model_dir else os.environ.get("HF_MODEL_REVISION")
    load_in_8bit = os.environ.get("LOAD_IN_8BIT", "false").lower() in ("1", "true", "yes")
    return blip_core.load_captioning_model(source, revision=revision, load_in_8bit=load_in_8bit)


def input_fn(request_body, request_content_type: str, context=None) -> Request:
    """Raw image bytes (default prompts) or the pipeline's JSON contract -> Request."""
    body = request_body if isinstance(request_body, (bytes, bytearray)) else str(request_body).encode("utf-8")
    if len(body) > MAX_REQUEST_BYTES:
        raise RequestError(f"The request is larger than {MAX_REQUEST_BYTES // (1024 * 1024)} MB.")
    content_type = (request_content_type or "").split(";")[0].strip().lower()
    if content_type in IMAGE_CONTENT_TYPES:
        return Request(image=decode_image(bytes(body)))
    if content_type == "application/json":
        return parse_json_request(bytes(body))
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


def output_fn(prediction: dict, accept: str = "application/json", context=None):
    """JSON {caption, answers, model_id, revision, latency_ms}."""
    return json.dumps(prediction), "application/json"


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
    questions = DEFAULT_QUESTIONS
    if "questions" in data:
        try:
            questions = [blip_core.Question(str(q["name"]), str(q["question"]), str(q.get("prefix", ""))) for q in data["questions"]]
        except (TypeError, KeyError) as exc:
            raise RequestError('"questions" must be a list of {"name", "question", "prefix"} objects.') from exc
    try:
        max_new_tokens = int(data.get("max_new_tokens", blip_core.DEFAULT_MAX_NEW_TOKENS))
    except (TypeError, ValueError) as exc:
        raise RequestError('"max_new_tokens" must be a whole number.') from exc
    return Request(
        image=decode_image(image_bytes),
        questions=questions,
        caption_prompt=str(data.get("caption_prompt", "")),
        max_new_tokens=max_new_tokens,
    )
