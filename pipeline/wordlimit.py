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
