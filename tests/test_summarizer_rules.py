"""The offline summarizer's template, rule by rule (written from mutants that survived
tests/test_summarizers.py, docs/mutation.md): title, sentences, details, tags and attributes."""

from __future__ import annotations

from pipeline.attributes import load_attribute_schema
from pipeline.models import AttributeValue, SummaryRequest
from pipeline.summarizers.offline import OFFLINE_MODEL, OfflineSummarizer
from pipeline.wordlimit import count_words

SCHEMA = load_attribute_schema()


def attr(name: str, value: str, in_vocab: bool = True) -> AttributeValue:
    return AttributeValue(name=name, raw=value, value=value, in_vocab=in_vocab)


def summarize(caption: str = "", attributes=(), hints=None):
    request = SummaryRequest(caption=caption, attributes=list(attributes), checks=None, hints=dict(hints or {}))
    return OfflineSummarizer(SCHEMA).summarize(request)


def test_the_title_comes_from_colour_material_and_category_in_that_order():
    result = summarize("a shoe", [attr("category", "boots"), attr("material", "leather"), attr("color", "black")])
    assert result.title == "Black leather boots"
    assert result.summary.startswith("Black leather boots. A shoe. Details: material leather, color black.")
    assert summarize("x", [attr("material", "wool")]).title == "Wool"


def test_without_vocabulary_values_the_title_is_the_captions_first_eight_words():
    caption = "a very nice pair of shiny new running shoes on grass"
    result = summarize(caption, [attr("color", "chartreuse", in_vocab=False)])
    assert result.title == "A very nice pair of shiny new running"
    assert summarize("").title == "Product"
    assert summarize("   ").title == "Product"


def test_a_title_hint_wins_over_the_template():
    result = summarize("a shoe", [attr("color", "red")], hints={"title": "The Runner 2"})
    assert result.title == "The Runner 2" and result.summary.startswith("The Runner 2. A shoe.")


def test_sentences_are_tidied_capitalised_and_closed_once():
    result = summarize("  soft   cotton\ttee  ", hints={"notes": "wash cold!", "brand": "Acme"})
    assert result.summary == "Soft cotton tee. Soft cotton tee. By Acme. Wash cold!"
    asked = summarize("Is it red?", hints={"notes": "Made in Portugal."})
    assert asked.summary == "Is it red? Is it red? Made in Portugal."  # a title ending in ? or ! gets no "."
    assert summarize("", hints={"title": "Yahoo!"}).summary == "Yahoo!"
    assert summarize("", hints={"title": "Acme Inc."}).summary == "Acme Inc."
    blank_notes = summarize("A hat", hints={"notes": "   "})
    assert blank_notes.summary == "A hat. A hat."


def test_details_list_every_known_value_but_the_category_and_never_unknown_ones():
    result = summarize("", [attr("category", "shirt"), attr("color", "red"), attr("pattern", "striped"),
                            attr("style", "zany", in_vocab=False), attr("material", "", in_vocab=True)])
    assert result.summary == "Red shirt. Details: color red, pattern striped."
    assert "zany" not in result.summary
    assert summarize("", [attr("category", "shirt")]).summary == "Shirt."


def test_tags_are_unique_lowercase_values_then_the_category_and_brand_hints():
    result = summarize("", [attr("color", "Red"), attr("material", "red"), attr("pattern", "solid")],
                       hints={"category": " Tops ", "brand": "ACME"})
    assert result.tags == ["red", "solid", "tops", "acme"]
    assert summarize("", []).tags == []


def test_attributes_hold_every_schema_name_with_only_vocabulary_values():
    result = summarize("", [attr("color", "red"), attr("style", "zany", in_vocab=False)])
    assert result.attributes == {"category": None, "color": "red", "material": None, "pattern": None, "style": None}
    assert (result.model, result.offline, result.usage) == (OFFLINE_MODEL, True, [])
    assert OfflineSummarizer(SCHEMA).name == "offline"


def test_a_sentence_that_would_pass_fifty_words_is_left_out_whole():
    notes = " ".join(f"word{i}" for i in range(80))  # one 80-word sentence
    result = summarize("a shoe", hints={"notes": notes, "brand": "Acme"})
    assert result.summary == "A shoe. A shoe. By Acme."
    fits = " ".join(f"word{i}" for i in range(44))  # 6 + 44 = 50 words: kept
    assert count_words(summarize("a shoe", hints={"notes": fits, "brand": "Acme"}).summary) == 50


def test_a_summarizer_for_another_taxonomy_version_answers_with_that_versions_attributes():
    from pipeline.attributes import AttributeSchema

    original = OfflineSummarizer(SCHEMA)
    smaller = AttributeSchema.model_validate({"attributes": [SCHEMA.attributes[1].model_dump()]})  # colour only
    twin = original.with_schema(smaller)
    request = SummaryRequest(caption="", attributes=[attr("color", "red"), attr("material", "wool")], checks=None, hints={})
    assert twin.summarize(request).attributes == {"color": "red"}
    assert original.summarize(request).attributes == {"category": None, "color": "red", "material": "wool", "pattern": None, "style": None}


