"""The vision-LLM captioner (CAPTIONER=openai-vision) through the real `openai` client over HTTP against the
local OpenAI-compatible server (tests/support/servers.py), which decodes the photo it is sent."""

from __future__ import annotations

import base64

import openai
import pytest

from pipeline.attributes import load_attribute_schema
from pipeline.captioners import make_captioner
from pipeline.captioners.openai_vision import OpenAIVisionCaptioner, low_detail_image_tokens
from pipeline.errors import BadInputError, ConfigError, ServiceError, usage_of
from pipeline.images.normalize import normalize_image
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply, image_parts, vision_responder

SCHEMA = load_attribute_schema()
RED = normalize_image(jpeg_bytes((1600, 1200), color=(220, 20, 20)), max_side=768)


def captioner_for(server: FakeOpenAI, **options) -> OpenAIVisionCaptioner:
    client = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=options.pop("max_retries", 1), timeout=5.0)
    return OpenAIVisionCaptioner(client, model=options.pop("model", "gpt-4o-mini"), sleep=lambda s: None, **options)


def test_one_request_per_photo_with_the_photo_inline_at_low_detail_and_its_tokens_in_one_usage_row():
    seen: list[bytes] = []
    with FakeOpenAI() as server:
        server.state.responder = vision_responder(seen)
        result, usage = captioner_for(server).caption(RED, SCHEMA.attributes)
        [request] = server.state.requests
    [part] = image_parts(request)
    assert part["detail"] == "low" and part["url"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(part["url"].split(",", 1)[1]) == RED.jpeg == seen[0]  # the normalized JPEG, not the 1600-px original
    schema = request["response_format"]["json_schema"]
    assert schema["strict"] is True and set(schema["schema"]["properties"]["answers"]["required"]) == set(SCHEMA.names())
    assert result.caption == "a red product on a plain background" and result.model_id == "openai-vision:gpt-4o-mini"
    assert result.answers["color"] == "red" and result.answers["material"] == ""  # "unknown" is no answer
    assert (usage.kind, usage.model, usage.input_tokens, usage.output_tokens, usage.invocations) == ("vision", "gpt-4o-mini", 300 + 2833, 40, 1)
    assert low_detail_image_tokens("gpt-4o-mini-2024-07-18") == 2833 and low_detail_image_tokens("gpt-4o") == 85


@pytest.mark.parametrize("reply, error, message", [
    (Reply(refusal="I can't help with that."), BadInputError, "OpenAI declined to describe this photo (\"I can't help with that.\")"),
    (Reply(raw_content='{"caption": "a red'), ServiceError, "OpenAI's answer for this photo was not JSON (gpt-4o-mini)"),
    (Reply({"caption": "a red shirt"}), ServiceError, "did not follow the requested JSON format"),
    (Reply({"caption": "x", "answers": {}}, finish_reason="length"), ServiceError, "was cut off before it finished"),
], ids=["refused", "garbled", "wrong-shape", "cut-off"])
def test_a_refused_or_garbled_answer_fails_the_photo_and_its_paid_call_travels_with_the_error(reply, error, message):
    with FakeOpenAI() as server:
        server.state.script = [reply]
        with pytest.raises(error) as raised:
            captioner_for(server).caption(RED, SCHEMA.attributes)
        assert len(server.state.requests) == 1  # not asked again: a caption is no summary to repair
    assert message in str(raised.value)
    [paid] = usage_of(raised.value)
    assert (paid.kind, paid.input_tokens, paid.output_tokens) == ("vision", 120, 60)


def test_transient_errors_are_retried_and_quota_or_a_bad_model_never_is():
    answer = vision_responder()
    failures = [Reply(status=429), Reply(status=503)]
    with FakeOpenAI() as server:
        server.state.responder = lambda request: failures.pop(0) if failures else answer(request)
        result, usage = captioner_for(server, max_retries=2).caption(RED, SCHEMA.attributes)
        assert len(server.state.requests) == 3 and result.answers["color"] == "red" and usage.input_tokens == 300 + 2833
    for reply, kind, said in [
        (Reply(status=429, error_code="insufficient_quota", error_type="insufficient_quota"), ConfigError, "out of credit/quota"),
        (Reply(status=404, error_code="model_not_found"), ConfigError, "OPENAI_VISION_MODEL"),
        (Reply(status=401), ConfigError, "OpenAI rejected the API key"),
    ]:
        with FakeOpenAI() as server:
            server.state.default = reply
            with pytest.raises(kind) as raised:
                captioner_for(server, max_retries=3).caption(RED, SCHEMA.attributes)
            assert len(server.state.requests) == 1 and said in str(raised.value) and usage_of(raised.value) == []


def test_a_photo_the_model_cannot_read_fails_that_photo():
    broken = RED.__class__(**{**RED.__dict__, "jpeg": b"not a jpeg"})
    with FakeOpenAI() as server:
        server.state.responder = vision_responder()
        with pytest.raises(BadInputError, match=r"OpenAI could not read this photo \(HTTP 400, invalid_image_format\)"):
            captioner_for(server).caption(broken, SCHEMA.attributes)


def test_the_deadline_holds_over_retries():
    now = [0.0]

    def advance(request):
        now[0] += 25.0  # each answer takes 25 s of the 60 s deadline

    with FakeOpenAI() as server:
        server.state.default = Reply(status=500)
        server.state.on_request = advance
        captioner = captioner_for(server, max_retries=10, deadline_s=60.0, clock=lambda: now[0])
        with pytest.raises(ServiceError, match=r"unavailable right now \(HTTP 500 from gpt-4o-mini\).*Gave up after 60 s \(OPENAI_VISION_DEADLINE_S\)"):
            captioner.caption(RED, SCHEMA.attributes)
        assert len(server.state.requests) == 3  # at 0, 25, 50 s; none started past the deadline


def test_settings_pick_the_vision_captioner_and_a_batch_records_one_usage_row_per_paid_call(make_settings, tmp_path):
    from pipeline.batches.runner import run_batch
    from pipeline.service import build_stages, create_batch

    for name, seed in (("a.jpg", 1), ("b.jpg", 2), ("c.jpg", 3)):
        (tmp_path / name).write_bytes(jpeg_bytes(seed=seed))
    with pytest.raises(ConfigError, match="CAPTIONER=openai-vision needs OPENAI_API_KEY"):
        make_captioner(make_settings(captioner="openai-vision", openai_api_key=None))
    with FakeOpenAI() as server:
        answer = vision_responder()
        replies = {0: None, 1: Reply(refusal="No."), 2: Reply(raw_content="not json at all")}

        def by_order(request):
            reply = replies.get(len(server.state.requests) - 1)
            return reply or answer(request)

        server.state.responder = by_order
        settings = make_settings(captioner="openai-vision", openai_api_key="test-key", openai_base_url=server.base_url,
                                 openai_vision_model="gpt-4o", concurrency=1)
        stages = build_stages(settings)
        assert isinstance(stages.captioner, OpenAIVisionCaptioner) and stages.captioner.detail == "low"
        batch = create_batch(stages.store, settings, [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"], name="v", created_by="t")
        progress = run_batch(stages, batch.id, concurrency=1)
    items = stages.store.list_items(batch.id)
    assert (progress.failed, [i.status for i in items].count("ok")) == (2, 1)
    [ok] = [i for i in items if i.status == "ok"]
    assert ok.caption_model == "openai-vision:gpt-4o" and ok.caption.startswith("a ")
    errors = sorted(i.error for i in items if i.status != "ok")
    assert errors[0].startswith('OpenAI declined to describe this photo ("No.")')
    assert errors[1].startswith("OpenAI's answer for this photo was not JSON (gpt-4o)")
    rows = [u for _, u in stages.store.usage_rows()]
    assert len(rows) == 3 and all(u.kind == "vision" for u in rows)  # three paid calls, three rows; the offline summarizer pays nothing
    assert sorted(u.input_tokens for u in rows) == [120, 120, 300 + 85]


def test_health_and_month_to_date_of_a_real_vision_run(make_settings, tmp_path):
    """Issue 19 follow-up: the vision captioner's calls are paid caption calls. A first run pays for every photo
    (Health: 0 cache hits, not 100 %); the same photos again come from the cache (no request, no row: all hits).
    Month to date prices the calls at the vision model's token price, the dated model id included."""
    from datetime import datetime, timedelta, timezone

    from pipeline.admin import analytics
    from pipeline.admin.costs import Assumptions, PriceTable, month_to_date
    from pipeline.batches.runner import run_batch
    from pipeline.observability import metrics
    from pipeline.service import build_stages, create_batch

    photos = []
    for name, seed in (("a.jpg", 11), ("b.jpg", 12), ("c.jpg", 13)):
        photos.append(tmp_path / name)
        photos[-1].write_bytes(jpeg_bytes(seed=seed))
    with FakeOpenAI() as server:
        server.state.responder = vision_responder()
        settings = make_settings(captioner="openai-vision", openai_api_key="test-key", openai_base_url=server.base_url,
                                 openai_vision_model="gpt-4o-mini-2024-07-18", concurrency=1)
        stages = build_stages(settings)
        first = create_batch(stages.store, settings, photos, name="first", created_by="t")
        reg = metrics.configure_metrics("off")  # a fresh in-process registry (the default state, nothing written)
        run_batch(stages, first.id, concurrency=1)
        assert (reg.counter(metrics.OPENAI_INPUT_TOKENS), reg.counter(metrics.OPENAI_OUTPUT_TOKENS)) == (3 * 3133, 3 * 40)  # the token counters
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        health = analytics.health(stages.store, since, datetime.now(timezone.utc) + timedelta(minutes=1))
        assert (health.ok, health.cache.captioned, health.cache.paid_calls, health.cache.hits, health.cache.hit_rate) == (3, 3, 3, 0, 0.0)
        assert len(server.state.requests) == 3

        again = create_batch(stages.store, settings, photos, name="again", created_by="t")
        run_batch(stages, again.id, concurrency=1)
        assert len(server.state.requests) == 3  # all three from the caption cache
    health = analytics.health(stages.store, since, datetime.now(timezone.utc) + timedelta(minutes=1))
    assert (health.ok, health.cache.captioned, health.cache.paid_calls, health.cache.hits, health.cache.hit_rate) == (6, 6, 3, 3, 0.5)

    rows = [u for _, u in stages.store.usage_rows()]
    assert [(u.kind, u.model, u.input_tokens, u.output_tokens) for u in rows] == [("vision", "gpt-4o-mini-2024-07-18", 300 + 2833, 40)] * 3
    prices = PriceTable.load(settings.prices_file)
    ledger = month_to_date(stages.store, prices, Assumptions(summary_model="gpt-4o"), running_now=False)
    mini_in, mini_out = prices.usd("openai_input_per_million:gpt-4o-mini"), prices.usd("openai_output_per_million:gpt-4o-mini")
    expected = 3 * (3133 * mini_in + 40 * mini_out) / 1e6  # gpt-4o-mini's price, not the summary model's (gpt-4o)
    assert ledger.daily and sum(day.get("openai_vision", 0.0) for day in ledger.daily.values()) == pytest.approx(expected, abs=1e-4)
    assert "openai" not in ledger.by_component and ledger.tokens == 0  # no summary tokens: the offline summarizer
    assert ledger.images == 3 and "openai_vision" not in ledger.estimated


def test_cli_tag_accepts_the_vision_captioner(tmp_path, tiny_model):
    """`tag --captioner openai-vision` (as CAPTIONER=openai-vision does) captions through the OpenAI server."""
    import csv
    import io
    import os
    import subprocess
    import sys

    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(seed=21))
    out = tmp_path / "report.csv"
    with FakeOpenAI() as server:
        server.state.responder = vision_responder()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CAPTIONER"))}
        env.update({"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "CAPTIONER": "local", "SUMMARIZER": "offline",
                    "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url})
        result = subprocess.run([sys.executable, "-m", "pipeline", "tag", str(tmp_path / "a.jpg"), "--captioner", "openai-vision",
                                 "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert len(server.state.requests) == 1 and image_parts(server.state.requests[0])
    assert result.stdout.strip().splitlines()[-1] == "1 tagged, 0 failed" and "Traceback" not in result.stderr
    [row] = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))
    assert row["status"] == "ok" and row["caption_model"] == "openai-vision:gpt-4o-mini" and row["caption"].startswith("a ")

