"""Words to avoid are found through Unicode variants (review item 10): full-width letters, decomposed accents and
zero-width or soft-hyphen characters inside a word, on the style guide's side and on the text's. brand.py's matcher
compares NFKC-normalized, casefolded text without format characters; `without_avoided` cuts the match out of the
original text, leaving every other character as it was written."""

from __future__ import annotations

import pytest

from pipeline.admin.brand import banned_words_in, without_avoided
from pipeline.attributes import load_attribute_schema
from pipeline.models import StyleGuide, SummaryRequest
from pipeline.summarizers.offline import OfflineSummarizer

GUIDE = StyleGuide(tone="", avoid=["cheap", "café", "best seller", "安い"], prefer=[])


@pytest.mark.parametrize("text, found", [
    ("A ＣＨＥＡＰ mug", ["cheap"]),  # full-width
    ("A Ｃheap mug", ["cheap"]),
    ("cafe\u0301 table", ["café"]),  # decomposed é
    ("CAFE\u0301 TABLE", ["café"]),
    ("che\u200bap shirt", ["cheap"]),  # zero-width space
    ("che\u00adap shirt", ["cheap"]),  # soft hyphen
    ("ch\u200de\u2060ap", ["cheap"]),  # zero-width joiner, word joiner
    ("best\u00a0seller", ["best seller"]),  # no-break space between the words of a phrase
    ("ＢＥＳＴ ＳＥＬＬＥＲ", ["best seller"]),
    ("とても安いＴシャツ", ["安い"]),
    ("cheaply made, a cafeteria", []),  # still whole words
    ("ｃｈｅａｐｌｙ", []),
])
def test_variants_of_a_word_to_avoid_are_found(text, found):
    assert banned_words_in(text, GUIDE) == found


def test_a_guide_word_written_as_a_variant_finds_the_plain_word():
    guide = StyleGuide(tone="", avoid=["ＣＨＥＡＰ", "cafe\u0301", "bar\u200bgain"], prefer=[])
    assert banned_words_in("Cheap café, a bargain", guide) == ["ＣＨＥＡＰ", "cafe\u0301", "bar\u200bgain"]


def test_without_avoided_cuts_each_variant_and_leaves_the_rest_as_written():
    text = "Ｍｕｇ: ＣＨＥＡＰ and che\u200bap, for the cafe\u0301 or the ｃａｆｅ́. Crème brûle\u0301e glaze."
    assert without_avoided(text, GUIDE) == "Ｍｕｇ: and for the or the. Crème brûle\u0301e glaze."


def test_the_offline_template_leaves_a_variant_out_of_what_it_writes():
    """Caller: the offline summarizer writes title, summary and alt text through without_avoided / banned_words_in."""
    summarizer = OfflineSummarizer(load_attribute_schema())
    request = SummaryRequest(caption="a ｃｈｅａｐ white che\u200bap mug on a table", attributes=[], checks=None,
                             hints={"title": "ＣＨＥＡＰ Mug"}, style=GUIDE)
    result = summarizer.summarize(request)
    written = [result.summary, result.title, *result.tags, result.seo_title, result.meta_description, result.alt_text]
    assert all(not banned_words_in(text, GUIDE) for text in written), written
    assert "Mug" in result.title and "mug" in result.summary.lower()
