"""Deterministic, network-free summaries from caption + attributes + CSV hints (SUMMARIZER=offline).

English only: a template does not translate, so `SummaryRequest.languages` is not written here (`summaries`
stays empty); `pipeline.admin.brand.check_languages_supported` refuses extra languages before a batch starts.
The style guide is not applied either (the template uses only the facts given)."""

from __future__ import annotations

import copy

from pipeline.attributes import AttributeSchema
from pipeline.models import SummaryRequest, SummaryResult
from pipeline.wordlimit import MAX_SUMMARY_WORDS, SEO_LIMITS, cut_to_characters, trim_to_word_limit, without_marketing

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
        summary = trim_to_word_limit(" ".join(sentences), MAX_SUMMARY_WORDS)
        return SummaryResult(
            summary=summary,
            title=title,
            tags=tags,
            attributes={spec.name: known.get(spec.name) for spec in self.schema.attributes},
            model=OFFLINE_MODEL,
            offline=True,
            **seo_fields(title, summary, request.caption, known, request.hints.get("brand", "")),
        )


def seo_fields(title: str, summary: str, caption: str, known: dict[str, str], brand: str = "") -> dict[str, str]:
    """SEO title, meta description and alt text from the same facts, each within its limit (SEO_LIMITS):
    title (+ " | brand" when it fits); the summary cut at a word boundary; the photo described from the
    caption (else colour/material/category), marketing words, prices and calls to action left out."""
    seo_title = title.rstrip(".")
    if brand and brand.lower() not in seo_title.lower() and len(f"{seo_title} | {brand}") <= SEO_LIMITS["seo_title"]:
        seo_title = f"{seo_title} | {brand}"
    return {"seo_title": cut_to_characters(seo_title, SEO_LIMITS["seo_title"]),
            "meta_description": cut_to_characters(summary, SEO_LIMITS["meta_description"]),
            "alt_text": alt_text_from(caption, known)}


def alt_text_from(caption: str, known: dict[str, str]) -> str:
    """What the photo shows, as a screen reader should read it: the caption (or the colour, material and
    category answers), without marketing words, within 125 characters."""
    text = " ".join((caption or "").split())
    if not text:
        text = " ".join(known.get(name, "") for name in ("color", "material", "category") if known.get(name)) or "product"
        text = f"Photo of a {text}"
    text = without_marketing(text).strip(" ,;:-")  # a caption may echo a label ("sale", "$20"): not description
    text = text[:1].upper() + text[1:]
    return cut_to_characters(text.rstrip("."), SEO_LIMITS["alt_text"])


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
