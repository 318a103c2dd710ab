"""GPT-4o summaries with structured output (SUMMARIZER=openai).

The response schema constrains attribute values to the attribute schema's vocabularies. The 50-word
rule is enforced here, not trusted: validate, one corrective retry, then trim at a sentence boundary.

Failures (each ends as one plain message in the item's failed row, never "Unexpected problem"):
- rate limits (429), 5xx, 408/409 and connection errors are retried on the same model with backoff
  (`max_retries` per model), then the fallback model is tried; a timeout goes straight to the fallback;
- quota/billing, bad key, permission, unknown model and other 4xx are ConfigError/BadInputError and are
  never retried: not by the SDK (its own retries are off, it would retry `insufficient_quota` as a
  rate limit), not here, not on the fallback model (same account);
- content filter and refusals are that item's own problem (BadInputError), not retried;
- a truncated or invalid JSON answer gets one corrective retry, then fails the item (ServiceError);
- an attribute value outside its vocabulary is dropped (null); the item's stored attributes come from
  the captioner's answers, which `pipeline.attributes` keeps and flags.
Everything, retries, fallback and corrective retry included, fits in one deadline per summarize call
(`deadline_s`); each request's timeout is cut to the time left. Paid calls (answers that carried
usage) are in the result's `usage`, or, when the call fails, on the exception (`pipeline.errors.usage_of`).
"""

from __future__ import annotations

import copy

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

import openai
from openai.lib._parsing import type_to_response_format_param  # what `chat.completions.parse` itself sends
from pydantic import BaseModel, Field, ValidationError, create_model

from pipeline.attributes import AttributeSchema
from pipeline.errors import BadInputError, ConfigError, ServiceError, UserFacingError, attach_usage
from pipeline.models import SummaryRequest, SummaryResult, Usage
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words, limit_text, measure, trim_to_language_limit, trim_to_word_limit
from pipeline.wordlimit import SEO_LIMITS, cut_to_characters, marketing_words_in, without_marketing

SYSTEM_PROMPT = f"""You write e-commerce product copy for merchandisers.
Use only the facts provided: the image caption, the attribute answers, the photo checks and the merchant's hints.
Never invent a brand, material, size or claim that is not given or visible. If a fact is unknown, leave it out.
Write the summary in plain English, at most {MAX_SUMMARY_WORDS} words, no marketing superlatives.
Title: at most 10 words. Tags: 3 to 8 short lowercase tags.
Attributes: pick a value from the allowed list only when the facts support it, else null."""
# SEO_FIELDS_BY=model only (issue 19): appended to SYSTEM_PROMPT (one newline) when the model writes the SEO fields;
# with `template` (the default) neither these lines nor the schema's three fields are sent (they cost ~199 input and
# up to ~102 output tokens per item, see pipeline/admin/costs.py) and the offline template fills the fields after the answer.
SEO_PROMPT = f"""SEO title: at most {SEO_LIMITS["seo_title"]} characters, the product's name and its main facts.
Meta description: at most {SEO_LIMITS["meta_description"]} characters, a plain description for search results.
Alt text: at most {SEO_LIMITS["alt_text"]} characters describing what the photo shows (the product, its colour, material, \
setting) for someone who cannot see it; no marketing words, no prices, no calls to action such as "buy" or "shop"."""
SEO_FIELDS_BY = ("template", "model")

# The merchant's hints a summary may use. A CSV's feed columns (link, price, availability, size; see
# pipeline/ingest/sources.py HINT_COLUMNS) go to the product feeds, not into the prompt: a price or a stock
# state in the copy goes stale, a link is no product fact, and a size names one variant of many.
SUMMARY_HINTS = ("title", "brand", "category", "notes", "condition", "gender", "age_group")

# Kept for callers that classify OpenAI errors themselves.
TRANSIENT_ERRORS = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)

QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 20.0  # a server asking for a longer wait: try the fallback model instead

QUOTA_MESSAGE = ("OpenAI account is out of credit/quota (insufficient_quota) — an admin must add credit or raise the "
                 "usage limit in the OpenAI billing settings (or set another OPENAI_API_KEY), then retry the failed items.")
