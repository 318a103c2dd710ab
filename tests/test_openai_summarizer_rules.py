"""The OpenAI summarizer's rules, one by one (written from mutants that survived tests/test_summarizers.py and
tests/test_openai_failures.py, docs/mutation.md). Requests go through the real `openai` client to the local
OpenAI-compatible server (tests/support/servers.py); clocks and sleeps are injected, never waited on."""

from __future__ import annotations

import json
from dataclasses import replace

import openai
import pytest
from openai.types.chat import ChatCompletion

from pipeline.attributes import AttributeSchema, load_attribute_schema, map_answers
from pipeline.errors import BadInputError, ConfigError, ServiceError, usage_of
from pipeline.models import StyleGuide, SummaryRequest, Usage
from pipeline.settings import Settings
from pipeline.summarizers.openai_summarizer import (
    CONTENT_FILTER_MESSAGE, QUOTA_MESSAGE, SUMMARY_HINTS, TOO_LONG_MESSAGE, OpenAISummarizer, build_messages,
    classify_error_answer, facts_for,
)
from pipeline.wordlimit import count_words
from support.servers import FakeOpenAI, Reply

SCHEMA = load_attribute_schema()
MODELS = ["gpt-4o", "gpt-4o-mini"]


def request(**changes) -> SummaryRequest:
    values = dict(caption="a pair of red leather sneakers", attributes=map_answers(SCHEMA, {"color": "red"}),
                  checks=None, hints={"brand": "Acme"}, sku="SKU-1")
    values.update(changes)
    return SummaryRequest(**values)


def answer(summary: str = "Red leather sneakers by Acme.", *, title: str = "Red leather sneakers", tags=("sneakers", "red"),
           **fields) -> dict:
    attributes = {name: None for name in SCHEMA.names()}
    attributes.update(fields.pop("attributes", {}))
    return {"title": title, "summary": summary, "tags": list(tags), "attributes": attributes, **fields}


