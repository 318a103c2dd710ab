"""Every OpenAI failure kind through the real `openai` client over HTTP (tests/support/servers.py):
one plain message each, the right number of requests, paid calls kept in the cost ledger, one deadline."""

from __future__ import annotations

import json

import openai
import pytest

from pipeline.attributes import load_attribute_schema, map_answers
from pipeline.errors import BadInputError, ConfigError, ServiceError, describe_error, usage_of
from pipeline.models import CaptionResult, IngestReport, SourceItem, SourceRef, SummaryRequest, Usage
from pipeline.batches.review import regenerate_summaries
from pipeline.batches.runner import NormalizeOptions, Stages, run_batch
from pipeline.service import fetch_limits
from pipeline.settings import Settings
from pipeline.store import LocalImageStore
from pipeline.summarizers.openai_summarizer import OpenAISummarizer
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply

SCHEMA = load_attribute_schema()
REQUEST = SummaryRequest(
    caption="a pair of red leather sneakers on a white background",
    attributes=map_answers(SCHEMA, {"category": "sneakers", "color": "red", "material": "leather"}),
    checks=None, hints={"brand": "Acme"}, sku="SKU-1",
)
MODELS = ["gpt-4o", "gpt-4o-mini"]


def answer(summary: str = "Red leather sneakers by Acme.", **attributes) -> dict:
    values = {name: None for name in SCHEMA.names()}
    values.update(attributes)
    return {"title": "Red leather sneakers", "summary": summary, "tags": ["sneakers", "red"], "attributes": values}


