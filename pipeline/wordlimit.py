"""The <= 50-word rule for summaries: counting and trimming at a sentence boundary."""

from __future__ import annotations

import re

MAX_SUMMARY_WORDS = 50
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def count_words(text: str) -> int:
    return len(text.split())


def trim_to_word_limit(text: str, limit: int = MAX_SUMMARY_WORDS) -> str:
    """Whole sentences up to `limit` words; if even the first sentence is longer, cut it and end it cleanly."""
    text = " ".join(text.split())
    if count_words(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for sentence in _SENTENCE_END.split(text):
        words = count_words(sentence)
        if used + words > limit:
            break
        kept.append(sentence)
        used += words
    if kept:
        return " ".join(kept)
    words = text.split()[:limit]
    return " ".join(words).rstrip(",;:-") + ("" if words[-1].endswith((".", "!", "?")) else ".")


# --- Summaries in other languages (issue 19) ---------------------------------------------------------
# Languages written with spaces between words are held to the same MAX_SUMMARY_WORDS words. Japanese and
# Chinese are written without spaces, so a whitespace count would call a whole paragraph "one word"; they are
# held to a character budget instead, converted from the 50 words with the ratios the translation trade uses to
# turn a character count into an English word count (AnyCount, "What count units do translators use to bill for
# translation projects in different countries", anycount.com/word-count-facts; the same rule in KantanMT's
# help centre, "What units should I use when translating from Chinese and/or Japanese?"):
#   Japanese: English words ~= Japanese characters / 2.5        -> 50 words = 125 characters
#   Chinese:  1000 English words ~= 1300-1700 characters (x1.5) -> 50 words =  75 characters
# Characters are counted as code points other than whitespace (punctuation counts, as translators count it).
# Thai (also written without spaces) has no such published ratio we could cite, so it is not offered
# (pipeline.admin.brand.LANGUAGES); Korean is written with spaces and is counted in words.
CHARACTERS_PER_WORD = {"ja": 2.5, "zh": 1.5}
_CJK_SENTENCE_END = re.compile(r"(?<=[。！？!?])")


def character_budget(language: str, words: int = MAX_SUMMARY_WORDS) -> int | None:
    """The character budget for `language` (None: it is counted in words)."""
    ratio = CHARACTERS_PER_WORD.get(language.lower())
    return None if ratio is None else int(words * ratio)


def count_characters(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


def limit_text(language: str, words: int = MAX_SUMMARY_WORDS) -> str:
    """The limit in words a person reads: '50 words' or '125 characters'."""
    budget = character_budget(language, words)
    return f"{words} words" if budget is None else f"{budget} characters"


def measure(text: str, language: str) -> int:
    """The summary's length in the unit its language is held to (words, or characters for ja/zh)."""
    return count_words(text) if character_budget(language) is None else count_characters(text)


def within_limit(text: str, language: str, words: int = MAX_SUMMARY_WORDS) -> bool:
    budget = character_budget(language, words)
    return count_words(text) <= words if budget is None else count_characters(text) <= budget


def trim_to_language_limit(text: str, language: str, words: int = MAX_SUMMARY_WORDS) -> str:
    """`trim_to_word_limit` for word languages; for ja/zh whole sentences (ending 。！？) within the character
    budget, or, when even the first is longer, its first characters up to the budget ending with 。."""
    budget = character_budget(language, words)
    if budget is None:
        return trim_to_word_limit(text, words)
    text = text.strip()
    if count_characters(text) <= budget:
        return text
    kept, used = "", 0
    for sentence in (s for s in _CJK_SENTENCE_END.split(text) if s.strip()):
        size = count_characters(sentence)
        if used + size > budget:
            break
        kept += sentence
        used += size
    if kept:
        return kept.strip()
    out, used = "", 0
    for ch in text:
        if used + (0 if ch.isspace() else 1) > budget - 1:
            break
        out += ch
        used += 0 if ch.isspace() else 1
    return out.rstrip("、，,;: ") + "。"


# --- SEO and accessibility fields (issue 19) ----------------------------------------------------------
# Character limits (code points, spaces included, as search engines and screen readers count them):
# seo_title 70 (what a results page shows before cutting), meta_description 160, alt_text 125 (screen
# readers' customary chunk). A model's answer over a limit gets the summary's corrective request, then is
# cut at a word boundary (cut_to_characters), as an over-long summary is trimmed; a person's edit over a
# limit is refused on save with a sentence, never cut.
SEO_LIMITS = {"seo_title": 70, "meta_description": 160, "alt_text": 125}
SEO_LABELS = {"seo_title": "SEO title", "meta_description": "Meta description", "alt_text": "Alt text"}

# A product title a person types in Review: at most 150 characters (Google Merchant Center's title limit, the
# strictest of the feeds: pipeline/batches/feeds.py GOOGLE_LIMITS; Shopify takes 255). Over it is refused on save.
MAX_TITLE_CHARACTERS = 150


def title_problem(text: str) -> str | None:
    """The sentence refusing a person's title over MAX_TITLE_CHARACTERS (counted as stored: ends stripped), or None."""
    size = len((text or "").strip())
    if size > MAX_TITLE_CHARACTERS:
        return (f"The title has {size} characters; the limit is {MAX_TITLE_CHARACTERS} (what product feeds show). "
                "Shorten it and save again.")
    return None


# Alt text describes what the photo shows; these are marketing, prices or calls to action, not description.
_MARKETING = re.compile(
    r"\b(on sale|for sale|buy|buying|best|shop|shopping|order now|order today|sale|discount|deal|deals|cheap|affordable|bargain|offer|"
    r"must[- ]have|perfect|amazing|stunning|premium|luxury|exclusive|limited|free shipping|add to cart|"
    r"click|get yours|grab|don'?t miss|save)\b"
    r"|[$€£¥]\s*\d+(?:[.,]\d+)?|\d+(?:[.,]\d+)?\s*(?:usd|eur|gbp|dollars?|euros?)\b",
    re.IGNORECASE,
)


def seo_problem(field: str, text: str) -> str | None:
    """The sentence refusing a person's `text` for `field` (too long; alt text with marketing words), or None."""
    limit, label = SEO_LIMITS[field], SEO_LABELS[field]
    if len(text) > limit:
        return f"The {label.lower()} has {len(text)} characters; the limit is {limit}. Shorten it and save again."
    if field == "alt_text":
        found = marketing_words_in(text)
        if found:
            return (f"The alt text says {', '.join(repr(w) for w in found)}: alt text describes what the photo shows, "
                    "without marketing, prices or calls to action. Rewrite it and save again.")
    return None


def marketing_words_in(text: str) -> list[str]:
    """Marketing words, prices and calls to action found in `text` (lowercased, in order, once each)."""
    found: list[str] = []
    for match in _MARKETING.finditer(text or ""):
        word = match.group(0).lower().strip()
        if word not in found:
            found.append(word)
    return found


def without_marketing(text: str) -> str:
    """`text` with its marketing words, prices and calls to action taken out (whitespace collapsed, the
    punctuation they leave behind tidied: no space before a comma, no doubled or leading/trailing commas)."""
    text = " ".join(_MARKETING.sub(" ", text or "").split())
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"[,;:]+(?=[.!?])", "", text)
    return text.strip(" ,;:-")


def cut_to_characters(text: str, limit: int) -> str:
    """`text` (whitespace collapsed) within `limit` characters, cut at the last word boundary that fits
    (a single word longer than the limit is cut at the limit); trailing punctuation left by the cut dropped."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    space = cut.rfind(" ")
    kept = cut[:space] if space > 0 else text[:limit]
    return kept.rstrip(" ,;:-–—")
