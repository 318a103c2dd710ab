"""Brand voice and summary languages (issue 19).

Style guide: an admin edits the tone, words to avoid and words to prefer (sizes bounded below); the store keeps
one current guide with who saved it, when, and a version (a save sends the version it showed; a concurrent save
is refused with a sentence, in both stores). Every summary request (real-time and OpenAI Batch API) carries it in
the shared system prompt, after the fixed instructions and before the product's facts, so the prefix stays the
same for every item and OpenAI's prompt caching still applies.

Words to avoid are checked on the answer (summary, title, tags, SEO title, meta description, alt text and every
extra-language summary; whole words in any case, or anywhere in the text for a word in a script written without
spaces such as Japanese or Chinese): an answer containing one gets the one corrective request, and if the answer still contains it the item
FAILS with a plain sentence. Failing, not flagging: a flag can be missed and the banned word would then reach the
shop through the export; a failed item cannot be exported as tagged and its sentence tells the reviewer to retry
or write the summary by hand. Text a template writes (the offline summarizer; SEO fields made from the caption with
SEO_FIELDS_BY=template) has the words taken out instead (`without_avoided`): there is no model to ask again. A person's
Review edit with one is saved with a warning and the item flagged (pipeline/batches/review.py).

Languages: a batch has zero or more extra summary languages (LANGUAGES); each gets its own summary, held to the
word limit (pipeline/wordlimit.py: characters for Japanese and Chinese). The offline summarizer writes English
only: asking it for another language is refused before the batch starts (`check_languages_supported`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from pipeline.errors import BadInputError, ConfigError, StyleGuideConflict  # noqa: F401 (the stores raise it; pages import it here)
from pipeline.models import StyleGuide

MAX_TONE_CHARS = 1000
MAX_WORDS_LISTED = 50  # per list (avoid / prefer)
MAX_WORD_CHARS = 40  # per entry

# ISO 639-1 code -> name given to the model. Thai is left out: see pipeline/wordlimit.py.
LANGUAGES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch",
    "pt": "Portuguese", "pl": "Polish", "sv": "Swedish", "da": "Danish", "ko": "Korean", "ja": "Japanese",
    "zh": "Chinese (Simplified)",
}



def _entries(values: Any, what: str) -> list[str]:
    if isinstance(values, str):
        values = re.split(r"[,\n]", values)
    out: list[str] = []
    for value in values or []:
        entry = " ".join(str(value).split())
        if not entry:
            continue
        if len(entry) > MAX_WORD_CHARS:
            raise BadInputError(f"'{entry[:MAX_WORD_CHARS]}…' in {what} is longer than {MAX_WORD_CHARS} characters; "
                                "list single words or short phrases.")
        if entry.lower() not in (e.lower() for e in out):
            out.append(entry)
    if len(out) > MAX_WORDS_LISTED:
        raise BadInputError(f"{what.capitalize()} lists {len(out)} entries; the limit is {MAX_WORDS_LISTED}.")
    return out


def clean_style_guide(tone: str, avoid: Any, prefer: Any) -> StyleGuide:
    """A StyleGuide from what an admin typed (lists as lists, or comma/line separated text), sizes checked."""
    tone = (tone or "").strip()
    if len(tone) > MAX_TONE_CHARS:
        raise BadInputError(f"The tone has {len(tone)} characters; the limit is {MAX_TONE_CHARS}.")
    avoid_list, prefer_list = _entries(avoid, "words to avoid"), _entries(prefer, "words to prefer")
    both = {w.lower() for w in avoid_list} & {w.lower() for w in prefer_list}
    if both:
        raise BadInputError(f"'{sorted(both)[0]}' is both a word to avoid and a word to prefer; keep it in one list.")
    return StyleGuide(tone=tone, avoid=avoid_list, prefer=prefer_list)


def style_prompt(guide: StyleGuide | None) -> str:
    """The style guide as the block appended to the shared system prompt ('' when there is none). Entries are
    given as JSON strings so an entry cannot read as another instruction line."""
    import json

    if guide is None or guide.empty:
        return ""
    lines = ["Brand style guide (set by the merchant's admin; follow it in every language):"]
    if guide.tone:
        lines.append(f"Tone: {json.dumps(guide.tone, ensure_ascii=False)}")
    if guide.avoid:
        lines.append(f"Never use these words or phrases: {json.dumps(guide.avoid, ensure_ascii=False)}")
    if guide.prefer:
        lines.append(f"Prefer these words or phrases where they are true of the product: {json.dumps(guide.prefer, ensure_ascii=False)}")
    return "\n".join(lines)


# Scripts written without spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Tibetan): a
# word to avoid in one of them is found anywhere in the text ("安い" in "とても安いTシャツです。"), as no space marks where
# a word ends. Korean (Hangul) is written with spaces and keeps whole-word matching.
_UNSPACED = ("\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
             "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
# A word of a spaced script ends where a letter or digit of a spaced script does not follow: "cheap" is found in
# "とてもcheapです", not in "cheaply".
_SPACED_WORD_CHAR = f"[^\\W{_UNSPACED}]"


def _avoid_pattern(word: str) -> str:
    parts = [re.escape(part) for part in word.split()]
    if _UNSPACED_CHAR.search(word):
        return r"\s*".join(parts)
    return f"(?<!{_SPACED_WORD_CHAR})" + r"\s+".join(parts) + f"(?!{_SPACED_WORD_CHAR})"


def _folded(text: str) -> tuple[str, list[int], list[int]]:
    """`text` as words to avoid are compared: NFKC (full-width ＣＨＥＡＰ is CHEAP, a decomposed é is é), casefolded,
    without invisible format characters (a zero-width space inside "che\u200bap"). With, for each folded character,
    where the original character cluster it came from starts and ends, so a match can be cut out of the original."""
    clusters: list[tuple[int, int]] = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if clusters and (category == "Cf" or category.startswith("M")):  # a mark or a format character joins its base
            clusters[-1] = (clusters[-1][0], i + 1)
        else:
            clusters.append((i, i + 1))
    folded: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for start, end in clusters:
        visible = "".join(c for c in text[start:end] if unicodedata.category(c) != "Cf")
        for char in unicodedata.normalize("NFKC", visible).casefold():
            folded.append(char)
            starts.append(start)
            ends.append(end)
    return "".join(folded), starts, ends


def _fold(text: str) -> str:
    if text.isascii():  # NFKC leaves ASCII as it is and ASCII has no format character: only the case folds
        return text.lower()
    return _folded(text)[0]


@functools.lru_cache(maxsize=4096)
def _avoid_regex(word: str) -> re.Pattern[str]:
    """A guide word's pattern on folded text (cached: the same few words are checked against every field)."""
    return re.compile(_avoid_pattern(_fold(word)))


