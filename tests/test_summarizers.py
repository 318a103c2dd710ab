from dataclasses import replace

import openai
import pydantic
import pytest

from pipeline.attributes import load_attribute_schema, map_answers
from pipeline.errors import ConfigError, ServiceError
from pipeline.models import SummaryRequest
from pipeline.summarizers.offline import OfflineSummarizer
from pipeline.summarizers.openai_summarizer import OpenAISummarizer, build_response_model
from pipeline.wordlimit import count_words, trim_to_word_limit
from support.servers import FakeOpenAI, Reply

SCHEMA = load_attribute_schema()
REQUEST = SummaryRequest(
    caption="a pair of red leather sneakers on a white background",
    attributes=map_answers(SCHEMA, {"category": "sneakers", "color": "red", "material": "leather", "pattern": "plain", "style": "chartreuse"}),
    checks=None,
    hints={"brand": "Acme", "notes": "Limited run"},
    sku="SKU-1",
)


def answer(summary: str, **attributes) -> dict:
    values = {name: None for name in SCHEMA.names()}
    values.update(attributes)
    return {"title": "Red leather sneakers", "summary": summary, "tags": ["Sneakers", "red", "red"], "attributes": values}


def summarizer_for(server: FakeOpenAI, *, max_retries: int = 1, timeout: float = 5.0) -> OpenAISummarizer:
    client = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=max_retries, timeout=timeout)
    return OpenAISummarizer(client, SCHEMA, model="gpt-4o", fallback_model="gpt-4o-mini")


def test_structured_output_is_used_and_usage_recorded():
    with FakeOpenAI() as server:
        server.state.script = [Reply(answer("Red leather sneakers by Acme.", color="red", material="leather"))]
        result = summarizer_for(server).summarize(REQUEST)
        request = server.state.requests[0]
    assert request["model"] == "gpt-4o"
    schema = request["response_format"]["json_schema"]["schema"]
    assert request["response_format"]["type"] == "json_schema" and request["response_format"]["json_schema"]["strict"] is True
    assert "Acme" in request["messages"][1]["content"] and "Never invent a brand" in request["messages"][0]["content"]
    assert schema["$defs"]["ProductAttributes"]["properties"]["color"]["anyOf"][0]["enum"] == SCHEMA.spec("color").vocabulary
    assert result.summary == "Red leather sneakers by Acme." and result.model == "gpt-4o" and not result.offline
    assert result.tags == ["sneakers", "red"]
    assert result.attributes["color"] == "red" and result.attributes["style"] is None
    assert [(u.model, u.input_tokens, u.output_tokens) for u in result.usage] == [("gpt-4o", 120, 60)]


def test_out_of_vocabulary_attribute_values_are_rejected_by_the_schema():
    model = build_response_model(SCHEMA)
    with pytest.raises(pydantic.ValidationError, match=r"attributes\.color\n  Input should be 'black', 'white'") as refused:
        model.model_validate(answer("x", color="chartreuse"))
    [error] = refused.value.errors()
    assert (error["loc"], error["type"], error["input"]) == (("attributes", "color"), "literal_error", "chartreuse")
    assert model.model_validate(answer("x", color="red")).attributes.color == "red"  # in-vocabulary passes


@pytest.mark.parametrize("failure", [Reply(status=429), Reply(status=500), Reply(status=503)], ids=["429", "500", "503"])
def test_transient_errors_fall_back_to_the_cheaper_model(failure):
    with FakeOpenAI() as server:
        server.state.script = [failure, failure, Reply(answer("Red sneakers."))]  # main model: first try + 1 retry
        result = summarizer_for(server, max_retries=1).summarize(REQUEST)
        models = [r["model"] for r in server.state.requests]
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert result.model == "gpt-4o-mini" and result.usage[0].model == "gpt-4o-mini"


