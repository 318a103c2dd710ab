"""Admin captioner comparison (issue 19): the tiny local BLIP-2 against the vision captioner on the local
OpenAI-compatible server, through the library, the CLI (a subprocess) and the Admin page (AppTest)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openai
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.text import shown
from pipeline.batches.comparison import CaptionerRun, compare_captioners, report_table
from pipeline.admin import analytics
from pipeline.admin.costs import Assumptions, PriceTable, month_to_date
from pipeline.captioners.openai_vision import OpenAIVisionCaptioner
from support.images import jpeg_bytes
from support.servers import FakeOpenAI, Reply, vision_responder

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PRICES = PriceTable.load()
MINI_IN, MINI_OUT = PRICES.usd("openai_input_per_million:gpt-4o-mini"), PRICES.usd("openai_output_per_million:gpt-4o-mini")
HOSTILE = "**bold** [x](http://evil.example) <b>hi</b>"
HOSTILE_FILE = "**bold** [x](evil) <b>hi"  # no '/' in a file name


def tag_batch(stages, tmp_path: Path, count: int, name: str = "shoes", captioner=None) -> int:
    """A batch of `count` photos tagged through the real runner (tiny model unless `captioner`)."""
    from dataclasses import replace

    from pipeline.batches.runner import run_batch
    from pipeline.service import create_batch

    folder = tmp_path / f"photos-{len(list(tmp_path.glob('photos-*')))}"
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"{HOSTILE_FILE if index == 0 else 'photo'}-{index}.jpg"
        path.write_bytes(jpeg_bytes(seed=index + 1, color=(220, 20, 20)))
        paths.append(path)
    from pipeline.settings import Settings

    batch = create_batch(stages.store, Settings(_env_file=None, data_dir=tmp_path / "data"), paths, name=name, created_by="test")
    run_batch(replace(stages, captioner=captioner) if captioner is not None else stages, batch.id, concurrency=1)
    return batch.id


def vision_for(server: FakeOpenAI, clock=None) -> OpenAIVisionCaptioner:
    client = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=0, timeout=5.0)
    options = {"clock": clock} if clock is not None else {}
    return OpenAIVisionCaptioner(client, model="gpt-4o-mini", **options)


def test_both_captioners_on_a_sample_cost_latency_acceptance_and_the_items_stay_as_they_were(stages, local_captioner, tmp_path):
    store = stages.store
    batch_id = tag_batch(stages, tmp_path, 4)
    items = store.list_items(batch_id)
    assert [i.status for i in items] == ["ok"] * 4
    store.edit_item(items[0].id, "review_status", "approved", "reviewer")  # caption kept
    store.edit_item(items[1].id, "caption", "a red leather shoe", "reviewer")  # caption edited
    store.edit_item(items[1].id, "review_status", "approved", "reviewer")
    before = [(i.caption, i.caption_model, i.summary, i.review_status) for i in store.list_items(batch_id)]
    ledger_before = len(store.usage())
    health_window = (datetime.now(timezone.utc) - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(hours=1))
    cache_before = analytics.health(store, *health_window).cache

    now = [0.0]
    steps = iter([0.1, 0.2, 0.9])  # seconds each vision answer takes, on the captioner's clock

    def answer_after_a_while(request):
        now[0] += next(steps)

    with FakeOpenAI() as server:
        answer = vision_responder()
        replies = [None, Reply(refusal="I can't describe this."), None]
        server.state.responder = lambda request: replies.pop(0) or answer(request)
        server.state.on_request = answer_after_a_while
        runs = [CaptionerRun("BLIP-2 (tiny)", local_captioner), CaptionerRun("vision LLM gpt-4o-mini", vision_for(server, lambda: now[0]))]
        comparison = compare_captioners(stages, batch_id, 3, runs, PRICES)
        assert len(server.state.requests) == 3  # one request per sampled photo

    assert len(comparison.rows) == 3 and [r.seq for r in comparison.rows] == sorted(r.seq for r in comparison.rows)
    assert all(r.captions["BLIP-2 (tiny)"] for r in comparison.rows)  # the tiny model's random words, but an answer
    vision = [r.captions["vision LLM gpt-4o-mini"] for r in comparison.rows]
    assert vision[0] == vision[2] == "a red product on a plain background" and vision[1] is None
    assert comparison.rows[1].errors["vision LLM gpt-4o-mini"].startswith('OpenAI declined to describe this photo ("I can\'t describe this.")')
    assert all(r.stored_caption for r in comparison.rows)

    # nothing about the items changed; the vision model's three paid calls are in the ledger (as the sample's,
    # priced month to date but no paid caption of an item: Health's cache figures stay as they were), the local ones are not
    assert [(i.caption, i.caption_model, i.summary, i.review_status) for i in store.list_items(batch_id)] == before
    new_rows = store.usage()[ledger_before:]
    assert [(u.kind, u.model, u.input_tokens, u.output_tokens) for u in new_rows] == [
        ("vision_sample", "gpt-4o-mini", 300 + 2833, 40), ("vision_sample", "gpt-4o-mini", 120, 60), ("vision_sample", "gpt-4o-mini", 300 + 2833, 40)]
    assert analytics.health(store, *health_window).cache == cache_before
    ledger = month_to_date(store, PRICES, Assumptions(), running_now=False)
    assert sum(day.get("openai_vision", 0.0) for day in ledger.daily.values()) == pytest.approx(
        (2 * (3133 * MINI_IN + 40 * MINI_OUT) + (120 * MINI_IN + 60 * MINI_OUT)) / 1e6, abs=1e-4)

    blip, llm = comparison.reports
    expected_total = (2 * (3133 * MINI_IN + 40 * MINI_OUT) + (120 * MINI_IN + 60 * MINI_OUT)) / 1e6
    assert (llm.photos, llm.answered, llm.failed) == (3, 2, 1)
    assert llm.total_usd == pytest.approx(expected_total) and llm.cost_per_photo_usd == pytest.approx(expected_total / 3)
    assert llm.cost_basis.startswith("OpenAI tokens billed")
    assert (llm.latency_p50_ms, llm.latency_p95_ms) == pytest.approx((100.0, 900.0))  # the answered ones: 100 and 900 ms
    assert llm.caption_accepted is None and llm.reviewed == 0
    assert llm.acceptance_note.startswith("No data: no item captioned by openai-vision:gpt-4o-mini has been reviewed")

    assert (blip.photos, blip.failed, blip.cost_per_photo_usd) == (3, 0, 0.0) and "no per-photo charge" in blip.cost_basis
    assert blip.latency_p50_ms is not None and blip.latency_p50_ms <= blip.latency_p95_ms
    assert (blip.reviewed, blip.caption_accepted) == (2, 0.5)  # of two reviewed captions one was kept, one edited
    table = {row["Captioner"]: row for row in report_table(comparison)}
    assert table["vision LLM gpt-4o-mini"]["Caption accepted"] == "no data" and table["BLIP-2 (tiny)"]["Caption accepted"] == "50.0 %"


def test_the_vision_models_acceptance_appears_once_its_captions_were_used_and_reviewed(stages, local_captioner, tmp_path):
    with FakeOpenAI() as server:
        server.state.responder = vision_responder()
        vision = vision_for(server)
        used = tag_batch(stages, tmp_path, 2, name="vision-batch", captioner=vision)  # CAPTIONER=openai-vision in a real run
        for item in stages.store.list_items(used):
            assert item.caption_model == "openai-vision:gpt-4o-mini"
            stages.store.edit_item(item.id, "review_status", "approved", "reviewer")
        comparison = compare_captioners(stages, used, 1, [CaptionerRun("tiny", local_captioner), CaptionerRun("vision", vision)], PRICES)
    llm = comparison.reports[1]
    assert (llm.reviewed, llm.caption_accepted) == (2, 1.0) and llm.acceptance_note.startswith("From 2 reviewed item(s)")


def test_a_bad_sample_size_or_unknown_batch_is_one_sentence(stages, local_captioner):
    from pipeline.errors import UserFacingError

    runs = [CaptionerRun("tiny", local_captioner)]
    with pytest.raises(UserFacingError, match="The sample must be 1 to 50 photos"):
        compare_captioners(stages, 1, 0, runs, PRICES)
    with pytest.raises(UserFacingError, match="There is no batch 77"):
        compare_captioners(stages, 77, 3, runs, PRICES)


def env_for(tmp_path: Path, tiny_model: Path, server: FakeOpenAI | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CAPTIONER", "SUMMARIZER"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline", "MAX_NEW_TOKENS": "8",
                "PYTHONPATH": str(ROOT)})
    if server is not None:
        env.update({"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url})
    env.update(extra)
    return env


def test_cli_prints_the_comparison_and_fails_in_one_line(stages, tmp_path, tiny_model):
    batch_id = tag_batch(stages, tmp_path, 3)
    command = [sys.executable, "-m", "pipeline", "compare-captioners"]
    with FakeOpenAI() as server:
        server.state.responder = vision_responder()
        done = subprocess.run(command + [str(batch_id), "--sample", "2"], env=env_for(tmp_path, tiny_model, server),
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert len(server.state.requests) == 2
    out = done.stdout
    assert f"Batch {batch_id}: 2 photo(s) captioned by each captioner; the items are unchanged." in out
    assert "Captioner: vision LLM gpt-4o-mini" in out and f"Cost per photo: ${(3133 * MINI_IN + 40 * MINI_OUT) / 1e6:.6f}" in out
    assert "Caption accepted: no data" in out and "a red product on a plain background" in out
    assert "Traceback" not in done.stderr

    missing = subprocess.run(command + ["99"], env=env_for(tmp_path, tiny_model, None, OPENAI_API_KEY="test-key"),
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert (missing.returncode, missing.stderr.strip()) == (2, "error: There is no batch 99.")
    no_key = subprocess.run(command + [str(batch_id)], env=env_for(tmp_path, tiny_model, None), capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert (no_key.returncode, no_key.stderr.strip()) == (
        2, "error: The comparison needs OPENAI_API_KEY for the vision model (OPENAI_VISION_MODEL).")


@pytest.fixture
def page_env(monkeypatch, tmp_path, tiny_model):
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "AUTH_MODE": "dev", "MAX_NEW_TOKENS": "8", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CAPTIONER", raising=False)
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()


def test_admin_page_compares_a_batch_shows_text_literally_and_refuses_non_admins(page_env, stages, monkeypatch):
    from pipeline.service import build_stages
    from pipeline.settings import Settings

    dashboard_stages = build_stages(Settings(), captioner=stages.captioner)  # the store in DATA_DIR the page opens
    batch_id = tag_batch(dashboard_stages, page_env, 2, name=HOSTILE)
    with FakeOpenAI() as server:
        server.state.responder = vision_responder()
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        app = AppTest.from_file(APP, default_timeout=120).run()
        app.switch_page("pages/compare.py").run()
        assert not app.exception, app.exception
        assert app.selectbox[0].options == [f"#{batch_id} {HOSTILE}"]  # plain-text options
        app.number_input[0].set_value(2).run()
        app.button[0].click().run()
        assert not app.exception, app.exception
        assert len(server.state.requests) == 2
    assert not app.error, [e.value for e in app.error]
    report, photos = (frame.value for frame in app.dataframe)
    assert list(report["Captioner"]) == [f"local ({os.environ['CAPTION_MODEL']})", "vision LLM gpt-4o-mini"]
    assert list(report["Caption accepted"]) == ["no data", "no data"]
    assert list(photos["vision LLM gpt-4o-mini"]) == ["a red product on a plain background"] * 2
    assert f"{HOSTILE_FILE}-0.jpg" in list(photos["Photo"])
    captions = [shown(c.value) for c in app.caption]
    assert any(c.startswith("**vision LLM gpt-4o-mini** — cost: OpenAI tokens billed") for c in captions), captions

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DEV_USER_IS_ADMIN", "false")
    st.cache_resource.clear()
    refused = AppTest.from_file(APP, default_timeout=60).run()
    refused.switch_page("pages/compare.py").run()
    assert [e.value for e in refused.error] == ["This page is for admins. Ask an admin if you need access."]
    assert not refused.button and not refused.dataframe


def test_a_deployment_without_endpoint_refuses_the_comparison_in_one_sentence_before_any_call(tmp_path):
    """ENDPOINT_ENABLED=false (profile own-alb-ipv6-batch): there is no BLIP-2 endpoint to caption the sample photo by
    photo, so the comparison says so instead of failing every photo against an endpoint that does not exist."""
    from pipeline.batches.comparison import captioners_to_compare
    from pipeline.errors import ConfigError
    from pipeline.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path, captioner="sagemaker", endpoint_enabled=False, openai_api_key="sk-test")
    with pytest.raises(ConfigError, match=r"ENDPOINT_ENABLED=false\), so the comparison cannot caption its sample with BLIP-2\.$"):
        captioners_to_compare(settings, store=None)
    # with an endpoint, the same settings build both sides (no AWS call is made to build them)
    runs = captioners_to_compare(Settings(_env_file=None, data_dir=tmp_path, captioner="sagemaker", openai_api_key="sk-test"), store=None)
    assert [run.label.split(" ")[0] for run in runs] == ["sagemaker", "vision"]