def banned_words_in(text: str, guide: StyleGuide | None) -> list[str]:
    """The words to avoid that `text` contains, any case, in the guide's order: whole words / phrases in scripts
    written with spaces; anywhere in the text for a word in a script written without them (Japanese, Chinese, Thai).
    Both sides compared folded (`_folded`): full-width letters, decomposed accents and zero-width characters hide nothing."""
    if guide is None or not guide.avoid or not text:
        return []
    folded = _fold(text)
    return [word for word in guide.avoid if _fold(word).strip() and _avoid_regex(word).search(folded)]


def _cut(text: str, word: str, replacement: str) -> str:
    """`text` with each match of `word` (and a comma right after it) replaced, found on the folded text and cut out
    of the original by the positions `_folded` keeps."""
    folded, starts, ends = _folded(text)
    spans = [(starts[m.start()], ends[m.end() - 1]) for m in re.finditer(_avoid_regex(word).pattern + r"(?:\s*,)?", folded)
             if m.end() > m.start()]
    limit = len(text)
    for start, end in reversed(spans):
        if end <= limit:  # two matches in one character cluster (a ligature): cut once
            text = text[:start] + replacement + text[end:]
            limit = start
    return text


def without_avoided(text: str, guide: StyleGuide | None) -> str:
    """`text` with every word to avoid taken out (matched as `banned_words_in` matches them), for text a template
    writes (pipeline/summarizers/offline.py, SEO fields from the caption): the word is dropped, never emitted, and the
    punctuation and spaces it leaves behind tidied. Repeated until nothing matches (a removal can join a phrase)."""
    if guide is None or not guide.avoid or not text:
        return text
    for _ in range(len(guide.avoid) + 1):
        found = banned_words_in(text, guide)
        if not found:
            break
        for word in found:
            text = _cut(text, word, "" if _UNSPACED_CHAR.search(_fold(word)) else " ")
        text = re.sub(r"(?<!\S)-+|-+(?!\S)", " ", text)  # "cheap-looking" -> "looking", not "-looking"
        text = " ".join(text.split())
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)
        text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
        text = re.sub(r"[,;:]+(?=[.!?])", "", text)
        text = re.sub(r"(?:^|(?<=[.!?]))\s*[.!?](?=\s|$)", "", text)  # a sentence left empty ("Cheap." -> ".")
        text = " ".join(text.split()).strip(" ,;:-")
    return text


def preferred_synonym(value: str, synonyms: dict[str, str], guide: StyleGuide | None) -> str:
    """The word to write for an attribute `value`: a word to prefer that the taxonomy lists as a synonym of it
    ("trainers" for sneakers), else the value itself. Only where the template has that choice."""
    if guide is None or not guide.prefer:
        return value
    for word in guide.prefer:
        if synonyms.get(word.lower()) == value and not banned_words_in(word, guide):
            return word
    return value


def parse_languages(value: Any) -> tuple[str, ...]:
    """Extra summary languages from 'en,de,ja' or a list: known ISO 639-1 codes, English dropped (it is always
    written), order kept, no repeats. Raises BadInputError naming an unknown code."""
    codes = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value or [])
    out: list[str] = []
    for code in codes:
        code = str(code).strip().lower()
        if not code:
            continue
        if code not in LANGUAGES:
            raise BadInputError(f"'{code}' is not a summary language offered here; use one of {', '.join(LANGUAGES)}.")
        if code != "en" and code not in out:
            out.append(code)
    return tuple(out)


def check_languages_supported(summarizer: Any, languages: tuple[str, ...]) -> None:
    """The offline summarizer writes English only (it is a template, it does not translate): refuse before the
    batch starts rather than leave every extra-language summary empty."""
    if languages and getattr(summarizer, "name", None) == "offline":
        raise ConfigError(f"The offline summarizer writes English only; summaries in {', '.join(languages)} need "
                          "SUMMARIZER=openai (or tag without --languages).")


def request_options(store: Any, batch_id: int | None) -> dict[str, Any]:
    """The SummaryRequest fields this module adds: the current style guide and the batch's extra languages."""
    guide = store.style_guide() if hasattr(store, "style_guide") else None
    languages = tuple(store.batch_languages(batch_id)) if batch_id is not None and hasattr(store, "batch_languages") else ()
    return {"style": None if guide is None or guide.empty else guide, "languages": languages}