def test_timeout_falls_back():
    with FakeOpenAI() as server:
        # The main model never answers (held until the server closes), so its request times out whatever
        # the machine's load; the fallback answers at once, far inside the same 3 s.
        server.state.script = [Reply(answer("slow"), hang=True), Reply(answer("Quick answer."))]
        result = summarizer_for(server, max_retries=0, timeout=3.0).summarize(REQUEST)
        models = [r["model"] for r in server.state.requests]
    assert models == ["gpt-4o", "gpt-4o-mini"]
    assert result.summary == "Quick answer." and result.model == "gpt-4o-mini"
    assert [u.model for u in result.usage] == ["gpt-4o-mini"]  # the timed-out call is not billed


def test_both_models_down_is_a_clear_service_error():
    with FakeOpenAI() as server:
        server.state.default = Reply(status=500)
        with pytest.raises(ServiceError, match="OpenAI is unavailable right now"):
            summarizer_for(server, max_retries=0).summarize(REQUEST)


def test_bad_key_is_a_config_error():
    with FakeOpenAI() as server:
        server.state.script = [Reply(status=401)]
        with pytest.raises(ConfigError, match="rejected the API key"):
            summarizer_for(server, max_retries=0).summarize(REQUEST)


def test_overlong_summary_gets_one_corrective_retry():
    long_text = " ".join(["word"] * 70) + "."
    with FakeOpenAI() as server:
        server.state.script = [Reply(answer(long_text)), Reply(answer("Short and sweet."))]
        result = summarizer_for(server).summarize(REQUEST)
        retry_messages = server.state.requests[1]["messages"]
    assert result.summary == "Short and sweet."
    assert "70 words" in retry_messages[-1]["content"]
    assert len(result.usage) == 2


def test_still_overlong_after_retry_is_trimmed_at_a_sentence_boundary():
    sentences = [f"Sneaker number {i} is red leather with soft white laces." for i in range(7)]  # 10 words each
    long_text = " ".join(sentences)
    assert count_words(long_text) == 70
    with FakeOpenAI() as server:
        server.state.script = [Reply(answer(long_text)), Reply(answer(long_text))]
        result = summarizer_for(server).summarize(REQUEST)
    assert count_words(result.summary) <= 50
    assert result.summary == " ".join(sentences[:5])  # the whole sentences that fit: exactly 50 words


def test_trim_never_returns_more_than_the_limit():
    one_long_sentence = " ".join(f"w{i}" for i in range(80))
    trimmed = trim_to_word_limit(one_long_sentence, 50)
    assert count_words(trimmed) == 50 and trimmed.endswith(".")
    assert trim_to_word_limit("Short. Text.", 50) == "Short. Text."


def test_offline_summary_is_deterministic_and_grounded():
    summarizer = OfflineSummarizer(SCHEMA)
    first, second = summarizer.summarize(REQUEST), summarizer.summarize(REQUEST)
    assert first == second and first.offline and first.model.startswith("offline")
    assert first.summary == ("Red leather sneakers. A pair of red leather sneakers on a white background. "
                             "Details: color red, material leather, pattern solid. By Acme. Limited run.")
    # Notes that make the template 70+ words: the summary is trimmed to <= 50, at a sentence boundary.
    notes = [f"Batch note {i} for the spring catalogue." for i in range(10)]  # 7 words each
    assert count_words(" ".join(notes)) == 70
    long = summarizer.summarize(replace(REQUEST, hints={"brand": "Acme", "notes": " ".join(notes)}))
    assert count_words(long.summary) <= 50
    assert long.summary == first.summary.removesuffix(" Limited run.") + " " + " ".join(notes[:4])  # 22 + 4 x 7 = 50 words
    assert first.title == "Red leather sneakers"
    assert "By Acme." in first.summary and "Limited run." in first.summary
    assert "chartreuse" not in first.summary  # out-of-vocabulary answers are not asserted as facts
    assert first.tags[:3] == ["sneakers", "red", "leather"] and "acme" in first.tags
    assert first.attributes["style"] is None and first.attributes["pattern"] == "solid"
