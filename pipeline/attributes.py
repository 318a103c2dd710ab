"""The attribute schema (questions + controlled vocabularies) and mapping raw answers onto it."""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from pipeline.errors import ConfigError
from pipeline.models import SUMMARIZER_SOURCE, AttributeValue, SummaryResult

_ARTICLES = re.compile(r"^(?:a|an|the|it is|it's|this is|made of|made from)\s+")


class AttributeSpec(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    question: str  # asked of BLIP-2 / VQA models as "Question: ... Answer:"
    prefix: str  # for captioning-only models (BLIP): conditional caption start, e.g. "the product is made of"
    vocabulary: list[str] = Field(min_length=1)
    synonyms: dict[str, str] = Field(default_factory=dict)
    required: bool = False  # the summarizer must choose one of the values (structured output: not nullable)

    @field_validator("synonyms")
    @classmethod
    def _synonyms_map_into_vocabulary(cls, synonyms: dict[str, str], info) -> dict[str, str]:
        vocabulary = set(info.data.get("vocabulary") or [])
        unknown = sorted(v for v in synonyms.values() if v not in vocabulary)
        if unknown:
            raise ValueError(f"synonyms map to words not in the vocabulary: {unknown}")
        return synonyms


class CategoryRule(BaseModel):
    """Per product category (a value of the `category` attribute): which attributes apply and which of them are
    required for it (pipeline/admin/taxonomy.py checks the names)."""

    attributes: list[str] | None = None  # None: every attribute applies
    required: list[str] = Field(default_factory=list)


class AttributeSchema(BaseModel):
    attributes: list[AttributeSpec] = Field(min_length=1)
    categories: dict[str, CategoryRule] = Field(default_factory=dict)  # category value -> its rule (the taxonomy editor)

    def names(self) -> list[str]:
        return [spec.name for spec in self.attributes]

    def spec(self, name: str) -> AttributeSpec:
        return next(spec for spec in self.attributes if spec.name == name)

    def applies(self, category: str | None) -> set[str]:
        """The attributes an item of `category` gets (every one unless the taxonomy narrows that category)."""
        rule = self.categories.get(category or "")
        if rule is None or rule.attributes is None:
            return set(self.names())
        return {"category", *rule.attributes}

    def required_for(self, category: str | None) -> set[str]:
        rule = self.categories.get(category or "")
        return {spec.name for spec in self.attributes if spec.required} | set(rule.required if rule else ())


def load_attribute_schema(path: Path | None = None) -> AttributeSchema:
    """The schema file at `path`, or the default shipped with the package."""
    try:
        if path is None:
            text = resources.files("pipeline").joinpath("attribute_schema.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return AttributeSchema.model_validate(json.loads(text))
    except FileNotFoundError as exc:
        raise ConfigError(f"Attribute schema file not found: {path}") from exc
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Attribute schema {path or 'default'} is invalid: {exc}".splitlines()[0]) from exc


def clean_answer(raw: str) -> str:
    text = raw.strip().lower()
    text = re.sub(r"[^\w\s\-']", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    while True:
        stripped = _ARTICLES.sub("", text)
        if stripped == text:
            return text
        text = stripped


def map_answer(spec: AttributeSpec, raw: str) -> AttributeValue:
    """Raw model answer -> vocabulary value; unknown answers are kept and flagged (in_vocab=False)."""
    text = clean_answer(raw)
    value = _match_vocabulary(spec, text)
    if value is not None:
        return AttributeValue(name=spec.name, raw=raw, value=value, in_vocab=True)
    return AttributeValue(name=spec.name, raw=raw, value=text, in_vocab=False)


def map_answers(schema: AttributeSchema, answers: dict[str, str]) -> list[AttributeValue]:
    """Every attribute's answer mapped; an attribute the taxonomy does not apply to the item's category
    (e.g. `pattern` for a mug) is left out, so it is neither shown, flagged nor exported."""
    values = [map_answer(spec, answers.get(spec.name, "")) for spec in schema.attributes]
    category = next((v.value for v in values if v.name == "category" and v.in_vocab), None)
    keep = schema.applies(category)
    return [v for v in values if v.name in keep]


def stored_category(schema: AttributeSchema, values: list[AttributeValue]) -> str | None:
    """The category as Review reads it from stored values: the `category` value when it is an allowed one."""
    if "category" not in schema.names():
        return None
    value = next((v.value for v in values if v.name == "category"), None)
    return value if value in schema.spec("category").vocabulary else None


def keep_required_guesses(schema: AttributeSchema, values: list[AttributeValue], answers: dict[str, str | None],
                          model: str) -> list[AttributeValue]:
    """`values` (the captioner's, mapped) with the summarizer's `answers` kept where the captioner's value for an
    attribute the item's category requires (as Review checks it: pipeline/batches/review.py missing_required) is empty
    or not an allowed value and the summarizer answered an allowed one. The structured output is made to answer those
    attributes (openai_summarizer.required_for), so the paid answer is kept instead of a person typing it: stored with
    source "summarizer:<model>" and in_vocab=False, so Review lists it under "Attributes to check" and shows who
    guessed it. `raw` keeps the captioner's answer (a reused caption maps it again). Other attributes are unchanged."""
    result = list(values)
    for _ in range(2):  # a guessed category (required everywhere) can make more attributes required: look again
        category = stored_category(schema, result)
        required = schema.required_for(category) & schema.applies(category)
        changed = False
        for name in schema.names():
            vocabulary = schema.spec(name).vocabulary
            current = next((v for v in result if v.name == name), None)
            if name not in required or (current is not None and current.value.strip() in vocabulary):
                continue
            answer = (answers.get(name) or "").strip()
            if answer not in vocabulary:
                continue
            guess = AttributeValue(name=name, raw=current.raw if current else "", value=answer, in_vocab=False,
                                   source=f"{SUMMARIZER_SOURCE}{model}")
            result = [guess if v is current else v for v in result] if current is not None else [*result, guess]
            changed = True
        if not changed:
            break
    return result


def with_summary_guesses(schema: AttributeSchema, values: list[AttributeValue], summary: SummaryResult) -> list[AttributeValue]:
    """keep_required_guesses for a summary: real-time runs, Batch API runs and batch transform jobs save items through
    this. The offline template answers nothing of its own: its attributes are never kept."""
    if summary.offline or not summary.attributes:
        return values
    return keep_required_guesses(schema, values, summary.attributes, summary.model)


def _match_vocabulary(spec: AttributeSpec, text: str) -> str | None:
    if not text:
        return None
    if text in spec.vocabulary:
        return text
    if text in spec.synonyms:
        return spec.synonyms[text]
    # A known word inside a longer answer ("a pair of black leather shoes" -> "shoes"); longest terms first.
    terms = sorted([*spec.vocabulary, *spec.synonyms], key=len, reverse=True)
    for term in terms:
        if re.search(rf"\b{re.escape(term)}\b", text):
            return spec.synonyms.get(term, term)
    close = difflib.get_close_matches(text, spec.vocabulary, n=1, cutoff=0.85)
    return close[0] if close else None