CONTENT_FILTER_MESSAGE = ("OpenAI's content filter blocked the summary for this product; check the photo and the hints, "
                          "or write the summary by hand.")
TOO_LONG_MESSAGE = "This product's caption and hints are too long for OpenAI; shorten the hints, then retry the item."


def build_response_model(schema: AttributeSchema, languages: tuple[str, ...] = (), seo_fields: bool = False,
                         required: frozenset[str] = frozenset()) -> type[BaseModel]:
    """Pydantic model for structured output; each attribute is one of its vocabulary words or null (never null when
    the attribute is marked required, or is in `required`: the ones the item's category requires); with
    `languages`, a `summaries` object holding one summary per extra language (issue 19); with `seo_fields`
    (SEO_FIELDS_BY=model), seo_title / meta_description / alt_text too."""
    attribute_fields: dict[str, Any] = {
        spec.name: ((Literal[tuple(spec.vocabulary)] if spec.required or spec.name in required  # type: ignore[valid-type]
                     else Optional[Literal[tuple(spec.vocabulary)]]),  # type: ignore[valid-type]
                    Field(description=spec.question))  # required (taxonomy): one of the values, never null
        for spec in schema.attributes
    }
    attributes_model = create_model("ProductAttributes", **attribute_fields)
    extra: dict[str, Any] = {}
    if languages:
        from pipeline.admin.brand import LANGUAGES

        extra["summaries"] = (create_model("LanguageSummaries", **{
            code: (str, Field(description=f"The summary in {LANGUAGES.get(code, code)}, at most {limit_text(code)}."))
            for code in languages}), ...)
    # SEO and accessibility (issue 19), SEO_FIELDS_BY=model only: required in the schema sent (strict mode lists every
    # property); the default only reads an answer without them (left empty, see _seo_fields). Without them the schema
    # is the one sent before the fields existed, byte for byte.
    seo: dict[str, Any] = {} if not seo_fields else {
        "seo_title": (str, Field("", description=f"At most {SEO_LIMITS['seo_title']} characters.")),
        "meta_description": (str, Field("", description=f"At most {SEO_LIMITS['meta_description']} characters.")),
        "alt_text": (str, Field("", description=f"At most {SEO_LIMITS['alt_text']} characters; what the photo shows, "
                                                "no marketing, prices or calls to action.")),
    }
    return create_model(
        "ProductSummary",
        title=(str, ...),
        summary=(str, Field(description=f"At most {MAX_SUMMARY_WORDS} words.")),
        tags=(list[str], ...),
        attributes=(attributes_model, ...),
        **seo,
        **extra,
    )