def words(count: int, word: str = "word") -> str:
    return " ".join([word] * (count - 1) + [word + "."])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Waits:
    """Records the backoff waits instead of sleeping them (moving `clock` when given)."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


@pytest.fixture
def server():
    with FakeOpenAI() as running:
        yield running


def summarizer_for(server: FakeOpenAI, *, max_retries: int = 1, timeout: float = 5.0, **options) -> OpenAISummarizer:
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=max_retries, timeout=timeout)
    options.setdefault("sleep", Waits())
    return OpenAISummarizer(client, SCHEMA, model="gpt-4o", fallback_model="gpt-4o-mini", **options)


def outcome(server: FakeOpenAI, the_request: SummaryRequest | None = None, **options):
    """summarize() -> (the exception or result, models requested)."""
    try:
        result = summarizer_for(server, **options).summarize(the_request or request())
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        result = exc
    return result, [r["model"] for r in server.state.requests]


# --- what the model is given --------------------------------------------------------------------
def test_the_prompt_carries_the_summary_hints_but_not_the_feed_columns():
    hints = {"brand": "Acme", "notes": "Limited run", "price": "19.99 EUR", "link": "https://shop.example/x",
             "availability": "in stock", "size": "42"}
    facts = facts_for(request(hints=hints))
    assert facts["merchant_hints"] == {"brand": "Acme", "notes": "Limited run"}
    assert set(SUMMARY_HINTS) >= set(facts["merchant_hints"])
    user = build_messages(request(hints=hints))[1]
    assert user["role"] == "user" and json.loads(user["content"]) == facts


# --- one plain sentence per failure, word for word ----------------------------------------------
REFUSALS = [
    (Reply(status=429, error_code="insufficient_quota", error_type="insufficient_quota"), ConfigError, QUOTA_MESSAGE),
    (Reply(status=400, error_type="insufficient_quota"), ConfigError, QUOTA_MESSAGE),  # the type alone says quota
    (Reply(status=401, error_code="invalid_api_key", error_message="Incorrect API key provided: sk-test-****1234."), ConfigError,
     "OpenAI rejected the API key (OPENAI_API_KEY) — an admin must set a valid key, then retry the failed items."),
    (Reply(status=403, error_code="unsupported_country_region_territory"), ConfigError,
     "OpenAI denied this API key access to gpt-4o (HTTP 403, unsupported_country_region_territory) — an admin must give "
     "the key's project access to the model or change OPENAI_MODEL / OPENAI_FALLBACK_MODEL."),
    (Reply(status=403), ConfigError,
     "OpenAI denied this API key access to gpt-4o (HTTP 403) — an admin must give "
     "the key's project access to the model or change OPENAI_MODEL / OPENAI_FALLBACK_MODEL."),
    (Reply(status=404, error_code="model_not_found"), ConfigError,
     "OpenAI does not know the model gpt-4o or this API key cannot use it (HTTP 404, model_not_found) — an admin must fix "
     "OPENAI_MODEL / OPENAI_FALLBACK_MODEL (or OPENAI_BASE_URL)."),
    (Reply(status=400, error_code="content_filter"), BadInputError, CONTENT_FILTER_MESSAGE),
    (Reply(status=400, error_code="context_length_exceeded"), BadInputError, TOO_LONG_MESSAGE),
    (Reply(status=400, error_code="string_above_max_length"), BadInputError, TOO_LONG_MESSAGE),
    (Reply(status=413), BadInputError, TOO_LONG_MESSAGE),
    (Reply(status=400, error_code="invalid_value", error_message="Invalid   parameter:\n'response_format'."), ConfigError,
     "OpenAI refused the request as invalid (HTTP 400, invalid_value: Error code: 400 - Invalid parameter: 'response_format'.) — an admin "
     "should check that gpt-4o supports structured outputs (OPENAI_MODEL)."),
    (Reply(status=422, error_code="unprocessable"), ServiceError,
     "OpenAI refused the request (HTTP 422, unprocessable); retry the item later or ask an admin."),
    (Reply(status=422), ServiceError, "OpenAI refused the request (HTTP 422); retry the item later or ask an admin."),
]


@pytest.mark.parametrize("reply, error_class, message", REFUSALS)
def test_each_error_retrying_cannot_fix_is_one_exact_sentence_after_one_request(server, reply, error_class, message):
    server.state.default = reply
    error, models = outcome(server)
    assert models == ["gpt-4o"]
    assert type(error) is error_class and str(error) == message


def test_a_long_error_message_from_openai_is_shortened_to_200_characters(server):
    long = "x" * 150 + " " + "y" * 150  # 301 characters
    server.state.default = Reply(status=400, error_message=long)
    error, _ = outcome(server)
    shown = str(error).split("(HTTP 400: ")[1].split(") — ")[0]
    assert shown == ("Error code: 400 - " + long)[:199] + "…" and len(shown) == 200  # the SDK's prefix, then OpenAI's text
    exactly = "z" * 200  # at the limit: shown whole
    assert classify_error_answer(400, {"message": exactly}, "gpt-4o")[1].args[0].count("z") == 200


GAVE_UP = [
    (Reply(status=429, error_type="rate_limit_error"),
     "OpenAI is rate-limiting this account right now (gpt-4o and gpt-4o-mini); retry the failed items in a few minutes "
     "or lower CONCURRENCY."),
    (Reply(status=503), "OpenAI is unavailable right now (HTTP 503 from gpt-4o and gpt-4o-mini); retry the failed items later."),
    (Reply(status=408), "OpenAI is unavailable right now (HTTP 408 from gpt-4o and gpt-4o-mini); retry the failed items later."),
    (Reply(status=409), "OpenAI is unavailable right now (HTTP 409 from gpt-4o and gpt-4o-mini); retry the failed items later."),
]


@pytest.mark.parametrize("reply, message", GAVE_UP)
def test_transient_errors_on_both_models_end_in_one_exact_sentence(server, reply, message):
    server.state.default = reply
    error, models = outcome(server, max_retries=1)
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    assert type(error) is ServiceError and str(error) == message


@pytest.mark.parametrize("reply, message", [
    (Reply(status=500), "OpenAI is unavailable right now (HTTP 500 from gpt-4o)"),
    (Reply(status=429), "OpenAI is rate-limiting this account right now (gpt-4o)"),
])
def test_out_of_time_says_what_the_last_error_was_and_the_deadline(server, reply, message):
    clock = FakeClock()
    server.state.default = reply
    server.state.on_request = lambda _request: setattr(clock, "now", clock.now + 20.0)
    error, models = outcome(server, max_retries=5, deadline_s=45, clock=clock, sleep=Waits(clock))
    assert models == ["gpt-4o"] * 3  # 20 s each; no time for a fourth, nor for the fallback
    assert str(error).startswith(message) and str(error).endswith("Gave up after 45 s (OPENAI_DEADLINE_S).")


def test_an_answer_that_stays_unusable_because_asking_again_failed_says_both(server):
    server.state.script = [Reply(raw_content='{"title": "Re', finish_reason="length", prompt_tokens=4, completion_tokens=2)]
    server.state.default = Reply(status=503)
    error, models = outcome(server, max_retries=0)
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert type(error) is ServiceError
    assert str(error) == ("OpenAI's answer was cut off before it finished (gpt-4o and gpt-4o-mini); the item was not summarized — retry it, "
                          "or write the summary by hand. Asking again failed too: OpenAI is unavailable right now "
                          "(HTTP 503 from gpt-4o and gpt-4o-mini); retry the failed items later.")
    assert [(u.model, u.input_tokens, u.output_tokens) for u in usage_of(error)] == [("gpt-4o", 4, 2)]


def test_an_answer_still_unusable_after_asking_again_is_one_exact_sentence(server):
    server.state.default = Reply(raw_content="[]")  # JSON, but not the object asked for
    error, models = outcome(server)
    assert models == ["gpt-4o", "gpt-4o"]
    assert str(error) == ("OpenAI's answer did not follow the requested JSON format even after it was asked again (gpt-4o); "
                          "the item was not summarized — retry it, or write the summary by hand.")
    assert "Your previous answer did not follow the requested JSON format." in server.state.requests[1]["messages"][-1]["content"]


def test_a_refusal_is_quoted_shortened_and_on_one_line(server):
    refusal = "I'm sorry,\n  I can't   help. " + "z" * 250
    server.state.default = Reply(refusal=refusal)
    error, _ = outcome(server)
    quoted = " ".join(refusal.split())[:199] + "…"
    assert type(error) is BadInputError
    assert str(error) == (f"OpenAI declined to describe this product (\"{quoted}\"); check the photo and the hints, "
                          "or write the summary by hand.")


# --- answers that are nearly right ----------------------------------------------------------------
def test_a_missing_attribute_is_a_format_problem_not_a_value_to_drop(server):
    broken = answer()
    del broken["attributes"]["color"]
    server.state.script = [Reply(broken), Reply(answer(attributes={"color": "red"}))]
    result, models = outcome(server)
    assert models == ["gpt-4o", "gpt-4o"]  # asked again: the schema requires every attribute
    assert "did not follow the requested JSON format" in server.state.requests[1]["messages"][-1]["content"]
    assert result.attributes["color"] == "red"


def test_out_of_vocabulary_values_are_dropped_only_inside_the_attributes(server):
    server.state.default = Reply(answer(attributes={"color": "chartreuse", "material": "tweed", "pattern": "solid"}))
    result, models = outcome(server)
    assert models == ["gpt-4o"] and result.attributes == {"category": None, "color": None, "material": None,
                                                          "pattern": "solid", "style": None}


# --- settings reach the summarizer ---------------------------------------------------------------
def test_the_settings_choose_the_server_the_models_the_retries_and_the_timeout(server):
    settings = Settings(_env_file=None, openai_api_key="sk-x", openai_base_url=server.base_url, openai_model="main-model",
                        openai_fallback_model="cheap-model", openai_max_retries=1, openai_timeout_s=12, openai_deadline_s=45,
                        seo_fields_by="model")
    summarizer = OpenAISummarizer.from_settings(settings, SCHEMA)
    summarizer.sleep = Waits()
    server.state.default = Reply(status=500)
    with pytest.raises(ServiceError, match=r"Gave up|unavailable"):
        summarizer.summarize(request())
    assert [r["model"] for r in server.state.requests] == ["main-model", "main-model", "cheap-model", "cheap-model"]
    assert {float(h["x-stainless-read-timeout"]) for h in server.state.headers} == {12.0}
    assert {h["x-stainless-retry-count"] for h in server.state.headers} == {"0"}  # the SDK's own retries are off
    schema = server.state.requests[0]["response_format"]["json_schema"]["schema"]
    assert "seo_title" in schema["properties"]  # SEO_FIELDS_BY=model asks the model for them
    assert summarizer.deadline_s == 45


def test_without_a_key_the_openai_summarizer_says_which_setting_is_missing():
    with pytest.raises(ConfigError) as refused:
        OpenAISummarizer.from_settings(Settings(_env_file=None, openai_api_key=None), SCHEMA)
    assert str(refused.value) == "SUMMARIZER=openai needs OPENAI_API_KEY (or use SUMMARIZER=offline)."


# --- Batch API error lines are classified as the real-time path classifies them ----------------------
@pytest.mark.parametrize("status, error, transient, error_class, message", [
    (429, {"code": None, "type": "rate_limit_error", "message": "slow down"}, True, ServiceError,
     "OpenAI could not answer for this product (HTTP 429 from gpt-4o)."),
    ("503", None, True, ServiceError, "OpenAI could not answer for this product (HTTP 503 from gpt-4o)."),
    (500, {"code": "server_error"}, True, ServiceError, "OpenAI could not answer for this product (HTTP 500, server_error from gpt-4o)."),
    (408, "not a dict", True, ServiceError, "OpenAI could not answer for this product (HTTP 408 from gpt-4o)."),
    (409, {}, True, ServiceError, "OpenAI could not answer for this product (HTTP 409 from gpt-4o)."),
    (429, {"code": "insufficient_quota"}, False, ConfigError, QUOTA_MESSAGE),
    (429, {"type": "insufficient_quota"}, False, ConfigError, QUOTA_MESSAGE),
    (403, {"code": "billing_not_active"}, False, ConfigError, QUOTA_MESSAGE),
    (400, {"code": "billing_hard_limit_reached"}, False, ConfigError, QUOTA_MESSAGE),
    (401, {"message": "Incorrect API key provided: sk-****"}, False, ConfigError,
     "OpenAI rejected the API key (OPENAI_API_KEY) — an admin must set a valid key, then retry the failed items."),
    (400, {"code": "content_filter"}, False, BadInputError, CONTENT_FILTER_MESSAGE),
    (400, {"code": None, "message": None}, False, ConfigError,
     "OpenAI refused the request as invalid (HTTP 400: ) — an admin should check that gpt-4o supports structured outputs (OPENAI_MODEL)."),
    (400, {"code": "invalid_value", "message": "Bad\n value"}, False, ConfigError,
     "OpenAI refused the request as invalid (HTTP 400, invalid_value: Bad value) — an admin should check that gpt-4o supports "
     "structured outputs (OPENAI_MODEL)."),
    (404, {"code": "model_not_found"}, False, ConfigError,
     "OpenAI does not know the model gpt-4o or this API key cannot use it (HTTP 404, model_not_found) — an admin must fix "
     "OPENAI_MODEL / OPENAI_FALLBACK_MODEL (or OPENAI_BASE_URL)."),
])
def test_a_batch_error_line_is_classified_like_a_real_time_error(status, error, transient, error_class, message):
    retry, problem = classify_error_answer(status, error, "gpt-4o")
    assert (retry, type(problem), str(problem)) == (transient, error_class, message)


# --- a corrective answer is kept only when it is better -------------------------------------------
GUIDE = StyleGuide(avoid=["budget"])


def test_a_corrective_answer_without_the_word_to_avoid_is_kept(server):
    server.state.script = [Reply(answer("A budget red sneaker.")), Reply(answer("A red sneaker."))]
    result, models = outcome(server, request(style=GUIDE))
    assert models == ["gpt-4o", "gpt-4o"] and result.summary == "A red sneaker."
    assert len(result.usage) == 2


def test_a_corrective_answer_further_over_the_limit_is_not_kept(server):
    first, second = words(55, "first"), words(58, "second")
    server.state.script = [Reply(answer(first)), Reply(answer(second))]
    result, _ = outcome(server)
    assert result.summary.startswith("first") and count_words(result.summary) <= 50


def test_a_corrective_answer_less_far_over_the_limit_is_kept_and_trimmed(server):
    server.state.script = [Reply(answer(words(58, "first"))), Reply(answer(words(52, "second")))]
    result, _ = outcome(server)
    assert result.summary.startswith("second") and count_words(result.summary) <= 50


def test_an_answer_within_every_limit_is_not_asked_again(server):
    server.state.default = Reply(answer(words(50)))
    result, models = outcome(server, request(style=GUIDE))
    assert models == ["gpt-4o"] and count_words(result.summary) == 50


# --- the corrective request says exactly what to fix ----------------------------------------------
def test_the_corrective_request_lists_every_problem_in_one_message(server):
    long_ja = "赤い革のスニーカーです。" * 12  # 12 x 12 = 144 characters: over the 125 of Japanese
    first = answer(words(53), tags=["sneakers", "budget"], summaries={"de": "Rote Ledersneaker.", "ja": long_ja},
                   seo_title="T" * 75, meta_description="A red leather sneaker.", alt_text="Buy a red sneaker")
    server.state.script = [Reply(first), Reply(first)]
    summarizer = summarizer_for(server, seo_fields_by="model")
    with pytest.raises(BadInputError, match="still used 'budget'"):  # the same answer again: the word stayed
        summarizer.summarize(request(style=GUIDE, languages=("de", "ja")))
    asked = server.state.requests[1]["messages"]
    assert asked[-2] == {"role": "assistant", "content": asked[-2]["content"]} and json.loads(asked[-2]["content"])["summary"] == words(53)
    assert asked[-1] == {"role": "user", "content": (
        "The summary has 53 words. Rewrite it in at most 50 words. "
        "The ja summary is longer than 125 characters; shorten it. "
        "The seo_title has 75 characters. Rewrite it in at most 70 characters. "
        "The alt_text must describe what the photo shows, without buy: no marketing words, prices or calls to action. "
        "Do not use these words from the style guide's words to avoid: budget. They are in: tag 2. "
        "Rewrite accordingly; keep the other fields.")}


def test_a_word_to_avoid_that_stays_fails_the_item_naming_the_word(server):
    server.state.default = Reply(answer("A budget red sneaker.", title="Budget sneaker"))
    error, models = outcome(server, request(style=StyleGuide(avoid=["cheap", "budget"])))
    assert models == ["gpt-4o", "gpt-4o"]
    assert type(error) is BadInputError and str(error) == (
        "The summary still used 'budget' from the style guide's words to avoid after it was asked again (gpt-4o); "
        "retry the item or write the summary by hand.")
    assert "They are in: title, summary." in server.state.requests[1]["messages"][-1]["content"]


# --- extra languages -------------------------------------------------------------------------------
def test_each_extra_language_is_asked_for_and_its_summary_tidied_and_held_to_its_limit(server):
    long_de = words(60, "Schuh")
    server.state.default = Reply(answer(summaries={"de": "  Rote \n Ledersneaker.  ", "ja": "赤いスニーカー。", "fr": long_de}))
    result, models = outcome(server, request(languages=("de", "ja", "fr")))
    schema = server.state.requests[0]["response_format"]["json_schema"]["schema"]
    summaries = schema["$defs"]["LanguageSummaries"]["properties"]
    assert set(summaries) == {"de", "ja", "fr"}
    assert summaries["ja"]["description"] == "The summary in Japanese, at most 125 characters."
    assert summaries["de"]["description"] == "The summary in German, at most 50 words."
    assert models == ["gpt-4o", "gpt-4o"]  # fr was over its limit: asked again, still over, trimmed
    assert result.summaries["de"] == "Rote Ledersneaker." and result.summaries["ja"] == "赤いスニーカー。"
    assert count_words(result.summaries["fr"]) == 50


def test_a_corrective_answer_that_brings_a_language_within_its_limit_is_kept(server):
    long_ja = "あ" * 130  # 5 characters over; the second answer's longer English (45 words) is still within its limit
    server.state.script = [Reply(answer(words(30, "first"), summaries={"ja": long_ja})),
                           Reply(answer(words(45, "second"), summaries={"ja": "赤いスニーカー。"}))]
    result, _ = outcome(server, request(languages=("ja",)))
    assert result.summary.startswith("second") and result.summaries == {"ja": "赤いスニーカー。"}


def test_a_corrective_answer_is_weighed_over_the_english_and_the_language_summaries_together(server):
    # first: 52 words (2 over), Japanese 5 characters over; second: 57 words (7 over), Japanese within: 7 > 2 + 5? no, 7 = 7
    long_ja = "あ" * 130
    server.state.script = [Reply(answer(words(52, "first"), summaries={"ja": long_ja})),
                           Reply(answer(words(56, "second"), summaries={"ja": "あ" * 20}))]
    result, _ = outcome(server, request(languages=("ja",)))
    assert result.summary.startswith("second")  # 6 over < 2 + 5 over: the second answer is better
    server.state.requests.clear()
    server.state.script = [Reply(answer(words(52, "first"), summaries={"ja": long_ja})),
                           Reply(answer(words(58, "second"), summaries={"ja": "あ" * 20}))]
    result, _ = outcome(server, request(languages=("ja",)))
    assert result.summary.startswith("first")  # 8 over > 7 over: the first answer stays (trimmed)


# --- SEO fields written by the model (SEO_FIELDS_BY=model) -------------------------------------------
def test_model_written_seo_fields_are_tidied_cut_at_a_word_and_free_of_marketing(server):
    title = "Red leather sneakers with white soles and laces for everyday city walking and weekends"  # 86
    server.state.default = Reply(answer(seo_title=title, meta_description="  A red \n leather sneaker. ",
                                        alt_text="Buy these red leather sneakers, on sale"))
    result, models = outcome(server, seo_fields_by="model")
    assert models == ["gpt-4o", "gpt-4o"]
    assert result.seo_title == "Red leather sneakers with white soles and laces for everyday city" and len(result.seo_title) <= 70
    assert result.meta_description == "A red leather sneaker."
    assert result.alt_text == "these red leather sneakers"


def test_seo_fields_missing_from_an_answer_are_left_empty_for_a_person(server):
    server.state.default = Reply(answer())  # another OpenAI-compatible server that leaves them out
    result, models = outcome(server, seo_fields_by="model")
    assert models == ["gpt-4o"] and (result.seo_title, result.meta_description, result.alt_text) == ("", "", "")


def test_a_shorter_seo_title_makes_the_corrective_answer_better(server):
    server.state.script = [Reply(answer(seo_title="A" * 90)), Reply(answer(seo_title="Red sneakers"))]
    result, _ = outcome(server, seo_fields_by="model")
    assert result.seo_title == "Red sneakers"


def test_an_unknown_seo_fields_by_is_refused_with_the_choices(server):
    with pytest.raises(ConfigError) as refused:
        summarizer_for(server, seo_fields_by="human")
    assert str(refused.value) == "SEO_FIELDS_BY='human': choose one of template, model."


# --- another taxonomy version ------------------------------------------------------------------------
def test_a_twin_for_another_taxonomy_asks_and_answers_with_that_version_only(server):
    smaller = AttributeSchema.model_validate({"attributes": [SCHEMA.spec("color").model_dump()]})
    original = summarizer_for(server)
    original.response_for(("de",))  # cached on the original before the twin exists
    twin = original.with_schema(smaller)
    server.state.default = Reply({"title": "Red sneakers", "summary": "Red sneakers.", "tags": ["red"],
                                  "attributes": {"color": "red"}, "summaries": {"de": "Rote Sneaker."}})
    result = twin.summarize(request(languages=("de",)))
    sent = server.state.requests[0]["response_format"]["json_schema"]["schema"]
    assert set(sent["$defs"]["ProductAttributes"]["properties"]) == {"color"}
    assert result.attributes == {"color": "red"} and result.summaries == {"de": "Rote Sneaker."}
    assert twin.request_body([], "gpt-4o")["response_format"]["json_schema"]["schema"]["$defs"]["ProductAttributes"]["required"] == ["color"]
    assert set(original.response_for()[0].model_fields["attributes"].annotation.model_fields) == set(SCHEMA.names())
    assert (twin.model, twin.fallback_model, twin.deadline_s) == (original.model, original.fallback_model, original.deadline_s)


# --- a Batch API answer goes through the same checks --------------------------------------------------
def completion(content: dict | None = None, *, refusal: str | None = None, finish_reason: str = "stop") -> ChatCompletion:
    return ChatCompletion.model_validate({
        "id": "batch-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": None if content is None else json.dumps(content), "refusal": refusal}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}})


BATCH_USAGE = [Usage("llm_batch", "gpt-4o", 100, 50, 1, 0.0)]


def test_a_batch_answer_within_the_limits_is_used_as_is(server):
    summarizer = summarizer_for(server)
    result = summarizer.summarize_answer(request(), completion(answer("Red sneakers by Acme.")), "gpt-4o", BATCH_USAGE)
    assert server.state.requests == []  # nothing asked in real time
    assert (result.summary, result.model, result.usage) == ("Red sneakers by Acme.", "gpt-4o", BATCH_USAGE)
    assert result.attributes["color"] is None and result.tags == ["sneakers", "red"]
    assert (result.seo_title, result.meta_description) == ("Red leather sneakers | Acme", "Red sneakers by Acme.")  # from the request


def test_a_batch_answer_cut_off_twice_fails_naming_the_model_once(server):
    server.state.default = Reply(raw_content='{"title": "Red', finish_reason="length", prompt_tokens=7, completion_tokens=2)
    summarizer = summarizer_for(server)
    with pytest.raises(ServiceError) as failed:
        summarizer.summarize_answer(request(), completion(None, finish_reason="length"), "gpt-4o", BATCH_USAGE)
    assert str(failed.value) == ("OpenAI's answer was cut off before it finished even after it was asked again (gpt-4o); "
                                 "the item was not summarized — retry it, or write the summary by hand.")
    assert [(u.kind, u.input_tokens) for u in usage_of(failed.value)] == [("llm_batch", 100), ("llm", 7)]


def test_an_over_long_batch_answer_is_corrected_in_real_time_and_both_calls_are_kept(server):
    server.state.default = Reply(answer("Short red sneakers."), prompt_tokens=9, completion_tokens=4)
    summarizer = summarizer_for(server)
    result = summarizer.summarize_answer(request(), completion(answer(words(60))), "gpt-4o", BATCH_USAGE)
    assert [r["model"] for r in server.state.requests] == ["gpt-4o"]
    assert server.state.requests[0]["messages"][-1]["content"].startswith("The summary has 60 words.")
    assert result.summary == "Short red sneakers." and result.model == "gpt-4o"
    assert [(u.kind, u.model, u.input_tokens) for u in result.usage] == [("llm_batch", "gpt-4o", 100), ("llm", "gpt-4o", 9)]


def test_a_refused_batch_answer_fails_the_item_and_keeps_what_was_paid(server):
    summarizer = summarizer_for(server)
    with pytest.raises(BadInputError, match="declined to describe this product") as refused:
        summarizer.summarize_answer(request(), completion(refusal="No."), "gpt-4o", BATCH_USAGE)
    assert usage_of(refused.value) == BATCH_USAGE and server.state.requests == []


# --- what an answer may look like ----------------------------------------------------------------------
@pytest.mark.parametrize("content, problem", [
    ("", "was empty"),
    ("   ", "was not JSON"),
    ('  {"title": "Red', "was not valid JSON (it looks cut off)"),
    ('[{"title"', "was not valid JSON (it looks cut off)"),
])
def test_an_unusable_answer_is_named_in_the_corrective_request(server, content, problem):
    server.state.script = [Reply(raw_content=content), Reply(answer())]
    result, models = outcome(server)
    assert models == ["gpt-4o", "gpt-4o"] and result.summary == "Red leather sneakers by Acme."
    assert server.state.requests[1]["messages"][-1] == {"role": "user", "content": (
        f"Your previous answer {problem}. Answer again with one complete JSON object that follows the schema; "
        "keep the summary under 50 words.")}


def test_tags_are_lowercased_tidied_unique_and_at_most_twelve(server):
    tags = ["  Red   Sneakers ", "red sneakers", "", "LEATHER"] + [f"t{i}" for i in range(20)]
    server.state.default = Reply(answer(tags=tags, title="  Red \n sneakers  "))
    result, _ = outcome(server)
    assert result.tags == ["red sneakers", "leather"] + [f"t{i}" for i in range(10)]
    assert result.title == "Red sneakers"


def test_the_facts_carry_the_sku_and_the_photo_checks_only_when_known():
    from pipeline.models import PhotoChecks

    facts = facts_for(request(sku=None))
    assert "sku" not in facts and "photo" not in facts
    assert facts["attributes"]["color"] == {"answer": "red", "in_allowed_list": True}
    checks = PhotoChecks(width=100, height=80, too_small=True, blur_score=5.0, blurry=True, brightness=120.0, too_dark=False,
                         too_bright=False, plain_background=True, white_background=True, dominant_colors=["red", "white"])
    assert checks.warnings()  # the photo's problems reach the model
    facts = facts_for(request(checks=checks))
    assert facts["sku"] == "SKU-1" and facts["photo"] == {"dominant_colours": ["red", "white"], "warnings": checks.warnings()}


# --- how long to wait before trying again ------------------------------------------------------------
def rate_limited(headers: dict[str, str]) -> openai.RateLimitError:
    """The SDK's own error for a 429 answer with these headers (what `chat.completions.create` raises)."""
    import httpx2  # the HTTP client this openai release is built on

    response = httpx2.Response(429, headers=headers, request=httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions"))
    return openai.RateLimitError("rate limited", response=response, body=None)


@pytest.mark.parametrize("headers, wait", [
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after": "3"}, 3.0),  # seconds
    ({"Retry-After": "2.5"}, 2.5),
    ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),  # an unreadable value: the next header
    ({"retry-after": "20"}, 20.0),  # the longest wait still taken
    ({"retry-after": "20.5"}, float("inf")),  # longer: try the fallback model instead of waiting
    ({"retry-after-ms": "-5"}, 0.0),
])
def test_the_servers_retry_after_is_honoured(headers, wait):
    from pipeline.summarizers.openai_summarizer import _retry_wait

    assert _retry_wait(rate_limited(headers), attempt=3) == wait


