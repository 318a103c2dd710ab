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