class Waits:
    """Records the backoff waits instead of sleeping them (and moves a fake clock when given one)."""

    def __init__(self, clock: "FakeClock | None" = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock:
            self.clock.now += seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def summarizer_for(url: str, *, max_retries: int = 2, timeout: float = 5.0, **options) -> OpenAISummarizer:
    # The client asks for SDK retries like a deployment might: the summarizer must switch them off.
    client = openai.OpenAI(api_key="sk-test-1234", base_url=url, max_retries=max_retries, timeout=timeout)
    options.setdefault("sleep", Waits())
    return OpenAISummarizer(client, SCHEMA, model="gpt-4o", fallback_model="gpt-4o-mini", **options)


def run(server: FakeOpenAI, **options):
    """summarize() -> (the exception or result, models requested)."""
    summarizer = summarizer_for(server.base_url, **options)
    try:
        outcome = summarizer.summarize(REQUEST)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        outcome = exc
    return outcome, [r["model"] for r in server.state.requests]


def llm_rows(usage: list[Usage]) -> list[tuple[str, int, int]]:
    return [(u.model, u.input_tokens, u.output_tokens) for u in usage if u.kind == "llm"]


# --- errors OpenAI answers with an HTTP status ------------------------------------------------
NOT_RETRIED = [
    (Reply(status=429, error_code="insufficient_quota", error_type="insufficient_quota",
           error_message="You exceeded your current quota, please check your plan and billing details."),
     ConfigError, "OpenAI account is out of credit/quota"),
    (Reply(status=401, error_code="invalid_api_key", error_type="invalid_request_error",
           error_message="Incorrect API key provided: sk-test-****1234."), ConfigError, "rejected the API key"),
    (Reply(status=403, error_code="unsupported_country_region_territory", error_type="request_forbidden"),
     ConfigError, "denied this API key access to gpt-4o"),
    (Reply(status=404, error_code="model_not_found", error_type="invalid_request_error",
           error_message="The model `gpt-4o` does not exist or you do not have access to it."),
     ConfigError, "does not know the model gpt-4o"),
    (Reply(status=400, error_type="invalid_request_error", error_message="Invalid parameter: 'response_format'."),
     ConfigError, "refused the request as invalid"),
    (Reply(status=400, error_code="context_length_exceeded", error_type="invalid_request_error"),
     BadInputError, "too long for OpenAI"),
    (Reply(status=400, error_code="content_filter", error_type="invalid_request_error"),
     BadInputError, "content filter blocked"),
]


@pytest.mark.parametrize("reply, error_class, message", NOT_RETRIED,
                         ids=["quota", "bad-key", "permission", "model-not-found", "bad-request", "too-long", "prompt-filter"])
def test_errors_retrying_cannot_fix_fail_after_exactly_one_request(reply, error_class, message):
    with FakeOpenAI() as server:
        server.state.default = reply
        error, models = run(server)
    assert models == ["gpt-4o"]  # not by the SDK, not by us, not on the fallback model
    assert type(error) is error_class and message in str(error)
    assert describe_error(error) == str(error) and "Unexpected problem" not in str(error)
    assert usage_of(error) == []


def test_quota_message_tells_an_admin_what_to_do():
    with FakeOpenAI() as server:
        server.state.default = Reply(status=429, error_code="insufficient_quota", error_type="insufficient_quota")
        error, _ = run(server)
    assert str(error).startswith("OpenAI account is out of credit/quota") and "an admin must add credit" in str(error)


def test_key_fragments_from_openai_are_not_shown():
    with FakeOpenAI() as server:
        server.state.default = Reply(status=401, error_message="Incorrect API key provided: sk-test-****1234.")
        error, _ = run(server)
    assert "1234" not in str(error) and "sk-" not in str(error)


def test_quota_on_the_fallback_model_stops_there():
    with FakeOpenAI() as server:
        server.state.script = [Reply(status=500)] * 3 + [Reply(status=429, error_code="insufficient_quota")]
        error, models = run(server)
    assert isinstance(error, ConfigError) and models == ["gpt-4o"] * 3 + ["gpt-4o-mini"]


RETRIED = [
    (Reply(status=429, error_type="rate_limit_error"), "OpenAI is rate-limiting this account right now (gpt-4o and gpt-4o-mini)"),
    (Reply(status=500), "OpenAI is unavailable right now (HTTP 500 from gpt-4o and gpt-4o-mini)"),
    (Reply(status=502), "OpenAI is unavailable right now (HTTP 502"),
    (Reply(status=503), "OpenAI is unavailable right now (HTTP 503"),
]


@pytest.mark.parametrize("reply, message", RETRIED, ids=["rate-limit", "500", "502", "503"])
def test_transient_errors_are_retried_per_model_then_fail_with_a_retry_later_message(reply, message):
    waits = Waits()
    with FakeOpenAI() as server:
        server.state.default = reply
        error, models = run(server, max_retries=2, sleep=waits)
        sdk_retry_counts = {h["x-stainless-retry-count"] for h in server.state.headers}
    assert models == ["gpt-4o"] * 3 + ["gpt-4o-mini"] * 3  # 1 + max_retries on each model
    assert sdk_retry_counts == {"0"}  # every request is a first try for the SDK: the retries are ours
    assert waits.waits == [0.001] * 4  # the server's retry-after-ms is honoured
    assert type(error) is ServiceError and message in str(error)


def test_a_transient_error_then_success_records_only_the_answer():
    with FakeOpenAI() as server:
        server.state.script = [Reply(status=429), Reply(status=503), Reply(answer(), prompt_tokens=7, completion_tokens=3)]
        result, models = run(server)
    assert models == ["gpt-4o"] * 3 and result.model == "gpt-4o"
    assert llm_rows(result.usage) == [("gpt-4o", 7, 3)]


def test_a_long_retry_after_goes_to_the_fallback_instead_of_waiting():
    waits = Waits()
    with FakeOpenAI() as server:
        server.state.script = [Reply(status=429, retry_after_ms="90000"), Reply(answer())]
        result, models = run(server, sleep=waits)
    assert models == MODELS and result.model == "gpt-4o-mini" and waits.waits == []


def test_backoff_without_retry_after_grows():
    waits = Waits()
    with FakeOpenAI() as server:
        server.state.default = Reply(status=500, retry_after_ms=None)
        run(server, max_retries=3, sleep=waits)
    first, second, third = waits.waits[:3]
    assert 0.375 <= first <= 0.5 and 0.75 <= second <= 1.0 and 1.5 <= third <= 2.0


def test_unreachable_server_is_retried_then_a_clear_message():
    waits = Waits()
    with FakeOpenAI() as closed:
        url = closed.base_url
    with pytest.raises(ServiceError) as raised:
        summarizer_for(url, sleep=waits).summarize(REQUEST)
    error = raised.value
    assert "Could not reach OpenAI (gpt-4o and gpt-4o-mini)" in str(error) and "OPENAI_BASE_URL" in str(error)
    assert len(waits.waits) == 4  # 3 tries per model, with a backoff wait between them


def test_timeout_goes_to_the_fallback_and_only_the_last_model_is_retried():
    with FakeOpenAI() as server:
        server.state.default = Reply(hang=True)
        error, models = run(server, max_retries=1, timeout=0.3)
    assert models == ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    assert type(error) is ServiceError and "OpenAI did not answer in time (gpt-4o and gpt-4o-mini)" in str(error)


def test_sdk_retries_are_off_and_settings_reach_the_summarizer():
    settings = Settings(_env_file=None, openai_api_key="sk-x", openai_max_retries=3, openai_timeout_s=12, openai_deadline_s=45)
    summarizer = OpenAISummarizer.from_settings(settings, SCHEMA)
    assert summarizer.client.max_retries == 0
    assert (summarizer.max_retries, summarizer.request_timeout_s, summarizer.deadline_s) == (3, 12, 45)


# --- answers that arrive (and are paid for) but cannot be used ---------------------------------
def test_content_filter_is_the_items_problem_and_its_tokens_are_kept():
    with FakeOpenAI() as server:
        server.state.default = Reply(raw_content='{"title": "Red', finish_reason="content_filter", prompt_tokens=11, completion_tokens=2)
        error, models = run(server)
    assert models == ["gpt-4o"]
    assert type(error) is BadInputError and "content filter blocked the summary for this product" in str(error)
    assert llm_rows(usage_of(error)) == [("gpt-4o", 11, 2)]


def test_refusal_is_the_items_problem_and_quotes_the_model():
    with FakeOpenAI() as server:
        server.state.default = Reply(refusal="I'm sorry, I can't help with that.", prompt_tokens=13, completion_tokens=9)
        error, models = run(server)
    assert models == ["gpt-4o"]
    assert type(error) is BadInputError and "declined to describe this product" in str(error) and "can't help" in str(error)
    assert llm_rows(usage_of(error)) == [("gpt-4o", 13, 9)]


@pytest.mark.parametrize("reply, problem", [
    (Reply(raw_content='{"title": "Red leather sn', prompt_tokens=21, completion_tokens=5), "was not valid JSON (it looks cut off)"),
    (Reply(raw_content='{"title": "Red leather sn', finish_reason="length", prompt_tokens=21, completion_tokens=5), "was cut off before it finished"),
    (Reply({"summary": "no title", "tags": [], "attributes": {}}, prompt_tokens=21, completion_tokens=5), "did not follow the requested JSON format"),
    (Reply(raw_content="Here are the product details you asked for.", prompt_tokens=21, completion_tokens=5), "was not JSON"),
], ids=["truncated-stop", "length", "wrong-shape", "prose"])
def test_unusable_answer_gets_one_corrective_retry_then_a_clear_message(reply, problem):
    with FakeOpenAI() as server:
        server.state.default = reply
        error, models = run(server)
        retry_note = server.state.requests[1]["messages"][-1]["content"]
    assert models == ["gpt-4o", "gpt-4o"]
    assert problem in retry_note
    assert type(error) is ServiceError and f"OpenAI's answer {problem} even after it was asked again" in str(error)
    assert llm_rows(usage_of(error)) == [("gpt-4o", 21, 5)] * 2  # both paid, both kept


def test_truncated_answer_then_a_good_one_succeeds_and_both_are_paid():
    with FakeOpenAI() as server:
        server.state.script = [Reply(raw_content='{"title": "Re', prompt_tokens=5, completion_tokens=1), Reply(answer())]
        result, models = run(server)
    assert models == ["gpt-4o", "gpt-4o"] and result.summary == "Red leather sneakers by Acme."
    assert llm_rows(result.usage) == [("gpt-4o", 5, 1), ("gpt-4o", 120, 60)]


def test_out_of_vocabulary_values_are_dropped_not_fatal():
    with FakeOpenAI() as server:
        server.state.default = Reply(answer(color="chartreuse", material="leather"))
        result, models = run(server)
    assert models == ["gpt-4o"]
    assert result.attributes["color"] is None and result.attributes["material"] == "leather"
    assert result.summary == "Red leather sneakers by Acme."


def test_overlong_summary_whose_corrective_retry_fails_is_trimmed_not_failed():
    long_text = " ".join(["This red sneaker is made of soft leather."] * 10)
    with FakeOpenAI() as server:
        server.state.script = [Reply(answer(long_text)), Reply(status=429, error_code="insufficient_quota")]
        result, models = run(server)
    assert models == ["gpt-4o", "gpt-4o"] and len(result.summary.split()) <= 50
    assert len(result.usage) == 1


# --- one deadline per summarize call ------------------------------------------------------------
def test_deadline_cuts_each_request_timeout_and_stops_retries():  # fake clock: no wall-clock dependence
    clock = FakeClock()
    start = clock.now
    timeouts: list[float] = []
    ends: list[float] = []  # when each request's timeout would have ended, seconds after the start

    def each_request_takes_25s_or_its_timeout(_request):
        timeout = float(server.state.headers[-1]["x-stainless-read-timeout"])
        timeouts.append(timeout)
        ends.append(clock.now - start + timeout)
        clock.now += min(25.0, timeout)

    with FakeOpenAI() as server:
        server.state.default = Reply(status=500)
        server.state.on_request = each_request_takes_25s_or_its_timeout
        error, models = run(server, max_retries=5, timeout=30, deadline_s=60, clock=clock, sleep=Waits(clock))
    assert models == ["gpt-4o"] * 3  # 25 s + 25 s + the last 10 s; no time left for the fallback
    assert timeouts == [30.0, 30.0, pytest.approx(10.0 - 0.002)]
    assert clock.now - start <= 60 and max(ends) <= 60  # no request was allowed to run past the deadline
    assert type(error) is ServiceError and "Gave up after 60 s (OPENAI_DEADLINE_S)" in str(error)


def test_deadline_covers_the_corrective_retry():
    clock = FakeClock()

    def slow(_request):
        clock.now += 40.0

    with FakeOpenAI() as server:
        server.state.default = Reply(raw_content='{"title": "Re', prompt_tokens=5, completion_tokens=1)
        server.state.on_request = slow
        error, models = run(server, deadline_s=60, clock=clock, sleep=Waits(clock))
        timeouts = [float(h["x-stainless-read-timeout"]) for h in server.state.headers]
    assert models == ["gpt-4o", "gpt-4o"] and timeouts == [5.0, 5.0]
    # with a 30 s timeout the retry gets only the 20 s left
    clock2 = FakeClock()
    with FakeOpenAI() as server:
        server.state.default = Reply(raw_content='{"title": "Re', prompt_tokens=5, completion_tokens=1)
        server.state.on_request = lambda _r: setattr(clock2, "now", clock2.now + 40.0)
        error, models = run(server, timeout=30, deadline_s=60, clock=clock2, sleep=Waits(clock2))
        timeouts = [float(h["x-stainless-read-timeout"]) for h in server.state.headers]
    assert timeouts == [30.0, 20.0]
    assert type(error) is ServiceError and "was not valid JSON" in str(error)
    assert len(usage_of(error)) == 2


def test_a_server_that_never_answers_fails_by_the_deadline():
    with FakeOpenAI() as server:
        server.state.default = Reply(hang=True)
        error, models = run(server, timeout=30, deadline_s=0.6, min_request_s=0.5)
        read_timeout = float(server.state.headers[0]["x-stainless-read-timeout"])
    assert models == ["gpt-4o"]  # the fallback is not started without time to answer
    assert read_timeout <= 0.6  # the request's timeout was the deadline's, not the 30 s one
    assert type(error) is ServiceError and "did not answer in time" in str(error) and "Gave up after 0.6 s" in str(error)


# --- the runner and regenerate keep the tokens of failed calls in a real store ---------------------
class FakeCaptioner:
    model_id = "fake-blip"

    def warm_up(self) -> None:
        pass

    def caption(self, image, questions):
        return (CaptionResult(caption="a red leather sneaker", answers={"color": "red", "category": "sneakers"}, model_id=self.model_id),
                Usage("endpoint", self.model_id, 0, 0, 1, 5.0))


def replies_by_sku(request) -> Reply:
    """Each photo's SKU (its file name here) picks its fate, whatever order the workers run in."""
    facts = json.loads(request["messages"][1]["content"])
    sku = facts.get("sku") or ""
    corrective = len(request["messages"]) > 2
    if "filtered" in sku:
        return Reply(raw_content="{", finish_reason="content_filter", prompt_tokens=11, completion_tokens=1)
    if "truncated" in sku:
        return Reply(raw_content='{"title": "Re', prompt_tokens=22 if not corrective else 23, completion_tokens=2)
    if "quota" in sku:
        return Reply(status=429, error_code="insufficient_quota")
    return Reply(answer(), prompt_tokens=44, completion_tokens=4)


def stages_for(store, server: FakeOpenAI, tmp_path) -> Stages:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", summarizer="offline")
    return Stages(store=store, images=LocalImageStore(tmp_path / "images"), captioner=FakeCaptioner(),
                  summarizer=summarizer_for(server.base_url), schema=SCHEMA, fetch_limits=fetch_limits(settings),
                  normalize=NormalizeOptions())


def batch_of(store, tmp_path, names: list[str]) -> int:
    """A batch of photos whose SKU is their file name, so the stub can tell them apart in the prompt."""
    items = []
    for seed, name in enumerate(names):
        path = tmp_path / name
        path.write_bytes(jpeg_bytes(size=(320, 240), seed=seed))
        items.append(SourceItem(source=name, ref=SourceRef("file", str(path)), sku=name))
    return store.create_batch("b", "t", IngestReport(items=items)).id


def test_runner_saves_the_tokens_of_failed_calls_with_the_failed_item(store, tmp_path):
    with FakeOpenAI() as server:
        server.state.responder = replies_by_sku
        stages = stages_for(store, server, tmp_path)
        batch_id = batch_of(store, tmp_path, ["ok.jpg", "filtered.jpg", "truncated.jpg", "quota.jpg"])
        progress = run_batch(stages, batch_id, concurrency=2)
    items = {item.source: item for item in store.list_items(batch_id)}
    assert (progress.ok, progress.failed) == (1, 3)
    assert items["ok.jpg"].status == "ok"
    assert "content filter blocked" in items["filtered.jpg"].error
    assert "was not valid JSON (it looks cut off) even after it was asked again" in items["truncated.jpg"].error
    assert items["quota.jpg"].error.startswith("OpenAI account is out of credit/quota")
    assert all("Unexpected problem" not in (item.error or "") for item in items.values())
    llm = sorted((u.input_tokens, u.output_tokens) for u in store.usage(batch_id) if u.kind == "llm")
    assert llm == [(11, 1), (22, 2), (23, 2), (44, 4)]  # one row per paid call: failed ones included, quota none
    assert len([u for u in store.usage(batch_id) if u.kind == "endpoint"]) == 4


def test_failed_regeneration_keeps_its_tokens_and_reports_one_plain_line(store, tmp_path):
    with FakeOpenAI() as server:
        stages = stages_for(store, server, tmp_path)
        batch_id = batch_of(store, tmp_path, ["ok.jpg"])
        server.state.default = Reply(answer(), prompt_tokens=44, completion_tokens=4)
        run_batch(stages, batch_id, concurrency=1)
        [item] = store.list_items(batch_id)
        server.state.default = Reply(refusal="I can't help with that.", prompt_tokens=13, completion_tokens=9)
        report = regenerate_summaries(store, stages.summarizer, [item.id], "dev")
    assert report.saved == [] and len(report.refused) == 1
    assert "declined to describe this product" in report.refused[0] and "Unexpected problem" not in report.refused[0]
    llm = [(u.input_tokens, u.output_tokens) for u in store.usage(batch_id) if u.kind == "llm"]
    assert sorted(llm) == [(13, 9), (44, 4)]