def test_without_retry_after_the_wait_doubles_from_half_a_second_up_to_eight_with_jitter():
    from pipeline.summarizers.openai_summarizer import _retry_wait

    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        waits = [_retry_wait(rate_limited({"retry-after": "later"}), attempt) for _ in range(40)]
        assert all(0.75 * ceiling <= w <= ceiling for w in waits), (attempt, waits)
        assert len(set(waits)) > 1  # jittered: runners that failed together do not retry together
    assert 0.375 <= _retry_wait(None, 1) <= 0.5


# --- SEO fields from the template (SEO_FIELDS_BY=template, the default) --------------------------------
def test_by_default_the_seo_fields_come_from_the_template_with_the_answers_title_and_summary(server):
    server.state.default = Reply(answer("Red leather sneakers by Acme.", title="Red  leather sneakers"))
    result, _ = outcome(server, request(caption="", attributes=map_answers(SCHEMA, {"color": "chartreuse", "material": "leather"})))
    assert result.seo_title == "Red leather sneakers | Acme"
    assert result.meta_description == "Red leather sneakers by Acme."
    assert result.alt_text == "Photo of a leather"  # what the captioner answered in the vocabulary; not "chartreuse"


def test_time_that_ran_out_before_any_request_says_no_model_was_tried(server):
    clock = FakeClock()

    def jumping_clock() -> float:  # the machine was suspended between the start and the first request
        clock.now += 100.0
        return clock.now

    error, models = outcome(server, deadline_s=60, clock=jumping_clock)
    assert models == [] and type(error) is ServiceError
    assert str(error) == ("OpenAI did not answer in time (no model); the item was not summarized — retry the failed items "
                          "later. Gave up after 60 s (OPENAI_DEADLINE_S).")


