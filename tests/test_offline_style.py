"""Issue 19: the offline template follows the style guide as far as a template can: no word to avoid in anything it
writes (even from the caption or a CSV hint), a word to prefer written where the taxonomy lists it as a synonym of the
value; and with SEO_FIELDS_BY=template the OpenAI path's template SEO fields (made from the caption) hold it too."""

from __future__ import annotations

import openai

from pipeline.admin.brand import banned_words_in, clean_style_guide, without_avoided
from pipeline.attributes import load_attribute_schema
from pipeline.models import AttributeValue, SummaryRequest
from pipeline.summarizers.offline import OfflineSummarizer
from pipeline.summarizers.openai_summarizer import OpenAISummarizer
from support.servers import FakeOpenAI, Reply

SCHEMA = load_attribute_schema()
GUIDE = clean_style_guide("Warm and plain.", "cheap, leather, bargain bin, 安い", "trainers, soft")
WRITTEN = ("summary", "title", "seo_title", "meta_description", "alt_text")


def request(style=GUIDE, **hints) -> SummaryRequest:
    attributes = [AttributeValue("category", "sneaker", "sneakers", True), AttributeValue("color", "black", "black", True),
                  AttributeValue("material", "leather", "leather", True)]
    return SummaryRequest(caption="a cheap black leather sneaker from the bargain bin", attributes=attributes, checks=None,
                          hints=hints, style=style)


def test_the_template_never_writes_a_word_to_avoid_and_prefers_a_synonym_where_it_has_the_choice():
    plain = OfflineSummarizer(SCHEMA).summarize(request(style=None, brand="Cheap Monday"))
    assert "leather" in plain.title.lower() and "cheap" in plain.summary.lower()  # without a guide: as before
    assert "leather" in plain.tags and "sneakers" in plain.title.lower()

    result = OfflineSummarizer(SCHEMA).summarize(request(brand="Cheap Monday", notes="Soft leather lining, 安い."))
    for name in WRITTEN:
        assert banned_words_in(getattr(result, name), GUIDE) == [], (name, getattr(result, name))
    assert not any(banned_words_in(tag, GUIDE) for tag in result.tags)
    assert result.title == "Black trainers"  # 'trainers' is a synonym of sneakers and a word to prefer
    assert result.tags == ["sneakers", "black"]  # leather and the brand "Cheap Monday" dropped
    assert result.alt_text == "A black sneaker from the"  # the caption with the words to avoid taken out
    assert result.summary == "Black trainers. A black sneaker from the. Details: color black. By Monday. Soft lining."
    assert result.seo_title == "Black trainers | Monday" and result.meta_description == result.summary


def test_without_avoided_takes_words_out_and_tidies():
    assert without_avoided("A cheap, black leather shoe.", GUIDE) == "A black shoe."
    assert without_avoided("Cheap. Red tee, bargain cheap bin, nice.", GUIDE) == "Red tee, nice."  # a removal joined a phrase
    assert without_avoided("とても安いTシャツ。", GUIDE) == "とてもTシャツ。"
    assert without_avoided("cheaply made", GUIDE) == "cheaply made"  # whole words only, as the answers are checked


def test_template_seo_fields_on_the_openai_path_leave_out_the_words_to_avoid():
    answer = {"title": "Black sneakers", "summary": "Black sneakers for every day.", "tags": ["sneakers"],
              "attributes": {"category": "sneakers", "color": "black", "material": None, "pattern": None, "style": None}}
    with FakeOpenAI() as server:
        server.state.default = Reply(content=answer)
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=10)
        result = OpenAISummarizer(client, SCHEMA, max_retries=0, deadline_s=30, seo_fields_by="template").summarize(request())
    assert result.alt_text and banned_words_in(result.alt_text, GUIDE) == []  # made from the caption "a cheap ... leather ..."
    assert result.alt_text == "A black sneaker from the"


# --- seo_fields: the template's SEO title, meta description and alt text (also the OpenAI path's, SEO_FIELDS_BY=template)
def test_the_seo_title_drops_the_titles_full_stop_and_adds_the_brand_once_when_it_fits():
    from pipeline.summarizers.offline import seo_fields
    from pipeline.wordlimit import SEO_LIMITS

    assert seo_fields("Red shirt.", "A red shirt.", "", {}, "Acme")["seo_title"] == "Red shirt | Acme"
    assert seo_fields("Acme Air MAX.", "Shoes.", "", {}, "")["seo_title"] == "Acme Air MAX"  # only the full stop goes
    assert seo_fields("ACME red shirt", "A red shirt.", "", {}, "Acme")["seo_title"] == "ACME red shirt"  # named already
    limit = SEO_LIMITS["seo_title"]
    exact = "x" * (limit - len(" | Acme"))
    assert seo_fields(exact, "", "", {}, "Acme")["seo_title"] == exact + " | Acme"  # exactly the limit: added
    assert seo_fields(exact + "y", "", "", {}, "Acme")["seo_title"] == exact + "y"  # one more: not


def test_seo_fields_take_the_words_to_avoid_out_of_title_description_and_alt_text():
    from pipeline.summarizers.offline import seo_fields

    fields = seo_fields("Red cheap shirt", "A cheap red shirt.", "a cheap red shirt on a hanger", {}, "", GUIDE)
    assert fields == {"seo_title": "Red shirt", "meta_description": "A red shirt.", "alt_text": "A red shirt on a hanger"}
    # no caption: the alt text is made from the answers, and an answer may be a word to avoid too
    assert seo_fields("Red shirt", "", "", {"color": "red", "material": "leather", "category": "shirt"}, "", GUIDE)["alt_text"] == (
        "Photo of a red shirt")


def test_alt_text_describes_the_photo_from_the_caption_else_the_answers_without_labels_or_a_full_stop():
    from pipeline.summarizers.offline import alt_text_from

    assert alt_text_from("", {"category": "shirt"}) == "Photo of a shirt"
    assert alt_text_from("", {}) == "Photo of a product"
    assert alt_text_from("Sale: red shirt", {}) == "Red shirt"  # the label and the punctuation it leaves go
    assert alt_text_from("XL red shirt", {}) == "XL red shirt"
    assert alt_text_from("a red shirt, size XX.", {}) == "A red shirt, size XX"
