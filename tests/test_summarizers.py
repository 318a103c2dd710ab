import openai
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
    with pytest.raises(Exception):
        model.model_validate(answer("x", color="chartreuse"))


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
        server.state.script = [Reply(answer("slow"), delay_s=1.5), Reply(answer("Quick answer."))]
        result = summarizer_for(server, max_retries=0, timeout=0.5).summarize(REQUEST)
    assert result.summary == "Quick answer." and result.model == "gpt-4o-mini"


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
    sentences = ["This sneaker is red and made of leather with white laces." for _ in range(8)]
    long_text = " ".join(sentences)
    with FakeOpenAI() as server:
        server.state.script = [Reply(answer(long_text)), Reply(answer(long_text))]
        result = summarizer_for(server).summarize(REQUEST)
    assert count_words(result.summary) <= 50
    assert result.summary.endswith("laces.") and result.summary in long_text


def test_trim_never_returns_more_than_the_limit():
    one_long_sentence = " ".join(f"w{i}" for i in range(80))
    trimmed = trim_to_word_limit(one_long_sentence, 50)
    assert count_words(trimmed) == 50 and trimmed.endswith(".")
    assert trim_to_word_limit("Short. Text.", 50) == "Short. Text."


def test_offline_summary_is_deterministic_and_grounded():
    summarizer = OfflineSummarizer(SCHEMA)
    first, second = summarizer.summarize(REQUEST), summarizer.summarize(REQUEST)
    assert first == second and first.offline and first.model.startswith("offline")
    assert count_words(first.summary) <= 50
    assert first.title == "Red leather sneakers"
    assert "By Acme." in first.summary and "Limited run." in first.summary
    assert "chartreuse" not in first.summary  # out-of-vocabulary answers are not asserted as facts
    assert first.tags[:3] == ["sneakers", "red", "leather"] and "acme" in first.tags
    assert first.attributes["style"] is None and first.attributes["pattern"] == "solid"