def test_the_template_alt_text_describes_the_caption_when_there_is_one(server):
    server.state.default = Reply(answer())
    result, _ = outcome(server, request(caption="a pair of red leather sneakers on a white floor", hints={}))
    assert result.alt_text == "A pair of red leather sneakers on a white floor"
    assert result.seo_title == "Red leather sneakers"  # no brand hint: the title alone


def test_seo_fields_exactly_at_their_limits_are_not_asked_again(server):
    server.state.default = Reply(answer(seo_title="T" * 70, meta_description="M" * 160, alt_text="A" * 125))
    result, models = outcome(server, seo_fields_by="model")
    assert models == ["gpt-4o"] and (len(result.seo_title), len(result.meta_description), len(result.alt_text)) == (70, 160, 125)


@pytest.mark.parametrize("first, second", [
    ({"seo_title": "A" * 75, "meta_description": "M" * 165}, {"seo_title": "B" * 78}),  # 5 + 5 over > 8 over
    ({"seo_title": "A" * 90}, {"seo_title": "B" * 71, "meta_description": "M" * 161}),  # 20 over > 1 + 1 over
    ({"seo_title": "A" * 100, "alt_text": "Buy a red sneaker"}, {"seo_title": "B" * 85}),  # 30 over + marketing > 15 over
], ids=["sum-of-fields", "characters-over-not-length", "marketing-adds-to-length"])
def test_the_corrective_answer_less_far_over_the_seo_limits_in_total_is_kept(server, first, second):
    server.state.script = [Reply(answer(**first)), Reply(answer(**second))]
    result, models = outcome(server, seo_fields_by="model")
    assert models == ["gpt-4o", "gpt-4o"] and result.seo_title.startswith("B")