# The word limit's own rules (pipeline/wordlimit.py), from its mutation run (docs/mutation.md).

def test_a_first_sentence_over_the_limit_is_cut_at_the_limit_and_ended_cleanly():
    from pipeline.wordlimit import trim_to_word_limit

    words = [f"w{i}" for i in range(1, 61)]
    words[49] += ","  # the 50th word carries a comma: the cut drops it and ends the sentence
    assert trim_to_word_limit(" ".join(words)) == " ".join(f"w{i}" for i in range(1, 51)) + "."
    words[49] = "w50 -;:"  # punctuation left at the cut, whatever it is
    assert trim_to_word_limit(" ".join(words), limit=50) == " ".join(f"w{i}" for i in range(1, 51)) + "."
    assert trim_to_word_limit("-one two three four", limit=3) == "-one two three."  # only the end is tidied


def test_whole_sentences_are_kept_up_to_the_limit():
    from pipeline.wordlimit import trim_to_word_limit

    text = "One two three. Four five six!  Seven eight nine? Ten."
    assert trim_to_word_limit(text, limit=7) == "One two three. Four five six!"
    assert trim_to_word_limit(text, limit=10) == "One two three. Four five six! Seven eight nine? Ten."  # whitespace collapsed


def test_a_seo_field_is_cut_at_the_last_word_that_fits():
    from pipeline.wordlimit import cut_to_characters

    assert cut_to_characters("red  cotton shirt", 17) == "red cotton shirt"  # whitespace collapsed first
    assert cut_to_characters("red cotton shirt", 16) == "red cotton shirt"  # exactly the limit
    assert cut_to_characters("red cotton shirt", 15) == "red cotton"
    assert cut_to_characters("red cotton shirt", 10) == "red cotton"  # a word ending exactly at the limit is kept
    assert cut_to_characters("red cotton, shirt", 12) == "red cotton"  # the comma the cut leaves is dropped
    assert cut_to_characters("r cotton shirt", 5) == "r"  # a one-letter first word
    assert cut_to_characters("supercalifragilistic shirt", 5) == "super"  # one long word: cut at the limit
    assert cut_to_characters(" -leading stays", 20) == "-leading stays"
    assert cut_to_characters(None, 5) == "" and cut_to_characters("", 5) == ""


def test_marketing_words_are_found_once_each_lowercased_in_order():
    from pipeline.wordlimit import marketing_words_in, without_marketing

    assert marketing_words_in("BEST shirt. Buy now! best price, Amazing.") == ["best", "buy", "amazing"]
    assert marketing_words_in(None) == [] and marketing_words_in("") == []
    assert without_marketing(None) == "" and without_marketing("") == ""


def test_japanese_and_chinese_limits_follow_the_word_limit_asked_for():
    from pipeline.wordlimit import limit_text, measure, trim_to_language_limit, within_limit

    assert (limit_text("ja", 20), limit_text("zh", 20), limit_text("en", 20)) == ("50 characters", "30 characters", "20 words")
    assert within_limit("あ" * 50, "ja", 20) and not within_limit("あ" * 51, "ja", 20)
    assert trim_to_language_limit("あ" * 60, "ja", 20) == "あ" * 49 + "。"
    assert trim_to_language_limit("w " * 30, "en", 20) == " ".join(["w"] * 20) + "."
    assert (measure("red cotton shirt", "en"), measure("red cotton shirt", "ja")) == (3, 14)


def test_a_japanese_summary_keeps_whole_sentences_up_to_exactly_the_budget():
    from pipeline.wordlimit import trim_to_language_limit

    first = "あ" * 124 + "！"  # 125 characters: exactly the budget (a hard cut would end it with 。)
    assert trim_to_language_limit(first + "い" * 10 + "。", "ja") == first


def test_a_japanese_sentence_over_the_budget_is_cut_spaces_free_and_ends_with_a_full_stop():
    from pipeline.wordlimit import trim_to_language_limit

    spaced = trim_to_language_limit("あ " * 200, "ja")
    assert spaced.replace(" ", "") == "あ" * 124 + "。"  # spaces are not counted
    assert trim_to_language_limit("あ" * 123 + "、" + "い" * 100, "ja") == "あ" * 123 + "。"  # no comma before the stop


def test_taking_out_a_marketing_word_leaves_one_comma_not_two():
    from pipeline.wordlimit import without_marketing

    assert without_marketing("Soft, best, cotton shirt") == "Soft, cotton shirt"
    assert without_marketing("Soft; best: cotton") == "Soft; cotton"


def test_the_hard_cut_tidies_punctuation_only_not_letters():
    from pipeline.wordlimit import cut_to_characters, trim_to_word_limit

    words = [f"w{i}" for i in range(1, 61)]
    words[49] = "MAX"  # a word ending in X keeps its X
    assert trim_to_word_limit(" ".join(words)).endswith(" w49 MAX.")
    assert cut_to_characters("size XX shirt", 7) == "size XX"
