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