def test_a_word_to_avoid_in_a_model_written_seo_field_is_asked_again_naming_the_field(server):
    server.state.script = [Reply(answer(seo_title="Red sneakers", meta_description="A budget sneaker.", alt_text="A red sneaker")),
                           Reply(answer(seo_title="Red sneakers", meta_description="A red sneaker.", alt_text="A red sneaker"))]
    result, models = outcome(server, request(style=GUIDE), seo_fields_by="model")
    assert models == ["gpt-4o", "gpt-4o"] and result.meta_description == "A red sneaker."
    assert server.state.requests[1]["messages"][-1]["content"] == (
        "Do not use these words from the style guide's words to avoid: budget. They are in: meta_description. "
        "Rewrite accordingly; keep the other fields.")


def test_a_twin_for_another_taxonomy_keeps_asking_the_model_for_the_seo_fields(server):
    smaller = AttributeSchema.model_validate({"attributes": [SCHEMA.spec("color").model_dump()]})
    twin = summarizer_for(server, seo_fields_by="model").with_schema(smaller)
    properties = twin.request_body([], "gpt-4o")["response_format"]["json_schema"]["schema"]["properties"]
    assert {"seo_title", "meta_description", "alt_text"} <= set(properties)


def test_an_answer_over_in_japanese_by_one_beats_one_over_in_english_by_two(server):
    server.state.script = [Reply(answer(words(52, "first"), summaries={"ja": "あ" * 20})),
                           Reply(answer(words(45, "second"), summaries={"ja": "あ" * 126}))]
    result, _ = outcome(server, request(languages=("ja",)))
    assert result.summary.startswith("second") and len(result.summaries["ja"]) <= 125  # then trimmed to its budget


@pytest.mark.parametrize("first_alt, second_alt, kept, named", [
    ("Buy a red sneaker", "A red sneaker", "A red sneaker", "without buy:"),  # a marketing word makes an answer worse
    ("Buy a red sneaker on sale", "Buy a red sneaker", "a red sneaker", "without buy, on sale:"),  # two are worse than one
])
def test_marketing_words_in_the_alt_text_make_an_answer_worse(server, first_alt, second_alt, kept, named):
    server.state.script = [Reply(answer(alt_text=first_alt)), Reply(answer(alt_text=second_alt, title="Second"))]
    result, _ = outcome(server, seo_fields_by="model")
    assert result.title == "Second" and result.alt_text == kept  # the second answer, its marketing word taken out
    assert f"The alt_text must describe what the photo shows, {named} no marketing words" in server.state.requests[1]["messages"][-1]["content"]


def test_a_word_to_avoid_in_a_language_summary_is_asked_again_naming_that_summary(server):
    server.state.script = [Reply(answer(summaries={"de": "Ein budget Sneaker."})), Reply(answer(summaries={"de": "Ein roter Sneaker."}))]
    result, models = outcome(server, request(style=GUIDE, languages=("de",)))
    assert models == ["gpt-4o", "gpt-4o"] and result.summaries == {"de": "Ein roter Sneaker."}
    assert "They are in: summary (de)." in server.state.requests[1]["messages"][-1]["content"]


def test_the_template_seo_fields_leave_out_a_word_to_avoid_from_the_caption(server):
    server.state.default = Reply(answer())
    result, _ = outcome(server, request(caption="a budget pair of red sneakers", style=GUIDE))
    assert result.alt_text == "A pair of red sneakers" and "budget" not in result.alt_text.lower()


