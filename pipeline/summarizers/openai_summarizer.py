"""GPT-4o summaries with structured output (SUMMARIZER=openai).

The response schema constrains attribute values to the attribute schema's vocabularies. The 50-word
rule is enforced here, not trusted: validate, one corrective retry, then trim at a sentence boundary.
On rate limits, 5xx and timeouts (after the SDK's own retries) the fallback model is tried.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, Optional

import openai
from pydantic import BaseModel, Field, create_model

from pipeline.attributes import AttributeSchema
from pipeline.errors import ConfigError, ServiceError
from pipeline.models import SummaryRequest, SummaryResult, Usage
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words, trim_to_word_limit

SYSTEM_PROMPT = f"""You write e-commerce product copy for merchandisers.
Use only the facts provided: the image caption, the attribute answers, the photo checks and the merchant's hints.
Never invent a brand, material, size or claim that is not given or visible. If a fact is unknown, leave it out.
Write the summary in plain English, at most {MAX_SUMMARY_WORDS} words, no marketing superlatives.
Title: at most 10 words. Tags: 3 to 8 short lowercase tags.
Attributes: pick a value from the allowed list only when the facts support it, else null."""

TRANSIENT_ERRORS = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)


def build_response_model(schema: AttributeSchema) -> type[BaseModel]:
    """Pydantic model for structured output; each attribute is one of its vocabulary words or null."""
    attribute_fields: dict[str, Any] = {
        spec.name: (Optional[Literal[tuple(spec.vocabulary)]], Field(description=spec.question))  # type: ignore[valid-type]
        for spec in schema.attributes
    }
    attributes_model = create_model("ProductAttributes", **attribute_fields)
    return create_model(
        "ProductSummary",
        title=(str, ...),
        summary=(str, Field(description=f"At most {MAX_SUMMARY_WORDS} words.")),
        tags=(list[str], ...),
        attributes=(attributes_model, ...),
    )


class OpenAISummarizer:
    name = "openai"

    def __init__(self, client: openai.OpenAI, schema: AttributeSchema, *, model: str = "gpt-4o", fallback_model: str | None = "gpt-4o-mini") -> None:
        self.client = client
        self.schema = schema
        self.model = model
        self.fallback_model = fallback_model
        self.response_model = build_response_model(schema)

    @classmethod
    def from_settings(cls, settings, schema: AttributeSchema) -> "OpenAISummarizer":
        if settings.openai_api_key is None:
            raise ConfigError("SUMMARIZER=openai needs OPENAI_API_KEY (or use SUMMARIZER=offline).")
        client = openai.OpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url or None,
            timeout=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
        return cls(client, schema, model=settings.openai_model, fallback_model=settings.openai_fallback_model)

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        messages: list[dict[str, str]] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": json.dumps(facts_for(request), ensure_ascii=False)},
        ]
        usage: list[Usage] = []
        draft, model = self._parse(messages, usage)
        words = count_words(draft.summary)
        if words > MAX_SUMMARY_WORDS:
            messages += [
                {"role": "assistant", "content": draft.model_dump_json()},
                {"role": "user", "content": f"The summary has {words} words. Rewrite it in at most {MAX_SUMMARY_WORDS} words; keep the other fields."},
            ]
            retry, model = self._parse(messages, usage)
            if count_words(retry.summary) < words:
                draft = retry
        attributes = draft.attributes.model_dump()
        return SummaryResult(
            summary=trim_to_word_limit(draft.summary, MAX_SUMMARY_WORDS),
            title=" ".join(draft.title.split()),
            tags=_clean_tags(draft.tags),
            attributes={name: attributes.get(name) for name in self.schema.names()},
            model=model,
            offline=False,
            usage=usage,
        )

    def _parse(self, messages: list[dict[str, str]], usage: list[Usage]) -> tuple[Any, str]:
        """One structured call on the main model, then on the fallback for transient failures."""
        models = [self.model] + ([self.fallback_model] if self.fallback_model and self.fallback_model != self.model else [])
        last: Exception | None = None
        for model in models:
            started = time.perf_counter()
            try:
                completion = self.client.chat.completions.parse(
                    model=model, messages=messages, response_format=self.response_model, temperature=0
                )
            except TRANSIENT_ERRORS as exc:
                last = exc
                continue
            except openai.AuthenticationError as exc:
                raise ConfigError("OpenAI rejected the API key (OPENAI_API_KEY).") from exc
            except openai.APIStatusError as exc:
                raise ServiceError(f"OpenAI refused the request (HTTP {exc.status_code}).") from exc
            except openai.LengthFinishReasonError as exc:
                raise ServiceError("OpenAI's answer was cut off before it finished.") from exc
            latency = (time.perf_counter() - started) * 1000
            if completion.usage is not None:
                usage.append(Usage("llm", completion.model or model, completion.usage.prompt_tokens, completion.usage.completion_tokens, 1, latency))
            message = completion.choices[0].message
            if message.parsed is None:
                raise ServiceError("OpenAI declined to write a summary for this product." + (f" ({message.refusal})" if message.refusal else ""))
            return message.parsed, model
        raise ServiceError(f"OpenAI is unavailable right now ({type(last).__name__}) for {' and '.join(models)}; try again later.")


def facts_for(request: SummaryRequest) -> dict[str, Any]:
    """Everything the model may use, as plain JSON."""
    facts: dict[str, Any] = {
        "caption": request.caption,
        "attributes": {a.name: {"answer": a.value, "in_allowed_list": a.in_vocab} for a in request.attributes},
        "merchant_hints": request.hints,
    }
    if request.sku:
        facts["sku"] = request.sku
    if request.checks is not None:
        facts["photo"] = {"dominant_colours": request.checks.dominant_colors, "warnings": request.checks.warnings()}
    return facts


def _clean_tags(tags: list[str]) -> list[str]:
    seen: list[str] = []
    for tag in tags:
        tag = " ".join(tag.lower().split())
        if tag and tag not in seen:
            seen.append(tag)
    return seen[:12]
