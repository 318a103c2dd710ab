"""Deterministic, network-free summaries from caption + attributes + CSV hints (SUMMARIZER=offline).

English only: a template does not translate, so `SummaryRequest.languages` is not written here (`summaries`
stays empty); `pipeline.admin.brand.check_languages_supported` refuses extra languages before a batch starts.

The style guide (`SummaryRequest.style`) applies as far as a template can: a word to avoid is taken out of everything
it writes (title, summary, tags, SEO title, meta description, alt text; `brand.without_avoided`, the same matcher the
model's answers are checked with), so it is never emitted, even when it comes from the caption or a CSV hint; a word
to prefer is written instead of an attribute's value where the taxonomy lists it as a synonym of that value ("trainers"
for sneakers; tags keep the vocabulary value). The tone is not applied: the template has one."""

from __future__ import annotations

import copy

from pipeline.admin.brand import banned_words_in, preferred_synonym, without_avoided
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
        guide = request.style
        words = {name: self._word(name, value, guide) for name, value in known.items()  # words to prefer, where a synonym
                 if not banned_words_in(value, guide)}  # a value that is a word to avoid is left out of the prose
        title = without_avoided(request.hints.get("title") or _title_from(words, request.caption), guide) or "Product"
        sentences = [title if title.endswith((".", "!", "?")) else f"{title}."]  # "Yahoo!", not "Yahoo!."
        if request.caption:
            sentences.append(_sentence(request.caption))
        details = [f"{name} {value}" for name, value in words.items() if name != "category"]
        if details:
            sentences.append(_sentence("Details: " + ", ".join(details)))
        if request.hints.get("brand"):
            sentences.append(f"By {request.hints['brand']}.")
        if request.hints.get("notes"):
            sentences.append(_sentence(request.hints["notes"]))
        tags = [tag for tag in _unique([*known.values(), request.hints.get("category", ""), request.hints.get("brand", "")])
                if not banned_words_in(tag, guide)]  # a tag is a vocabulary value: dropped, not rewritten
        summary = trim_to_word_limit(without_avoided(" ".join(s for s in sentences if s), guide), MAX_SUMMARY_WORDS)
        return SummaryResult(
            summary=summary,
            title=title,
            tags=tags,
            attributes={spec.name: known.get(spec.name) for spec in self.schema.attributes},
            model=OFFLINE_MODEL,
            offline=True,
            **seo_fields(title, summary, request.caption, words, request.hints.get("brand", ""), guide),
        )

    def _word(self, name: str, value: str, guide) -> str:
        synonyms = self.schema.spec(name).synonyms if name in self.schema.names() else {}
        return preferred_synonym(value, synonyms, guide)


def seo_fields(title: str, summary: str, caption: str, known: dict[str, str], brand: str = "", guide=None) -> dict[str, str]:
    """SEO title, meta description and alt text from the same facts, each within its limit (SEO_LIMITS):
    title (+ " | brand" when it fits); the summary cut at a word boundary; the photo described from the
    caption (else colour/material/category), marketing words, prices and calls to action left out; the style
    guide's words to avoid (`guide`) taken out of all three (the caption and a brand hint may hold one)."""
    title, summary, brand = without_avoided(title, guide), without_avoided(summary, guide), without_avoided(brand, guide)
    caption = without_avoided(caption, guide)
    seo_title = title.rstrip(".")
    if brand and brand.lower() not in seo_title.lower() and len(f"{seo_title} | {brand}") <= SEO_LIMITS["seo_title"]:
        seo_title = f"{seo_title} | {brand}"
    return {"seo_title": cut_to_characters(seo_title, SEO_LIMITS["seo_title"]),
            "meta_description": cut_to_characters(summary, SEO_LIMITS["meta_description"]),
            "alt_text": without_avoided(alt_text_from(caption, known), guide)}


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