def test_a_batch_answer_without_an_attribute_its_category_requires_is_asked_again(server):
    from pipeline.attributes import CategoryRule

    strict = SCHEMA.model_copy(update={"categories": {"sneakers": CategoryRule(required=["color"])}})
    summarizer = summarizer_for(server).with_schema(strict)
    sneakers = request(attributes=map_answers(strict, {"category": "sneakers", "color": "red"}))
    server.state.default = Reply(answer(attributes={"category": "sneakers", "color": "red"}))
    result = summarizer.summarize_answer(sneakers, completion(answer(attributes={"category": "sneakers"})), "gpt-4o", BATCH_USAGE)
    assert len(server.state.requests) == 1  # the colour the category requires was null: asked again in real time
    sent = server.state.requests[0]["response_format"]["json_schema"]["schema"]["$defs"]["ProductAttributes"]["properties"]["color"]
    assert "anyOf" not in sent and result.attributes["color"] == "red"


# --- which models are asked, and when time is up (the request loop, _complete) ----------------------
def summarizer_with(server: FakeOpenAI, fallback_model: str | None, *, max_retries: int = 1, timeout: float = 5.0,
                    **options) -> OpenAISummarizer:
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=max_retries, timeout=timeout)
    options.setdefault("sleep", Waits())
    return OpenAISummarizer(client, SCHEMA, model="gpt-4o", fallback_model=fallback_model, **options)


def failure(summarizer: OpenAISummarizer, the_request: SummaryRequest | None = None) -> Exception:
    with pytest.raises(Exception) as failed:
        summarizer.summarize(the_request or request())
    return failed.value


@pytest.mark.parametrize("fallback_model", [None, "", "gpt-4o"], ids=["none", "empty", "same-as-the-model"])
def test_without_a_distinct_fallback_only_the_main_model_is_asked(server, fallback_model):
    server.state.default = Reply(status=503)
    error = failure(summarizer_with(server, fallback_model))
    assert [r["model"] for r in server.state.requests] == ["gpt-4o", "gpt-4o"]
    assert type(error) is ServiceError
    assert str(error) == "OpenAI is unavailable right now (HTTP 503 from gpt-4o); retry the failed items later."


def test_a_timeout_on_the_only_model_is_retried_on_it_then_says_openai_did_not_answer(server):
    server.state.default = Reply(hang=True)  # never answers: every request ends at its (short) timeout
    error = failure(summarizer_with(server, None, timeout=0.05))
    assert [r["model"] for r in server.state.requests] == ["gpt-4o", "gpt-4o"]
    assert type(error) is ServiceError
    assert str(error) == "OpenAI did not answer in time (gpt-4o); the item was not summarized — retry the failed items later."


def test_a_retry_is_still_started_with_exactly_the_minimum_request_time_left(server):
    clock = FakeClock()
    server.state.default = Reply(status=500, retry_after_ms="0")
    server.state.on_request = lambda _request: setattr(clock, "now", clock.now + 59.0)  # 1 s left after the first
    error = failure(summarizer_with(server, "gpt-4o-mini", deadline_s=60, min_request_s=1.0, clock=clock, sleep=Waits(clock)))
    assert [r["model"] for r in server.state.requests] == ["gpt-4o", "gpt-4o"]  # the retry, not the fallback
    assert [float(h["x-stainless-read-timeout"]) for h in server.state.headers] == [5.0, 1.0]
    assert str(error) == ("OpenAI is unavailable right now (HTTP 500 from gpt-4o); retry the failed items later. "
                          "Gave up after 60 s (OPENAI_DEADLINE_S).")


def test_no_request_is_started_exactly_at_the_deadline(server):
    times = iter([1000.0])  # the call starts at 1000 s; every later look at the clock is at its 60 s deadline

    def clock() -> float:
        return next(times, 1060.0)

    error = failure(summarizer_with(server, "gpt-4o-mini", deadline_s=60, clock=clock))
    assert server.state.requests == [] and type(error) is ServiceError
    assert str(error) == ("OpenAI did not answer in time (no model); the item was not summarized — retry the failed items "
                          "later. Gave up after 60 s (OPENAI_DEADLINE_S).")


@pytest.mark.parametrize("deadline_s, says_deadline", [(45, True), (61, False)], ids=["ended-past-it", "1-s-left"])
def test_retries_used_up_say_the_deadline_only_when_less_than_a_request_is_left(server, deadline_s, says_deadline):
    clock = FakeClock()
    server.state.default = Reply(status=500)
    server.state.on_request = lambda _request: setattr(clock, "now", clock.now + 20.0)
    error = failure(summarizer_with(server, None, max_retries=2, deadline_s=deadline_s, clock=clock))
    assert [r["model"] for r in server.state.requests] == ["gpt-4o"] * 3  # every retry made; the last ends at 60 s
    message = "OpenAI is unavailable right now (HTTP 500 from gpt-4o); retry the failed items later."
    assert str(error) == (message + f" Gave up after {deadline_s} s (OPENAI_DEADLINE_S)." if says_deadline else message)


def answers_as_snapshot(server: FakeOpenAI, snapshot: str) -> list[str]:
    """The server answers naming the model snapshot that answered (as OpenAI does: gpt-4o -> gpt-4o-2024-08-06);
    returns the list of models the requests asked for."""
    asked: list[str] = []

    def rename(body: dict) -> Reply | None:
        asked.append(body["model"])
        body["model"] = snapshot  # the completion is built from this body after the responder has run
        return server.state.script.pop(0) if server.state.script else server.state.default

    server.state.responder = rename
    return asked


@pytest.mark.parametrize("tokens", [(120, 60), (0, 0)], ids=["tokens", "zero-tokens"])
def test_each_paid_answer_leaves_one_usage_row_with_its_snapshot_tokens_and_latency(server, tokens):
    clock = FakeClock()
    asked = answers_as_snapshot(server, "gpt-4o-2024-08-06")
    server.state.default = Reply(answer(), prompt_tokens=tokens[0], completion_tokens=tokens[1])
    server.state.on_request = lambda _request: setattr(clock, "now", clock.now + 2.5)  # each answer takes 2.5 s
    result = summarizer_with(server, "gpt-4o-mini", clock=clock).summarize(request())
    assert asked == ["gpt-4o"]
    assert result.usage == [Usage("llm", "gpt-4o-2024-08-06", tokens[0], tokens[1], 1, 2500.0)]
    assert (result.model, result.offline) == ("gpt-4o", False)


# --- the corrective request and the final answer (_finish) ----------------------------------------
def test_the_corrective_request_goes_to_the_fallback_model_that_answered(server):
    server.state.script = [Reply(status=503), Reply(status=503), Reply(answer(words(55, "first"))), Reply(answer("Red sneakers."))]
    result, models = outcome(server, max_retries=1)
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]  # gpt-4o is down: not asked again
    assert (result.summary, result.model) == ("Red sneakers.", "gpt-4o-mini")
    assert [u.model for u in result.usage] == ["gpt-4o-mini", "gpt-4o-mini"]


def test_a_cut_off_answer_from_the_fallback_is_asked_again_there(server):
    server.state.script = [Reply(status=503), Reply(status=503), Reply(raw_content='{"title": "Re', finish_reason="length"),
                           Reply(answer("Red sneakers."))]
    result, models = outcome(server, max_retries=1)
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    assert (result.summary, result.model) == ("Red sneakers.", "gpt-4o-mini")


def test_a_corrective_answer_no_better_than_the_first_is_not_kept(server):
    server.state.script = [Reply(answer(words(55, "first"))), Reply(answer(words(55, "second")))]  # 5 over each
    result, models = outcome(server)
    assert models == ["gpt-4o", "gpt-4o"]
    assert result.summary.startswith("first") and count_words(result.summary) <= 50


def test_a_word_to_avoid_that_stays_in_a_language_summary_fails_the_item(server):
    server.state.default = Reply(answer(summaries={"de": "Ein budget Sneaker."}))
    error, models = outcome(server, request(style=GUIDE, languages=("de",)))
    assert models == ["gpt-4o", "gpt-4o"]
    assert type(error) is BadInputError and str(error) == (
        "The summary still used 'budget' from the style guide's words to avoid after it was asked again (gpt-4o); "
        "retry the item or write the summary by hand.")