class _Unusable(Exception):
    """An answer that arrived (and was paid for) but cannot be used: cut off or not the requested JSON."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass
class _Call:
    """One summarize call: its deadline, the paid calls so far, the models tried."""

    started: float
    deadline: float
    clock: Callable[[], float]
    usage: list[Usage] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    corrections_left: int = 1
    requests: int = 0
    request: SummaryRequest | None = None  # its style guide and languages (issue 19)
    required: frozenset[str] = frozenset()  # attributes its category requires (answered, never null)

    @property
    def languages(self) -> tuple[str, ...]:
        return self.request.languages if self.request is not None else ()

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def tried(self, model: str) -> None:
        if model not in self.models:
            self.models.append(model)

    def models_text(self) -> str:
        return " and ".join(self.models) or "no model"


class OpenAISummarizer:
    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        schema: AttributeSchema,
        *,
        model: str = "gpt-4o",
        fallback_model: str | None = "gpt-4o-mini",
        max_retries: int | None = None,
        request_timeout_s: float | None = None,
        deadline_s: float = 60.0,
        min_request_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        seo_fields_by: str = "template",
    ) -> None:
        """`max_retries` / `request_timeout_s` default to the client's own settings; the client's SDK
        retries are switched off and done here instead (see the module docstring). `min_request_s`:
        no request is started with less time than this left before the deadline. `seo_fields_by`
        (SEO_FIELDS_BY): `template` fills the SEO fields with the offline template after the answer (not asked
        for, no tokens); `model` asks for them in the prompt and schema (corrective request, then cut)."""
        if seo_fields_by not in SEO_FIELDS_BY:
            raise ConfigError(f"SEO_FIELDS_BY={seo_fields_by!r}: choose one of {', '.join(SEO_FIELDS_BY)}.")
        self.seo_by_model = seo_fields_by == "model"
        self.max_retries = client.max_retries if max_retries is None else max(0, max_retries)
        self.request_timeout_s = request_timeout_s or _read_timeout(client.timeout)
        self.client = client.with_options(max_retries=0)
        self.schema = schema
        self.model = model
        self.fallback_model = fallback_model
        self.deadline_s = deadline_s
        self.min_request_s = min(min_request_s, deadline_s)
        self.clock = clock
        self.sleep = sleep
        self.response_model = build_response_model(schema, seo_fields=self.seo_by_model)
        self.response_format = type_to_response_format_param(self.response_model)
        self._by_languages: dict[tuple[str, ...], tuple[type[BaseModel], Any]] = {(): (self.response_model, self.response_format)}

    def response_for(self, languages: tuple[str, ...] = (), required: frozenset[str] = frozenset()) -> tuple[type[BaseModel], Any]:
        """(response model, response_format) for a request with these extra languages and category-required attributes."""
        required = frozenset(required) - {spec.name for spec in self.schema.attributes if spec.required}
        key: Any = languages if not required else (languages, tuple(sorted(required)))
        if key not in self._by_languages:
            model = build_response_model(self.schema, languages, seo_fields=self.seo_by_model, required=required)
            self._by_languages[key] = (model, type_to_response_format_param(model))
        return self._by_languages[key]

    def required_for(self, request: SummaryRequest) -> frozenset[str]:
        """The attributes the taxonomy requires for the request's category (the captioner's category answer, else the
        CSV's category hint, when it is one of the categories): the structured output must answer them, never null."""
        if not self.schema.categories or "category" not in self.schema.names():
            return frozenset()
        categories = self.schema.spec("category").vocabulary
        answered = next((a.value for a in request.attributes if a.name == "category" and a.in_vocab), None)
        hinted = (request.hints.get("category") or "").strip().lower()
        category = answered if answered in categories else hinted if hinted in categories else None
        return frozenset(self.schema.required_for(category) & self.schema.applies(category))

    def with_schema(self, schema: AttributeSchema) -> "OpenAISummarizer":
        """This summarizer (same client, models, deadlines) answering with another attribute taxonomy version:
        the structured-output schema follows it (pipeline/admin/taxonomy.py)."""
        twin = copy.copy(self)
        twin.schema = schema
        twin.response_model = build_response_model(schema, seo_fields=self.seo_by_model)
        twin.response_format = type_to_response_format_param(twin.response_model)
        twin._by_languages = {(): (twin.response_model, twin.response_format)}
        return twin

    @classmethod
    def from_settings(cls, settings, schema: AttributeSchema) -> "OpenAISummarizer":
        if settings.openai_api_key is None:
            raise ConfigError("SUMMARIZER=openai needs OPENAI_API_KEY (or use SUMMARIZER=offline).")
        client = openai.OpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url or None,
            timeout=settings.openai_timeout_s,
            max_retries=0,  # retried here, where quota is told apart from rate limits and the deadline is kept
        )
        return cls(client, schema, model=settings.openai_model, fallback_model=settings.openai_fallback_model,
                   max_retries=settings.openai_max_retries, request_timeout_s=settings.openai_timeout_s,
                   deadline_s=settings.openai_deadline_s, seo_fields_by=settings.seo_fields_by)

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        now = self.clock()
        call = _Call(started=now, deadline=now + self.deadline_s, clock=self.clock, request=request,
                     required=self.required_for(request))
        try:
            return self._summarize(request, call)
        except Exception as exc:  # whatever failed, the calls already paid for travel with the error
            raise attach_usage(exc, call.usage)

    def messages_for(self, request: SummaryRequest) -> list[dict[str, str]]:
        """build_messages for this summarizer: the SEO lines in the system prompt only with SEO_FIELDS_BY=model."""
        return build_messages(request, seo_fields=self.seo_by_model)

    def _summarize(self, request: SummaryRequest, call: _Call) -> SummaryResult:
        messages = self.messages_for(request)
        completion, model = self._complete(messages, call)
        return self._finish(messages, completion, model, call)

    def request_body(self, messages: list[dict[str, str]], model: str, languages: tuple[str, ...] = (),
                     required: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The chat-completions request for `messages` (structured output, temperature 0): sent as is here,
        and as the body of each line of an OpenAI Batch API file (pipeline.summarizers.openai_batch)."""
        return {"model": model, "messages": messages, "response_format": self.response_for(languages, required)[1], "temperature": 0}

    def summarize_answer(self, request: SummaryRequest, completion: Any, model: str, usage: list[Usage]) -> SummaryResult:
        """The result from a completion that was obtained elsewhere (a Batch API output line, already paid:
        `usage`), through the same checks as `summarize`: refusal / content filter, schema, vocabulary, and the
        50-word rule with its one corrective request (sent here, real-time, within OPENAI_DEADLINE_S)."""
        now = self.clock()
        call = _Call(started=now, deadline=now + self.deadline_s, clock=self.clock, usage=list(usage), request=request,
                     required=self.required_for(request))
        call.tried(model)
        try:
            return self._finish(self.messages_for(request), completion, model, call)
        except Exception as exc:
            raise attach_usage(exc, call.usage)

    def _finish(self, messages: list[dict[str, str]], completion: Any, model: str, call: _Call) -> SummaryResult:
        """From the first answer to the result: read it (one corrective retry when unusable), hold the word limit."""
        draft, model = self._answer(messages, completion, model, call)
        problems = _problems(draft, call)
        if problems and call.corrections_left:
            call.corrections_left -= 1
            messages = messages + [
                {"role": "assistant", "content": draft.model_dump_json()},
                {"role": "user", "content": " ".join(problems) + " Rewrite accordingly; keep the other fields."},
            ]
            try:
                completion, retry_model = self._complete(messages, call, first_model=model)
                retry = self._read(completion, call.languages, call.required)
            except (UserFacingError, _Unusable):
                retry = None  # the draft is usable: trim it rather than fail the item
            if retry is not None and _badness(retry, call) < _badness(draft, call):
                draft, model = retry, retry_model
        style = call.request.style if call.request is not None else None
        banned = _banned(draft, style, call.languages)
        if banned:
            raise BadInputError(f"The summary still used {', '.join(repr(w) for w in banned)} from the style guide's words "
                                f"to avoid after it was asked again ({call.models_text()}); retry the item or write the "
                                "summary by hand.")
        attributes = draft.attributes.model_dump()
        extra = draft.summaries.model_dump() if call.languages else {}
        summary = trim_to_word_limit(draft.summary, MAX_SUMMARY_WORDS)
        return SummaryResult(
            summary=summary,
            title=" ".join(draft.title.split()),
            tags=_clean_tags(draft.tags),
            attributes={name: attributes.get(name) for name in self.schema.names()},
            model=model,
            offline=False,
            usage=list(call.usage),
            summaries={code: trim_to_language_limit(" ".join(str(extra.get(code) or "").split()), code) for code in call.languages},
            **(_seo_fields(draft) if self.seo_by_model else _template_seo_fields(draft, summary, call)),
        )

    def _answer(self, messages: list[dict[str, str]], completion: Any, model: str, call: _Call) -> tuple[Any, str]:
        """A usable structured answer from `completion`; a cut-off or malformed one gets one corrective retry."""
        try:
            return self._read(completion, call.languages, call.required), model
        except _Unusable as first:
            problem = first.problem
        if not call.corrections_left:
            raise ServiceError(_unusable_message(problem, call))
        call.corrections_left -= 1
        retry_messages = messages + [{"role": "user", "content": (
            f"Your previous answer {problem}. Answer again with one complete JSON object that follows the schema; "
            f"keep the summary under {MAX_SUMMARY_WORDS} words.")}]
        try:
            completion, model = self._complete(retry_messages, call, first_model=model)
        except ServiceError as exc:
            raise ServiceError(_unusable_message(problem, call) + f" Asking again failed too: {exc}") from exc
        try:
            return self._read(completion, call.languages, call.required), model
        except _Unusable as second:
            raise ServiceError(_unusable_message(second.problem, call, retried=True)) from second

    def _complete(self, messages: list[dict[str, str]], call: _Call, first_model: str | None = None) -> tuple[Any, str]:
        """One answered request: retries transient errors on each model, then the fallback, within the deadline."""
        models = [self.model] + ([self.fallback_model] if self.fallback_model and self.fallback_model != self.model else [])
        if first_model in models:
            models = models[models.index(first_model):]
        last: Exception | None = None
        out_of_time = False
        for model in models:
            for attempt in range(1 + self.max_retries):
                if attempt:
                    wait = _retry_wait(last, attempt)
                    if call.remaining() - wait < self.min_request_s:
                        break  # no time (or told to wait too long) for this model again: next model
                    self.sleep(wait)
                remaining = call.remaining()
                if remaining <= 0 or (call.requests and remaining < self.min_request_s):
                    out_of_time = True
                    break
                call.tried(model)
                call.requests += 1
                started = self.clock()
                try:
                    completion = self.client.chat.completions.create(
                        **self.request_body(messages, model, call.languages, call.required), timeout=min(self.request_timeout_s, remaining),
                    )
                except openai.APITimeoutError as exc:
                    last = exc
                    if model != models[-1]:
                        break  # a model that just used its whole timeout: the fallback gets the time left
                    continue
                except openai.APIConnectionError as exc:
                    last = exc
                    continue
                except openai.APIStatusError as exc:
                    if not _is_transient(exc):
                        raise _refusal_error(exc, model) from exc
                    last = exc
                    continue
                except openai.OpenAIError as exc:
                    raise ServiceError(f"OpenAI's answer could not be read ({type(exc).__name__}); retry the item later.") from exc
                usage = getattr(completion, "usage", None)
                if usage is not None:
                    latency = (self.clock() - started) * 1000
                    call.usage.append(Usage("llm", getattr(completion, "model", None) or model,
                                            usage.prompt_tokens or 0, usage.completion_tokens or 0, 1, latency))
                return completion, model
            if out_of_time:
                break
        raise _gave_up_error(last, call, out_of_time or call.remaining() < self.min_request_s, self.deadline_s)

    def _read(self, completion: Any, languages: tuple[str, ...] = (), required: frozenset[str] = frozenset()) -> Any:
        """The parsed answer, or BadInputError (content filter, refusal), or _Unusable (cut off, not the JSON asked for)."""
        choices = getattr(completion, "choices", None)
        if not choices:
            raise _Unusable("was empty")
        choice = choices[0]
        message = choice.message
        if choice.finish_reason == "content_filter":
            raise BadInputError(CONTENT_FILTER_MESSAGE)
        if message.refusal:
            raise BadInputError(f"OpenAI declined to describe this product (\"{_short(message.refusal)}\"); "
                                "check the photo and the hints, or write the summary by hand.")
        if choice.finish_reason == "length":
            raise _Unusable("was cut off before it finished")
        if not message.content:
            raise _Unusable("was empty")
        try:
            data = json.loads(message.content)
        except ValueError:
            looks_cut = message.content.lstrip().startswith(("{", "["))
            raise _Unusable("was not valid JSON (it looks cut off)" if looks_cut else "was not JSON") from None
        response_model = self.response_for(languages, required)[0]
        try:
            return response_model.model_validate(data)
        except ValidationError as exc:
            cleaned = _drop_out_of_vocabulary(data, exc)
            if cleaned is None:
                raise _Unusable("did not follow the requested JSON format") from None
        try:
            return response_model.model_validate(cleaned)
        except ValidationError:
            raise _Unusable("did not follow the requested JSON format") from None


def _seo_fields(draft: Any) -> dict[str, str]:
    """The answer's SEO title, meta description and alt text after the corrective request: over a limit, cut at a
    word boundary (as an over-long summary is trimmed); marketing words left in the alt text taken out. The schema
    sent requires all three, so OpenAI answers them; an answer read without them (another server) leaves them empty,
    for a person to fill in Review (Shopify's alt text then falls back to the caption)."""
    out = {}
    for name, limit in SEO_LIMITS.items():
        text = " ".join(str(getattr(draft, name, "") or "").split())
        if name == "alt_text":
            text = without_marketing(text)
        out[name] = cut_to_characters(text, limit)
    return out


def _template_seo_fields(draft: Any, summary: str, call: _Call) -> dict[str, str]:
    """SEO_FIELDS_BY=template: the offline summarizer's template (same limits, alt text without marketing words) from
    the answer's title and summary, the caption, the captioner's answers in the vocabulary and the brand hint."""
    from pipeline.summarizers.offline import seo_fields

    request = call.request
    if request is None:
        return {}
    known = {a.name: a.value for a in request.attributes if a.in_vocab and a.value}
    return seo_fields(" ".join(draft.title.split()), summary, request.caption, known, request.hints.get("brand", ""),
                      request.style)  # words to avoid taken out: the caption is not checked like the answer is


def _seo_excess(draft: Any) -> tuple[list[str], int]:
    """(the corrective request's sentences for the SEO fields, characters over the limits + marketing words)."""
    problems, over = [], 0
    for name, limit in SEO_LIMITS.items():
        size = len(" ".join(str(getattr(draft, name, "") or "").split()))
        if size > limit:
            problems.append(f"The {name} has {size} characters. Rewrite it in at most {limit} characters.")
            over += size - limit
    marketing = marketing_words_in(str(getattr(draft, "alt_text", "") or ""))
    if marketing:
        problems.append(f"The alt_text must describe what the photo shows, without {', '.join(marketing)}: "
                        "no marketing words, prices or calls to action.")
        over += 10 * len(marketing)
    return problems, over


def _texts(draft: Any, languages: tuple[str, ...]) -> dict[str, str]:
    """The answer's texts a reader sees: title, English summary, each tag (the shop files' Tags columns), the SEO
    title, meta description and alt text when the answer has them, one summary per extra language."""
    texts = {"title": draft.title, "summary": draft.summary}
    texts.update({f"tag {number}": str(tag or "") for number, tag in enumerate(getattr(draft, "tags", None) or [], start=1)})
    texts.update({name: str(getattr(draft, name, "") or "") for name in SEO_LIMITS})
    if languages:
        extra = draft.summaries.model_dump()
        texts.update({f"summary ({code})": str(extra.get(code) or "") for code in languages})
    return texts


def _banned(draft: Any, style: Any, languages: tuple[str, ...]) -> list[str]:
    from pipeline.admin.brand import banned_words_in

    found: list[str] = []
    for text in _texts(draft, languages).values():
        found += [w for w in banned_words_in(text, style) if w not in found]
    return found


def _problems(draft: Any, call: _Call) -> list[str]:
    """What the corrective request asks to fix: too long (per language), words to avoid used."""
    problems = []
    words = count_words(draft.summary)
    if words > MAX_SUMMARY_WORDS:
        problems.append(f"The summary has {words} words. Rewrite it in at most {MAX_SUMMARY_WORDS} words.")
    if call.languages:
        extra = draft.summaries.model_dump()
        for code in call.languages:
            text = str(extra.get(code) or "")
            if _excess(text, code):
                problems.append(f"The {code} summary is longer than {limit_text(code)}; shorten it.")
    problems += _seo_excess(draft)[0]
    style = call.request.style if call.request is not None else None
    banned = _banned(draft, style, call.languages)
    if banned:
        from pipeline.admin.brand import banned_words_in

        where = [field for field, text in _texts(draft, call.languages).items() if banned_words_in(text, style)]
        problems.append(f"Do not use these words from the style guide's words to avoid: {', '.join(banned)}. "
                        f"They are in: {', '.join(where)}.")
    return problems


def _excess(text: str, language: str) -> int:
    from pipeline.wordlimit import character_budget

    budget = character_budget(language)
    return max(0, measure(text, language) - (MAX_SUMMARY_WORDS if budget is None else budget))


def _badness(draft: Any, call: _Call) -> tuple[int, int]:
    """(words to avoid used, how far over the limits): lower is better; a retry is kept only when lower."""
    style = call.request.style if call.request is not None else None
    over = max(0, count_words(draft.summary) - MAX_SUMMARY_WORDS)
    if call.languages:
        extra = draft.summaries.model_dump()
        over += sum(_excess(str(extra.get(code) or ""), code) for code in call.languages)
    over += _seo_excess(draft)[1]
    return len(_banned(draft, style, call.languages)), over


def _drop_out_of_vocabulary(data: Any, error: ValidationError) -> dict[str, Any] | None:
    """`data` with attribute values outside their vocabulary set to null, when that is all that is wrong."""
    problems = error.errors()
    if not isinstance(data, dict) or not isinstance(data.get("attributes"), dict):
        return None
    if not all(p["type"] == "literal_error" and len(p["loc"]) >= 2 and p["loc"][0] == "attributes" for p in problems):
        return None
    attributes = dict(data["attributes"])
    for p in problems:
        attributes[p["loc"][1]] = None
    return {**data, "attributes": attributes}


def _is_transient(exc: openai.APIStatusError) -> bool:
    if _is_quota(exc):
        return False
    return exc.status_code in (408, 409, 429) or exc.status_code >= 500


def _is_quota(exc: openai.APIStatusError) -> bool:
    return exc.code in QUOTA_CODES or getattr(exc, "type", None) in QUOTA_CODES


def _refusal_error(exc: openai.APIStatusError, model: str) -> UserFacingError:
    """A request OpenAI answered with an error that retrying will not fix."""
    status, code = exc.status_code, exc.code
    if _is_quota(exc):
        return ConfigError(QUOTA_MESSAGE)
    if status == 401:  # the server's message may echo part of the key: not shown
        return ConfigError("OpenAI rejected the API key (OPENAI_API_KEY) — an admin must set a valid key, "
                           "then retry the failed items.")
    if status == 403:
        return ConfigError(f"OpenAI denied this API key access to {model} (HTTP 403{_code(code)}) — an admin must "
                           "give the key's project access to the model or change OPENAI_MODEL / OPENAI_FALLBACK_MODEL.")
    if status == 404:
        return ConfigError(f"OpenAI does not know the model {model} or this API key cannot use it (HTTP 404{_code(code)}) — "
                           "an admin must fix OPENAI_MODEL / OPENAI_FALLBACK_MODEL (or OPENAI_BASE_URL).")
    if code == "content_filter":  # Azure OpenAI filters the prompt itself with a 400
        return BadInputError(CONTENT_FILTER_MESSAGE)
    if code in ("context_length_exceeded", "string_above_max_length") or status == 413:
        return BadInputError(TOO_LONG_MESSAGE)
    if status == 400:
        return ConfigError(f"OpenAI refused the request as invalid (HTTP 400{_code(code)}: {_short(exc.message)}) — "
                           f"an admin should check that {model} supports structured outputs (OPENAI_MODEL).")
    return ServiceError(f"OpenAI refused the request (HTTP {status}{_code(code)}); retry the item later or ask an admin.")


@dataclass(frozen=True)
class _ErrorAnswer:
    """An HTTP error answer read from elsewhere (a Batch API error line), shaped like openai.APIStatusError."""

    status_code: int
    code: str | None
    type: str | None
    message: str


def classify_error_answer(status_code: int, error: dict[str, Any] | None, model: str) -> tuple[bool, UserFacingError]:
    """(retrying may help, the item's one-sentence error) for an error answer given as HTTP status + OpenAI
    error body, classified exactly as the real-time path classifies an APIStatusError (a transient one
    says what happened; the caller adds what to do)."""
    error = error if isinstance(error, dict) else {}
    answer = _ErrorAnswer(int(status_code), error.get("code"), error.get("type"), str(error.get("message") or ""))
    if _is_transient(answer):  # type: ignore[arg-type]
        return True, ServiceError(f"OpenAI could not answer for this product (HTTP {status_code}{_code(answer.code)} from {model}).")
    return False, _refusal_error(answer, model)  # type: ignore[arg-type]


def _gave_up_error(last: Exception | None, call: _Call, out_of_time: bool, deadline_s: float) -> ServiceError:
    """Every try failed with a transient error (or the time ran out): try again later."""
    models = call.models_text()
    if isinstance(last, openai.APITimeoutError) or (last is None and out_of_time):
        message = f"OpenAI did not answer in time ({models}); the item was not summarized — retry the failed items later."
    elif isinstance(last, openai.APIConnectionError):
        message = f"Could not reach OpenAI ({models}); check the network or OPENAI_BASE_URL, then retry the failed items."
    elif isinstance(last, openai.RateLimitError):
        message = (f"OpenAI is rate-limiting this account right now ({models}); retry the failed items in a few minutes "
                   "or lower CONCURRENCY.")
    elif isinstance(last, openai.APIStatusError):
        message = (f"OpenAI is unavailable right now (HTTP {last.status_code} from {models}); "
                   "retry the failed items later.")
    else:
        message = f"OpenAI is unavailable right now ({models}); retry the failed items later."
    if out_of_time:
        message += f" Gave up after {deadline_s:g} s (OPENAI_DEADLINE_S)."
    return ServiceError(message)


def _unusable_message(problem: str, call: _Call, retried: bool = False) -> str:
    again = " even after it was asked again" if retried else ""
    return (f"OpenAI's answer {problem}{again} ({call.models_text()}); the item was not summarized — "
            "retry it, or write the summary by hand.")


def _retry_wait(last: Exception | None, attempt: int) -> float:
    """Seconds before the next try: the server's Retry-After when it gives one, else jittered backoff."""
    response = getattr(last, "response", None)
    headers = getattr(response, "headers", None) or {}
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            delay = float(value) / divisor
        except ValueError:
            continue
        if delay > MAX_RETRY_AFTER_S:
            return float("inf")
        return max(0.0, delay)
    return min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF_S) * (1 - 0.25 * random.random())


def _read_timeout(timeout: Any) -> float:
    if isinstance(timeout, (int, float)):
        return float(timeout)
    read = getattr(timeout, "read", None)
    return float(read) if isinstance(read, (int, float)) else 600.0


def _code(code: str | None) -> str:
    return f", {code}" if code else ""


def _short(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def system_prompt(request: SummaryRequest, seo_fields: bool = False) -> str:
    """SYSTEM_PROMPT (+ SEO_PROMPT with SEO_FIELDS_BY=model), then the style guide, then the batch's extra languages:
    the same for every item of a batch."""
    from pipeline.admin.brand import LANGUAGES, style_prompt

    parts = [SYSTEM_PROMPT + "\n" + SEO_PROMPT if seo_fields else SYSTEM_PROMPT]
    style = style_prompt(request.style)
    if style:
        parts.append(style)
    if request.languages:
        names = ", ".join(f"{LANGUAGES.get(code, code)} ({code}, at most {limit_text(code)})" for code in request.languages)
        parts.append(f"Also write the summary in: {names}. Put each in `summaries` under its language code; "
                     "same facts as the English summary, written natively, not word for word.")
    return "\n\n".join(parts)


def build_messages(request: SummaryRequest, seo_fields: bool = False) -> list[dict[str, str]]:
    """The shared system prompt first (identical in every request of a batch: instructions, style guide, languages,
    so OpenAI's prompt caching applies), then this product's facts."""
    return [
        {"role": "system", "content": system_prompt(request, seo_fields)},
        {"role": "user", "content": json.dumps(facts_for(request), ensure_ascii=False)},
    ]


def facts_for(request: SummaryRequest) -> dict[str, Any]:
    """Everything the model may use, as plain JSON."""
    facts: dict[str, Any] = {
        "caption": request.caption,
        "attributes": {a.name: {"answer": a.value, "in_allowed_list": a.in_vocab} for a in request.attributes},
        "merchant_hints": {name: value for name, value in request.hints.items() if name in SUMMARY_HINTS},
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
