"""Deterministic, network-free summaries from caption + attributes + CSV hints (SUMMARIZER=offline).

English only: a template does not translate, so `SummaryRequest.languages` is not written here (`summaries`
stays empty); `pipeline.admin.brand.check_languages_supported` refuses extra languages before a batch starts.
The style guide is not applied either (the template uses only the facts given)."""

from __future__ import annotations

import copy

from pipeline.attributes import AttributeSchema
from pipeline.models import SummaryRequest, SummaryResult
from pipeline.wordlimit import MAX_SUMMARY_WORDS, trim_to_word_limit

OFFLINE_MODEL = "offline-template-v1"


class OfflineSummarizer:
    name = "offline"

    def __init__(self, schema: AttributeSchema) -> None:
        self.schema = schema

    def with_schema(self, schema: AttributeSchema) -> "OfflineSummarizer":
        """This summarizer for another attribute taxonomy version (pipeline/admin/taxonomy.py)."""
        twin = copy.copy(self)
        twin.schema = schema
        return twin

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        known = {a.name: a.value for a in request.attributes if a.in_vocab and a.value}
        title = request.hints.get("title") or _title_from(known, request.caption)
        sentences = [title if title.endswith((".", "!", "?")) else f"{title}."]  # "Yahoo!", not "Yahoo!."
        if request.caption:
            sentences.append(_sentence(request.caption))
        details = [f"{name} {value}" for name, value in known.items() if name != "category"]
        if details:
            sentences.append(_sentence("Details: " + ", ".join(details)))
        if request.hints.get("brand"):
            sentences.append(f"By {request.hints['brand']}.")
        if request.hints.get("notes"):
            sentences.append(_sentence(request.hints["notes"]))
        tags = _unique([*known.values(), request.hints.get("category", ""), request.hints.get("brand", "")])
        return SummaryResult(
            summary=trim_to_word_limit(" ".join(sentences), MAX_SUMMARY_WORDS),
            title=title,
            tags=tags,
            attributes={spec.name: known.get(spec.name) for spec in self.schema.attributes},
            model=OFFLINE_MODEL,
            offline=True,
        )


def _title_from(known: dict[str, str], caption: str) -> str:
    parts = [known.get(name, "") for name in ("color", "material", "category")]
    words = " ".join(p for p in parts if p)
    if words:
        return words[:1].upper() + words[1:]
    caption_words = caption.split()[:8]
    return " ".join(caption_words).capitalize() if caption_words else "Product"


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip()
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _unique(values: list[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        tag = value.strip().lower()
        if tag and tag not in seen:
            seen.append(tag)
    return seen