def test_every_word_to_avoid_that_stays_is_named(server):
    server.state.default = Reply(answer("A budget red sneaker.", title="Cheap sneaker"))
    error, _ = outcome(server, request(style=StyleGuide(avoid=["cheap", "budget"])))
    assert str(error) == ("The summary still used 'cheap', 'budget' from the style guide's words to avoid after it was asked "
                          "again (gpt-4o); retry the item or write the summary by hand.")


def test_an_empty_language_summary_stays_empty_for_a_person_to_write(server):
    server.state.default = Reply(answer(summaries={"de": "", "fr": "Baskets rouges."}))
    result, models = outcome(server, request(languages=("de", "fr")))
    assert models == ["gpt-4o"] and result.summaries == {"de": "", "fr": "Baskets rouges."}


# --- an unusable answer and the one corrective request (_answer, _read) --------------------------------
def test_after_a_cut_off_answer_an_over_long_one_is_trimmed_not_asked_a_third_time(server):
    server.state.script = [Reply(raw_content='{"title": "Re', finish_reason="length"), Reply(answer(words(55, "second")))]
    server.state.default = Reply(answer("Third answer."))
    result, models = outcome(server)
    assert models == ["gpt-4o", "gpt-4o"]  # one corrective request per summary, whatever it was for
    assert result.summary.startswith("second") and count_words(result.summary) <= 50


def test_the_answer_to_a_corrective_request_carries_the_language_summaries(server):
    server.state.script = [Reply(raw_content='{"title": "Re', finish_reason="length"),
                           Reply(answer(summaries={"de": "Rote Sneaker."}))]
    result, models = outcome(server, request(languages=("de",)))
    assert models == ["gpt-4o", "gpt-4o"] and result.summaries == {"de": "Rote Sneaker."}


def test_a_batch_answer_without_choices_is_asked_again_as_empty(server):
    server.state.default = Reply(answer("Red sneakers."))
    empty = completion(answer()).model_copy(update={"choices": []})
    result = summarizer_for(server).summarize_answer(request(), empty, "gpt-4o", BATCH_USAGE)
    assert server.state.requests[0]["messages"][-1]["content"].startswith("Your previous answer was empty.")
    assert result.summary == "Red sneakers."


def test_a_value_outside_the_vocabulary_for_an_attribute_its_category_requires_is_asked_again(server):
    from pipeline.attributes import CategoryRule

    strict = SCHEMA.model_copy(update={"categories": {"sneakers": CategoryRule(required=["color"])}})
    summarizer = summarizer_for(server).with_schema(strict)
    sneakers = request(attributes=map_answers(strict, {"category": "sneakers", "color": "red"}))
    server.state.script = [Reply(answer(attributes={"category": "sneakers", "color": "chartreuse"})),
                           Reply(answer(attributes={"category": "sneakers", "color": "red"}))]
    result = summarizer.summarize(sneakers)  # dropping the value would leave the required colour null
    assert [r["model"] for r in server.state.requests] == ["gpt-4o", "gpt-4o"]
    assert server.state.requests[1]["messages"][-1]["content"].startswith(
        "Your previous answer did not follow the requested JSON format.")
    assert result.attributes["color"] == "red"


# --- exactly what is sent to OpenAI (build_messages, system_prompt, facts_for, build_response_model) -----
def test_what_is_sent_the_model_the_prompt_the_facts_and_the_schema(server):
    from pipeline.admin.brand import style_prompt
    from pipeline.attributes import CategoryRule
    from pipeline.summarizers.openai_summarizer import SEO_PROMPT, SYSTEM_PROMPT

    strict = SCHEMA.model_copy(update={"categories": {"sneakers": CategoryRule(required=["color"])}})
    guide = StyleGuide(avoid=["budget"], tone="warm")
    the_request = request(caption="red leather sneakers from a café", hints={"brand": "Acme", "price": "9 EUR"},
                          attributes=map_answers(strict, {"category": "sneakers", "color": "red"}), style=guide,
                          languages=("de", "ja"))
    server.state.default = Reply(answer(attributes={"category": "sneakers", "color": "red"}, summaries={"de": "Rot.", "ja": "赤。"},
                                        seo_title="Red sneakers", meta_description="Red sneakers.", alt_text="Red sneakers"))
    summarizer_for(server, seo_fields_by="model").with_schema(strict).summarize(the_request)
    [body] = server.state.requests
    assert (body["model"], body["temperature"]) == ("gpt-4o", 0)
    system, user = body["messages"]
    assert system == {"role": "system", "content": (
        SYSTEM_PROMPT + "\n" + SEO_PROMPT + "\n\n" + style_prompt(guide) + "\n\n"
        "Also write the summary in: German (de, at most 50 words), Japanese (ja, at most 125 characters). Put each in "
        "`summaries` under its language code; same facts as the English summary, written natively, not word for word.")}
    assert user["role"] == "user" and "café" in user["content"]  # UTF-8 as written, not \u escapes (fewer tokens)
    unanswered = {"answer": "", "in_allowed_list": False}
    assert json.loads(user["content"]) == {
        "caption": "red leather sneakers from a café",
        "attributes": {"category": {"answer": "sneakers", "in_allowed_list": True}, "color": {"answer": "red", "in_allowed_list": True},
                       "material": unanswered, "pattern": unanswered, "style": unanswered},
        "merchant_hints": {"brand": "Acme"}, "sku": "SKU-1"}  # the price is no product fact
    assert body["response_format"]["type"] == "json_schema"
    sent = body["response_format"]["json_schema"]
    assert (sent["name"], sent["strict"]) == ("ProductSummary", True)
    schema = sent["schema"]
    assert schema["required"] == ["title", "summary", "tags", "attributes", "seo_title", "meta_description", "alt_text", "summaries"]
    assert schema["properties"]["summary"]["description"] == "At most 50 words."
    assert schema["properties"]["tags"] == {"items": {"type": "string"}, "title": "Tags", "type": "array"}
    assert schema["properties"]["seo_title"] == {"default": "", "description": "At most 70 characters.", "title": "Seo Title", "type": "string"}
    assert schema["properties"]["meta_description"] == {"default": "", "description": "At most 160 characters.",
                                                        "title": "Meta Description", "type": "string"}
    assert schema["properties"]["alt_text"] == {"default": "", "title": "Alt Text", "type": "string", "description": (
        "At most 125 characters; what the photo shows, no marketing, prices or calls to action.")}
    assert set(schema["$defs"]) == {"ProductAttributes", "LanguageSummaries"}
    assert schema["$defs"]["LanguageSummaries"]["properties"] == {
        "de": {"description": "The summary in German, at most 50 words.", "title": "De", "type": "string"},
        "ja": {"description": "The summary in Japanese, at most 125 characters.", "title": "Ja", "type": "string"}}
    attributes = schema["$defs"]["ProductAttributes"]["properties"]
    for spec in strict.attributes:
        sent_spec = attributes[spec.name]
        assert sent_spec["description"] == spec.question
        choices = sent_spec["enum"] if spec.name == "color" else sent_spec["anyOf"][0]["enum"]
        assert choices == list(spec.vocabulary)
        # the colour the category requires is never null; the others may be
        assert ("anyOf" in sent_spec) == (spec.name != "color"), spec.name
        if spec.name != "color":
            assert sent_spec["anyOf"][1] == {"type": "null"}


