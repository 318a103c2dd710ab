"""A vision LLM as the captioner (CAPTIONER=openai-vision): one OpenAI chat-completions request per photo.

The normalized JPEG (longest side MAX_SIDE, 768 px by default) goes inline as a base64 data URL with
`detail: "low"` (OPENAI_VISION_DETAIL), and the model answers the caption and every attribute question
in one structured-output JSON object: `{"caption": "...", "answers": {"color": "...", ...}}`. Answers are
raw text, like BLIP-2's; `pipeline.attributes` maps them onto the vocabulary exactly as it does for
BLIP-2 (each question carries its allowed words as a hint to the model).

Token cost of the photo (OpenAI's image-token rule, "Calculating costs" in
https://platform.openai.com/docs/guides/images-vision, as read 2025-06 and not re-checked from this
offline build machine): with detail "low" a photo costs a fixed number of input tokens whatever its
size — 85 for gpt-4o, 2,833 for gpt-4o-mini (gpt-4o-mini is billed more image tokens per photo; at
gpt-4o's launch price of $5 / 1M a photo cost the same on both). At the prices in
pipeline/admin/prices.json (2025-06) that is $0.000213 (gpt-4o) / $0.000425 (gpt-4o-mini) for the
photo; the instructions, the questions with their suggested words and the JSON schema (~2,000
characters, ~500 tokens at 4 characters a token) and the answer (~60 tokens) come on top: about
$0.0021 per photo on gpt-4o and $0.0005 on gpt-4o-mini. The usage rows record what OpenAI actually
billed (its `usage` block), and the Admin comparison (pipeline/batches/comparison.py) prices those.

Failures follow the OpenAI summarizer (pipeline/summarizers/openai_summarizer.py, whose classification
is reused): rate limits, 5xx, 408/409 and connection errors are retried with backoff (Retry-After
honoured) within one deadline per photo (OPENAI_VISION_DEADLINE_S), each request's timeout cut to the
time left; quota, key, permission, unknown model and other 4xx are never retried; a refusal or the
content filter fails that photo (BadInputError); an answer cut off or not the requested JSON fails that
photo (ServiceError, retryable). Every answered request is one paid call and leaves exactly one usage
row (kind `vision`: a paid caption call on the Health page, the model's token price month to date) with its tokens: on success in the returned Usage, on failure attached to the error
(`pipeline.errors.usage_of`), so the runner records it with the failed item. There is no fallback model:
a caption from another model would be cached under this model's id.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Callable

import openai

from pipeline.attributes import AttributeSpec
from pipeline.errors import BadInputError, ConfigError, ServiceError, UserFacingError, attach_usage
from pipeline.models import CaptionResult, NormalizedImage, Usage
from pipeline.summarizers.openai_summarizer import QUOTA_MESSAGE, _code, _is_quota, _is_transient, _read_timeout, _retry_wait, _short

# Input tokens one detail-"low" image costs, per model (source and date in the module docstring).
LOW_DETAIL_IMAGE_TOKENS = {"gpt-4o": 85, "gpt-4o-mini": 2833}
MODEL_ID_PREFIX = "openai-vision:"

SYSTEM_PROMPT = """You caption product photos for an e-commerce catalogue.
caption: one plain sentence saying what the product in the photo is and what it looks like (colour, material, pattern, shape).
Describe only what is visible; never invent a brand, size or claim. No marketing words.
answers: for each question, a few words answering it from the photo alone; prefer one of the suggested words
when one fits; answer "unknown" when the photo does not show it."""


def response_format(questions: list[AttributeSpec]) -> dict[str, Any]:
    """Structured output (strict JSON schema): the caption and one string answer per question."""
    names = [q.name for q in questions]
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "photo_caption",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "caption": {"type": "string"},
                    "answers": {"type": "object", "properties": {name: {"type": "string"} for name in names},
                                "required": names, "additionalProperties": False},
                },
                "required": ["caption", "answers"],
                "additionalProperties": False,
            },
        },
    }


def build_messages(jpeg: bytes, questions: list[AttributeSpec], detail: str = "low") -> list[dict[str, Any]]:
    asked = {q.name: f"{q.question} (suggested: {', '.join(q.vocabulary)})" for q in questions}
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [
            {"type": "text", "text": json.dumps({"questions": asked}, ensure_ascii=False)},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"), "detail": detail}},
        ]},
    ]


class OpenAIVisionCaptioner:
    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str = "gpt-4o-mini",
        detail: str = "low",
        max_retries: int | None = None,
        request_timeout_s: float | None = None,
        deadline_s: float = 60.0,
        min_request_s: float = 1.0,
        max_output_tokens: int = 400,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_retries = client.max_retries if max_retries is None else max(0, max_retries)
        self.request_timeout_s = request_timeout_s or _read_timeout(client.timeout)
        self.client = client.with_options(max_retries=0)  # retried here, where quota is told apart from rate limits
        self.model = model
        self.detail = detail
        self.deadline_s = deadline_s
        self.min_request_s = min(min_request_s, deadline_s)
        self.max_output_tokens = max_output_tokens
        self.clock = clock
        self.sleep = sleep
        self.model_id = f"{MODEL_ID_PREFIX}{model}"  # the caption-cache key and the items' caption model

    @classmethod
    def from_settings(cls, settings) -> "OpenAIVisionCaptioner":
        if settings.openai_api_key is None:
            raise ConfigError("CAPTIONER=openai-vision needs OPENAI_API_KEY (or use CAPTIONER=local).")
        client = openai.OpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url or None,
            timeout=settings.openai_timeout_s,
            max_retries=0,
        )
        return cls(client, model=settings.openai_vision_model, detail=settings.openai_vision_detail,
                   max_retries=settings.openai_max_retries, request_timeout_s=settings.openai_timeout_s,
                   deadline_s=settings.openai_vision_deadline_s)

    def warm_up(self) -> None:
        """Nothing to load; a bad key or model fails the photos with a sentence saying so."""

    def caption(self, image: NormalizedImage, questions: list[AttributeSpec]) -> tuple[CaptionResult, Usage]:
        usage: list[Usage] = []
        try:
            return self._caption(image, questions, usage)
        except Exception as exc:  # a paid but unusable answer travels with the error
            raise attach_usage(exc, usage)

    def _caption(self, image: NormalizedImage, questions: list[AttributeSpec], usage: list[Usage]) -> tuple[CaptionResult, Usage]:
        body = {"model": self.model, "messages": build_messages(image.jpeg, questions, self.detail),
                "response_format": response_format(questions), "temperature": 0, "max_tokens": self.max_output_tokens}
        started = self.clock()
        completion = self._complete(body, started + self.deadline_s)
        latency = (self.clock() - started) * 1000
        billed = getattr(completion, "usage", None)
        call = Usage("vision", getattr(completion, "model", None) or self.model,
                     (billed.prompt_tokens or 0) if billed else 0, (billed.completion_tokens or 0) if billed else 0, 1, latency)
        usage.append(call)
        caption, answers = self._read(completion, questions)
        return CaptionResult(caption=caption, answers=answers, model_id=self.model_id, latency_ms=latency), call

    def _complete(self, body: dict[str, Any], deadline: float) -> Any:
        last: Exception | None = None
        for attempt in range(1 + self.max_retries):
            if attempt:
                wait = _retry_wait(last, attempt)
                if deadline - self.clock() - wait < self.min_request_s:
                    break
                self.sleep(wait)
            remaining = deadline - self.clock()
            if remaining <= 0 or (attempt and remaining < self.min_request_s):
                break
            try:
                return self.client.chat.completions.create(**body, timeout=min(self.request_timeout_s, remaining))
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                last = exc
            except openai.APIStatusError as exc:
                if not _is_transient(exc):
                    raise self._refused(exc) from exc
                last = exc
            except openai.OpenAIError as exc:
                raise ServiceError(f"OpenAI's answer for this photo could not be read ({type(exc).__name__}); retry the item later.") from exc
        raise self._gave_up(last, deadline)

    def _refused(self, exc: openai.APIStatusError) -> UserFacingError:
        """An error answer retrying will not fix (classified as the summarizer classifies it)."""
        status, code, model = exc.status_code, exc.code, self.model
        if _is_quota(exc):
            return ConfigError(QUOTA_MESSAGE)
        if status == 401:  # the server's message may echo part of the key: not shown
            return ConfigError("OpenAI rejected the API key (OPENAI_API_KEY) — an admin must set a valid key, then retry the failed items.")
        if status in (403, 404):
            return ConfigError(f"OpenAI does not let this API key use {model} (HTTP {status}{_code(code)}) — an admin must fix "
                               "OPENAI_VISION_MODEL (or OPENAI_BASE_URL).")
        if code == "content_filter":
            return BadInputError("OpenAI's content filter blocked this photo; check the photo, or caption it by hand.")
        if status == 400 and code in ("invalid_image", "invalid_image_format", "image_parse_error", "invalid_image_url"):
            return BadInputError(f"OpenAI could not read this photo (HTTP 400{_code(code)}); check the photo.")
        if status == 400:
            return ConfigError(f"OpenAI refused the request as invalid (HTTP 400{_code(code)}: {_short(exc.message)}) — an admin "
                               f"should check that {model} reads images and supports structured outputs (OPENAI_VISION_MODEL).")
        return ServiceError(f"OpenAI refused the request (HTTP {status}{_code(code)}); retry the item later or ask an admin.")

    def _gave_up(self, last: Exception | None, deadline: float) -> ServiceError:
        model = self.model
        if isinstance(last, openai.APIConnectionError) and not isinstance(last, openai.APITimeoutError):
            message = f"Could not reach OpenAI ({model}); check the network or OPENAI_BASE_URL, then retry the failed items."
        elif isinstance(last, openai.RateLimitError):
            message = f"OpenAI is rate-limiting this account right now ({model}); retry the failed items in a few minutes or lower CONCURRENCY."
        elif isinstance(last, openai.APIStatusError):
            message = f"OpenAI is unavailable right now (HTTP {last.status_code} from {model}); retry the failed items later."
        else:
            message = f"OpenAI did not answer in time ({model}); the photo was not captioned — retry the failed items later."
        if self.clock() + self.min_request_s > deadline:
            message += f" Gave up after {self.deadline_s:g} s (OPENAI_VISION_DEADLINE_S)."
        return ServiceError(message)

    def _read(self, completion: Any, questions: list[AttributeSpec]) -> tuple[str, dict[str, str]]:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise self._unusable("was empty")
        choice = choices[0]
        message = choice.message
        if choice.finish_reason == "content_filter":
            raise BadInputError("OpenAI's content filter blocked this photo; check the photo, or caption it by hand.")
        if getattr(message, "refusal", None):
            raise BadInputError(f"OpenAI declined to describe this photo (\"{_short(message.refusal)}\"); check the photo, or caption it by hand.")
        if choice.finish_reason == "length":
            raise self._unusable("was cut off before it finished")
        try:
            data = json.loads(message.content or "")
        except ValueError:
            raise self._unusable("was not JSON") from None
        caption = data.get("caption") if isinstance(data, dict) else None
        answers = data.get("answers") if isinstance(data, dict) else None
        if not isinstance(caption, str) or not caption.strip() or not isinstance(answers, dict):
            raise self._unusable("did not follow the requested JSON format")
        raw = {q.name: " ".join(str(answers.get(q.name) or "").split()) for q in questions}
        return " ".join(caption.split()), {name: ("" if value.lower() == "unknown" else value) for name, value in raw.items()}

    def _unusable(self, problem: str) -> ServiceError:
        return ServiceError(f"OpenAI's answer for this photo {problem} ({self.model}); the photo was not captioned — retry the item.")


def low_detail_image_tokens(model: str) -> int | None:
    """Input tokens one detail-"low" photo costs on `model` (None: not in the published table we carry)."""
    for name in sorted(LOW_DETAIL_IMAGE_TOKENS, key=len, reverse=True):  # gpt-4o-mini before gpt-4o
        if model == name or model.startswith(name + "-"):
            return LOW_DETAIL_IMAGE_TOKENS[name]
    return None