def test_a_corrective_answer_leaving_out_an_attribute_the_category_requires_is_not_kept(server):
    from pipeline.attributes import CategoryRule

    strict = SCHEMA.model_copy(update={"categories": {"sneakers": CategoryRule(required=["color"])}})
    sneakers = request(attributes=map_answers(strict, {"category": "sneakers", "color": "red"}))
    server.state.script = [Reply(answer(words(55, "first"), attributes={"category": "sneakers", "color": "red"})),
                           Reply(answer("Second.", attributes={"category": "sneakers", "color": None}))]
    result = summarizer_for(server).with_schema(strict).summarize(sneakers)
    assert len(server.state.requests) == 2
    assert result.attributes["color"] == "red" and result.summary.startswith("first") and count_words(result.summary) <= 50


# --- the summarizer's own settings (__init__, _read_timeout) -------------------------------------------
def test_by_default_gpt_4o_then_gpt_4o_mini_are_asked_without_the_seo_fields(server):
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=0, timeout=5.0)
    server.state.default = Reply(status=503)
    error = failure(OpenAISummarizer(client, SCHEMA, sleep=Waits()))
    assert [r["model"] for r in server.state.requests] == ["gpt-4o", "gpt-4o-mini"]
    assert "seo_title" not in server.state.requests[0]["response_format"]["json_schema"]["schema"]["properties"]
    assert str(error) == "OpenAI is unavailable right now (HTTP 503 from gpt-4o and gpt-4o-mini); retry the failed items later."


def test_by_default_a_call_has_60_s_and_a_retry_needs_1_s_of_them(server):
    clock = FakeClock()
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=1, timeout=5.0)
    server.state.default = Reply(status=503, retry_after_ms="0")
    server.state.on_request = lambda _request: setattr(clock, "now", clock.now + 58.5)  # 1.5 s left after the first
    error = failure(OpenAISummarizer(client, SCHEMA, clock=clock, sleep=Waits(clock)))
    assert [r["model"] for r in server.state.requests] == ["gpt-4o", "gpt-4o"]
    assert str(error).endswith("Gave up after 60 s (OPENAI_DEADLINE_S).")


@pytest.mark.parametrize("max_retries, asked", [(0, ["gpt-4o", "gpt-4o-mini"]), (-1, ["gpt-4o", "gpt-4o-mini"]),
                                                (1, ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"])])
def test_the_summarizers_max_retries_overrides_the_clients(server, max_retries, asked):
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=3, timeout=5.0)
    server.state.default = Reply(status=503)
    failure(OpenAISummarizer(client, SCHEMA, max_retries=max_retries, sleep=Waits()))
    assert [r["model"] for r in server.state.requests] == asked  # a negative count is none


@pytest.mark.parametrize("timeout, request_timeout_s, sent", [
    (5.0, 2.0, 2.0),  # the summarizer's own request timeout wins
    (openai.Timeout(12.0, connect=3.0), None, 12.0),  # else the client's read timeout
    (openai.Timeout(None, connect=3.0), None, 600.0),  # no read timeout: the SDK's default 600 s, never unbounded
    (None, None, 600.0),  # a client made with timeout=None: the same
], ids=["own", "client-read-timeout", "client-without-read-timeout", "client-without-timeout"])
def test_each_request_is_sent_with_the_request_timeout(server, timeout, request_timeout_s, sent):
    client = openai.OpenAI(api_key="sk-test-1234", base_url=server.base_url, max_retries=0, timeout=timeout)
    server.state.default = Reply(answer())
    summarizer = OpenAISummarizer(client, SCHEMA, request_timeout_s=request_timeout_s, deadline_s=1000, sleep=Waits())
    summarizer.summarize(request())
    assert float(server.state.headers[0]["x-stainless-read-timeout"]) == sent


# --- each request gets the schema of its own languages and category (response_for, required_for) --------
def sent_schema(server: FakeOpenAI, number: int = -1) -> dict:
    return server.state.requests[number]["response_format"]["json_schema"]["schema"]


def color_nullable(schema: dict) -> bool:
    return "anyOf" in schema["$defs"]["ProductAttributes"]["properties"]["color"]


def test_one_summarizer_sends_each_request_the_schema_of_its_languages_and_category(server):
    from pipeline.attributes import CategoryRule

    strict = SCHEMA.model_copy(update={"categories": {"sneakers": CategoryRule(required=["color"])}})
    summarizer = summarizer_for(server).with_schema(strict)
    plain = request(attributes=map_answers(strict, {"category": "bag", "color": "red"}))
    sneakers = request(attributes=map_answers(strict, {"category": "sneakers", "color": "red"}))

    def reply(body: dict) -> Reply:  # answers what the schema sent asks for
        asked_languages = "summaries" in body["response_format"]["json_schema"]["schema"]["properties"]
        return Reply(answer(attributes={"category": "sneakers", "color": "red"}, **({"summaries": {"de": "Rot."}} if asked_languages else {})))

    server.state.responder = reply
    for the_request in (plain, sneakers, plain, replace(plain, languages=("de",)), replace(sneakers, languages=("de",)), plain):
        summarizer.summarize(the_request)
    schemas = [sent_schema(server, n) for n in range(6)]
    assert [color_nullable(s) for s in schemas] == [True, False, True, True, False, True]
    assert ["summaries" in s["properties"] for s in schemas] == [False, False, False, True, True, False]


def test_the_category_comes_from_the_captioner_else_from_the_csv_hint(server):
    from pipeline.attributes import CategoryRule

    strict = SCHEMA.model_copy(update={"categories": {"sneakers": CategoryRule(required=["color"])}})
    summarizer = summarizer_for(server).with_schema(strict)
    server.state.default = Reply(answer(attributes={"category": "sneakers", "color": "red"}))
    cases = [
        (request(attributes=map_answers(strict, {}), hints={"category": " Sneakers "}), False),  # the hint, tidied
        (request(attributes=map_answers(strict, {"category": "spaceship"}), hints={"category": "sneakers"}), False),  # answer not a category
        (request(attributes=map_answers(strict, {"category": "bag"}), hints={"category": "sneakers"}), True),  # the captioner wins
        (request(attributes=map_answers(strict, {}), hints={"category": "spaceship"}), True),  # neither is a category
        (request(attributes=map_answers(strict, {"category": "sneakers"}), hints={}), False),
    ]
    for the_request, nullable in cases:
        summarizer.summarize(the_request)
        assert color_nullable(sent_schema(server)) is nullable, the_request


def test_the_category_answer_is_found_wherever_the_taxonomy_lists_it(server):
    from pipeline.attributes import CategoryRule

    reordered = SCHEMA.model_copy(update={"attributes": [SCHEMA.spec("color"), *[s for s in SCHEMA.attributes if s.name != "color"]],
                                          "categories": {"sneakers": CategoryRule(required=["material"])}})
    server.state.default = Reply(answer(attributes={"category": "sneakers", "color": "red", "material": "leather"}))
    summarizer_for(server).with_schema(reordered).summarize(request(attributes=map_answers(reordered, {"color": "red", "category": "sneakers"}),
                                                                    hints={}))
    assert "anyOf" not in sent_schema(server)["$defs"]["ProductAttributes"]["properties"]["material"]


def test_categories_without_a_category_attribute_require_nothing_more(server):
    only_colour = AttributeSchema.model_validate({"attributes": [SCHEMA.spec("color").model_dump()],
                                                  "categories": {"sneakers": {"required": ["color"]}}})
    server.state.default = Reply({"title": "Red sneakers", "summary": "Red sneakers.", "tags": ["red"], "attributes": {"color": None}})
    result = summarizer_for(server).with_schema(only_colour).summarize(request(hints={"category": "sneakers"}))
    assert result.attributes == {"color": None} and len(server.state.requests) == 1
