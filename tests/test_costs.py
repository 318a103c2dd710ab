"""Price table, what-if estimator (against figures worked out by hand below) and the month-to-date ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.admin.costs import Assumptions, PriceTable, estimate_monthly_cost, fixed_infra_costs, month_to_date, uptime_intervals
from pipeline.errors import ConfigError
from pipeline.models import AuditEntry, Usage
from pipeline.store.sqlite_store import SqliteStore

# Hand-computed with the shipped prices and default assumptions (1,000 images/month; the defaults are
# infra/cdk.json's deployment, the "own-alb" profile: 1 ARM64 task 24x7, 2 AZs, public subnets, no NAT, 5 alarms):
#   dashboard  730 h × (0.5 × 0.03238 + 1 × 0.00356)           = 14.4175
#   ALB        730 h × 0.0225 + 220 use-hours × 0.5 LCU × 0.008 = 16.425 + 0.88 = 17.305
#   scheduled tasks: autostop every 15 min (730 × 4 = 2,920) + start/stop on 22 days (44) = 2,964 runs × 1 min = 49.4 h
#              49.4 h × (0.5 × 0.03238 + 1 × 0.00356)            =  0.97565
#   public IPv4 (2 ALB × 730 h + 730 task-hours + 49.4 h) × 0.005 = 11.197
#   alarms 5 × 0.10 = 0.50, secret 0.40
#   logs (fixed) (2,964 scheduled runs + 30 dashboard starts) × 1,020 B = 3,053,880 B × $0.53/GB = 0.001619
#   fixed infrastructure                                         = 44.795
#   logs (volume) 1,000 × (8,400 + 2,000) B + 20 runs × (450 + 100,000) B = 12,409,000 B × $0.53/GB = 0.006577
#   S3         0.1465 GB × 0.023 + 3,000 PUT × 0.005/1k          =  0.018
#   OpenAI     1,000 × (700 × 2.50 + 150 × 10.00) / 1e6          =  3.250   (Batch API: × 1.25 / 5.00 = 1.625)
#   24x7        730 × 0.7364 = 537.572        brief: 730 × 1.2 = 876.000
#   business    22 × 10 = 220 h × 0.7364      = 162.008
#   async       (20 × 25/60 + 1,000 × 1.5/3,600) h = 8.75 h × 0.7364 = 6.4435
#   batch       (20 × 12/60 + 0.41667) h = 4.41667 h × 0.7364       = 3.2524 (summaries through the Batch API: it can wait)
#   local CPU   11.111 h × (4 × 0.03238 + 16 × 0.00356)             = 2.0720
FIXED = 14.4175 + 17.305 + 0.97565 + 11.197 + 0.50 + 0.001619 + 0.40
VOLUME_LOGS = 0.006577
SHARED = FIXED + VOLUME_LOGS + 0.018 + 3.25
EXPECTED = {
    "real-time 24x7": 537.572 + SHARED,
    "real-time 24x7 (quoted $1.2/h)": 876.0 + SHARED,
    "real-time business hours + auto-stop": 162.008 + SHARED,
    "async scale-to-zero": 6.4435 + SHARED,
    "batch transform": 3.2524 + FIXED + VOLUME_LOGS + 0.018 + 1.625,
    "local CPU": 2.0720 + SHARED,
}


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def test_every_price_has_a_source_and_date(prices):
    assert prices.prices
    for key, price in prices.prices.items():
        assert price.usd >= 0 and price.unit and price.source and price.as_of, key


def test_estimator_matches_the_hand_computed_figures(prices):
    estimate = estimate_monthly_cost(Assumptions(), prices)
    got = {s.name: s.monthly_usd for s in estimate.scenarios}
    assert got.keys() == EXPECTED.keys()
    for name, usd in EXPECTED.items():
        assert got[name] == pytest.approx(usd, abs=0.02), name
    brief = next(s for s in estimate.scenarios if "quoted" in s.name)
    assert brief.breakdown["sagemaker_endpoint"] == 876.0  # the brief's own ~$876 line
    for scenario in estimate.scenarios:
        assert sum(scenario.breakdown.values()) == pytest.approx(scenario.monthly_usd, abs=0.01)


def test_fixed_infrastructure_follows_the_deployment_shape(prices):
    assert sum(fixed_infra_costs(Assumptions(), prices).values()) == pytest.approx(FIXED, abs=0.01)
    # Private subnets behind one NAT gateway: no task address, + 730 h × 0.045 = 32.85 for the NAT (and its address).
    nat = fixed_infra_costs(Assumptions(nat_gateways=1, public_ipv4_addresses=3, task_public_ip=False), prices)
    assert nat["nat_gateway"] == pytest.approx(32.85, abs=0.01)
    # Interface endpoints instead: 9 services × 2 AZs × 730 h × 0.01 = 131.40.
    assert fixed_infra_costs(Assumptions(interface_endpoints=18), prices)["vpc_endpoints"] == pytest.approx(131.40, abs=0.01)
    two_spot = fixed_infra_costs(Assumptions(dashboard_tasks=2, fargate_spot=True), prices)
    assert two_spot["fargate_dashboard"] == pytest.approx(2 * 730 * (0.5 * 0.009714 + 1 * 0.001068), abs=0.01)


def test_cheapest_scenario_for_a_latency_need(prices):
    estimate = estimate_monthly_cost(Assumptions(), prices)
    assert estimate.cheapest_meeting(10).name == "real-time business hours + auto-stop"
    assert estimate.cheapest_meeting(60).name == "local CPU"
    assert estimate.cheapest_meeting(1) is None


def test_mini_model_and_volume_change_the_openai_line(prices):
    mini = estimate_monthly_cost(Assumptions(images_per_month=10_000, summary_model="gpt-4o-mini"), prices)
    # 10,000 × (700 × 0.15 + 150 × 0.60) / 1e6 = 1.95
    assert mini.scenarios[0].breakdown["openai"] == pytest.approx(1.95, abs=0.01)


def test_price_overrides_replace_single_entries(tmp_path):
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"sagemaker_hosting_hour:ml.g4dn.xlarge": {"usd": 1.0, "as_of": "2026-11", "source": "our EDP rate"}}))
    table = PriceTable.load(override)
    assert table.usd("sagemaker_hosting_hour:ml.g4dn.xlarge") == 1.0
    assert table.prices["sagemaker_hosting_hour:ml.g4dn.xlarge"].unit.startswith("instance-hour")  # kept from the default
    estimate = estimate_monthly_cost(Assumptions(), table)
    assert estimate.scenarios[0].breakdown["sagemaker_endpoint"] == 730.0
    with pytest.raises(ConfigError, match="No price for"):
        table.usd("sagemaker_hosting_hour:ml.p5.48xlarge")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        PriceTable.load(tmp_path / "bad.json")


def test_cli_estimate_json_shape():
    out = subprocess.run([sys.executable, "-m", "pipeline", "estimate", "--images-per-month", "1000", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["assumptions"]["images_per_month"] == 1000
    assert {"name", "monthly_usd", "breakdown"} <= set(data["scenarios"][0])
    assert {s["name"]: s["monthly_usd"] for s in data["scenarios"]}["real-time 24x7"] == pytest.approx(EXPECTED["real-time 24x7"], abs=0.02)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_uptime_from_audit_intervals():
    month = at("2026-11-01T00:00:00+00:00")
    now = at("2026-11-10T12:00:00+00:00")
    audit = [AuditEntry("2026-10-31T20:00:00+00:00", "a", "start", "started"),  # running into the month
             AuditEntry("2026-11-01T02:00:00+00:00", "a", "stop", "stopped"),
             AuditEntry("2026-11-03T09:00:00+00:00", "a", "start", "started"),
             AuditEntry("2026-11-03T09:05:00+00:00", "a", "start", "already running"),
             AuditEntry("2026-11-03T17:30:00+00:00", "autostop", "autostop", "stopped"),
             AuditEntry("2026-11-10T11:00:00+00:00", "a", "start", "started")]
    intervals = uptime_intervals(audit, month, now, running_now=True)
    hours = [round((end - start).total_seconds() / 3600, 2) for start, end in intervals]
    assert hours == [2.0, 8.5, 1.0]


def test_month_to_date_ledger(tmp_path, prices, monkeypatch):
    import pipeline.store.sqlite_store as sqlite_store

    store = SqliteStore(tmp_path / "db.sqlite3")
    now = datetime(2026, 6, 15, 9, 30, tzinfo=timezone.utc)  # the store's clock, mid-month: any day the suite runs
    monkeypatch.setattr(sqlite_store, "utc_now", lambda: now.isoformat(timespec="seconds"))
    store.add_audit("boss", "start", "started")  # started just now; running for 2 h by `later`
    later = now + timedelta(hours=2)
    from pipeline.ingest.sources import IngestLimits, collect_sources
    from support.images import jpeg_bytes

    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes())
    batch = store.create_batch("b", "t", collect_sources([photo], IngestLimits()))
    [item] = store.list_items(batch.id)
    store.record_usage(item.id, [Usage("endpoint", "blip2-endpoint"), Usage("llm", "gpt-4o", input_tokens=1_000_000, output_tokens=100_000)])
    ledger = month_to_date(store, prices, Assumptions(), running_now=True, now=later)
    assert ledger.endpoint_hours == pytest.approx(2.0, abs=0.01)
    assert ledger.by_component["sagemaker_endpoint"] == pytest.approx(2 * 0.7364, abs=0.01)
    assert ledger.by_component["openai"] == pytest.approx(2.5 + 1.0, abs=0.01)  # 1M in × 2.50 + 0.1M out × 10.00
    assert ledger.images == 1 and ledger.tokens == 1_100_000
    # Issue 16 item 7: assumed fixed infrastructure is an estimate, kept apart from what was measured.
    assert ledger.estimated == frozenset(fixed_infra_costs(Assumptions(), prices))
    assert ledger.measured_usd == pytest.approx(2 * 0.7364 + 3.5, abs=0.02)  # endpoint uptime + tokens only
    assert ledger.estimated_usd == pytest.approx(ledger.total_usd - ledger.measured_usd, abs=0.02) and ledger.estimated_usd > 0
    assert ledger.usd_per_image == ledger.measured_usd  # one image: the measured cost, no assumed infrastructure in it
    assert sum(sum(day.values()) for day in ledger.daily.values()) == pytest.approx(ledger.total_usd, abs=0.05)
    hours_so_far = (later - later.replace(day=1, hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 3600
    month_ipv4 = fixed_infra_costs(Assumptions(), prices)["public_ipv4"]
    assert ledger.by_component["public_ipv4"] == pytest.approx(month_ipv4 * hours_so_far / 730, abs=0.01)  # fixed parts pro-rated
    assert "nat_gateway" not in ledger.by_component


# --- issue 17: deployment profiles, the Batch API, break-even points, the goals ----------------------------------

from pipeline.admin.costs import PROFILES, break_even_points, cost_lines, profile_assumptions  # noqa: E402

# own-alb-business-hours by hand: 0.25 vCPU / 1 GB on Spot, 22 × 10 h + 4 h of wake-ups = 224 h; autostop every 30 min
#   dashboard  224 h × (0.25 × 0.009714 + 1 × 0.001068)           = 0.783216
#   scheduled  (730 × 2 + 44) = 1,504 runs × 1 min = 25.0667 h × (0.25 × 0.03238 + 0.00356) = 0.292152 (launch type FARGATE)
#   IPv4       (2 × 730 + 224 + 25.0667) h × 0.005                = 8.545333
#   wake       2,920 ticks × (0.20/1e6 + 0.128 GB × 0.5 s × 0.0000133334) = 0.003078
#   logs       (1,504 runs + 30 dashboard starts) × 1,020 B + 2,920 ticks × 400 B = 2,732,680 B × $0.53/GB = 0.001448
BUSINESS_FIXED = {"fargate_dashboard": 0.783216, "alb": 17.305, "public_ipv4": 8.545333, "scheduled_tasks": 0.292152,
                  "wake_lambda": 0.003078, "cloudwatch_logs": 0.001448, "cloudwatch_alarms": 0.50, "secrets_manager": 0.40}


def test_business_hours_profile_matches_the_hand_computed_lines(prices):
    got = fixed_infra_costs(profile_assumptions("own-alb-business-hours"), prices)
    assert got.keys() == BUSINESS_FIXED.keys()
    for component, usd in BUSINESS_FIXED.items():
        assert got[component] == pytest.approx(usd, abs=0.0005), component
    assert got["cloudwatch_logs"] == pytest.approx(BUSINESS_FIXED["cloudwatch_logs"], rel=1e-3)  # measured bytes, not the old 1 GB guess
    # dualstack-without-public-ipv4: the ALB's two addresses go, the task's (while it runs) stay
    ipv6 = fixed_infra_costs(profile_assumptions("own-alb-ipv6-business-hours"), prices)
    assert ipv6["public_ipv4"] == pytest.approx((224 + 25.0667) * 0.005, abs=0.001)
    # shared ALB: no load-balancer hours, only this dashboard's LCUs
    shared = fixed_infra_costs(profile_assumptions("shared-alb-business-hours"), prices)
    assert shared["alb"] == pytest.approx(0.88, abs=0.001) and shared["public_ipv4"] == pytest.approx(ipv6["public_ipv4"])


def test_profile_keeps_the_volume_assumptions_and_resets_the_fixed_ones():
    base = Assumptions(images_per_month=5000, summary_model="gpt-4o-mini", dashboard_vcpu=4.0, own_alb=False)
    shipped = profile_assumptions("own-alb", base)
    assert (shipped.images_per_month, shipped.summary_model) == (5000, "gpt-4o-mini")
    assert (shipped.dashboard_vcpu, shipped.own_alb) == (0.5, True)  # the profile's shape, not base's leftovers
    with pytest.raises(ConfigError, match="Unknown deployment profile 'cheap'"):
        profile_assumptions("cheap")


def test_batch_api_tokens_cost_half_and_only_scenarios_that_wait_use_them_by_default(prices):
    for key in ("openai_batch_input_per_million:gpt-4o", "openai_batch_output_per_million:gpt-4o"):
        normal = prices.prices[key.replace("openai_batch", "openai")]
        assert prices.usd(key) == pytest.approx(normal.usd / 2) and "batch" in prices.prices[key].source
    auto = {s.name: s.breakdown for s in estimate_monthly_cost(Assumptions(), prices).scenarios}
    assert auto["batch transform"]["openai_batch"] == pytest.approx(1.625, abs=0.01) and "openai" not in auto["batch transform"]
    assert auto["real-time 24x7"]["openai"] == pytest.approx(3.25, abs=0.01) and "openai_batch" not in auto["real-time 24x7"]
    realtime = {s.name: s.breakdown for s in estimate_monthly_cost(Assumptions(summary_mode="realtime"), prices).scenarios}
    assert "openai_batch" not in realtime["batch transform"]
    everywhere = estimate_monthly_cost(Assumptions(summary_mode="batch"), prices).scenarios
    assert all(s.breakdown["openai_batch"] == pytest.approx(1.625, abs=0.01) for s in everywhere)
    with pytest.raises(ConfigError, match="summary_mode 'sometimes'"):
        estimate_monthly_cost(Assumptions(summary_mode="sometimes"), prices)


def test_ledger_prices_batch_api_usage_at_the_batch_rate(tmp_path, prices):
    store = SqliteStore(tmp_path / "db.sqlite3")
    from pipeline.ingest.sources import IngestLimits, collect_sources
    from support.images import jpeg_bytes

    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes())
    batch = store.create_batch("b", "t", collect_sources([photo], IngestLimits()))
    [item] = store.list_items(batch.id)
    store.record_usage(item.id, [Usage("llm_batch", "gpt-4o", input_tokens=1_000_000, output_tokens=100_000),
                                 Usage("llm", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0)])
    ledger = month_to_date(store, prices, Assumptions(), running_now=False)
    assert ledger.by_component["openai_batch"] == pytest.approx(1.25 + 0.5, abs=0.01)  # half of 2.50 + half of 1.00
    assert ledger.by_component["openai"] == pytest.approx(0.15, abs=0.01)
    assert ledger.tokens == 2_100_000 and "openai_batch" not in ledger.estimated  # measured, not assumed


def test_break_even_points_are_where_the_cheapest_scenario_changes(prices):
    a = Assumptions()
    lines = cost_lines(a, prices, "own-alb")
    # the lines reproduce the estimator at any volume (every part is linear in the photos)
    for volume in (0, 1234, 87_000):
        for s in estimate_monthly_cost(replace(a, images_per_month=volume), prices, "own-alb").scenarios:
            fixed, per_photo = lines[s.name]
            assert fixed + per_photo * volume == pytest.approx(s.monthly_usd, abs=0.05), (s.name, volume)
    [point] = break_even_points(a, prices, 100, 200_000, "own-alb")
    assert (point.cheaper_before, point.cheaper_after) == ("local CPU", "batch transform")

    def cheapest(volume):
        scenarios = estimate_monthly_cost(replace(a, images_per_month=volume), prices, "own-alb").scenarios
        return min((s for s in scenarios if "quoted" not in s.name), key=lambda s: s.monthly_usd).name

    assert cheapest(int(point.images_per_month * 0.9)) == "local CPU"
    assert cheapest(int(point.images_per_month * 1.1)) == "batch transform"
    fixed, per_photo = lines["batch transform"]
    assert point.monthly_usd == pytest.approx(fixed + per_photo * point.images_per_month, abs=0.05)
    assert break_even_points(a, prices, 2_000, 200_000, "own-alb") == []  # batch transform cheapest all the way


def test_goals_of_issue_17(prices):
    """At 1,000 photos a month, captions and summaries the same working day: <= $10 on a shared ALB; with its own ALB
    <= $25 on the GPU (batch transform) with the batch-only IPv6 profile; at 100,000 photos <= $2.50 per 1,000 with
    gpt-4o (was $4.07)."""
    working_day = 8 * 3600

    def cheapest(profile, images):
        return estimate_monthly_cost(Assumptions(images_per_month=images), prices, profile).cheapest_meeting(working_day)

    assert cheapest("shared-alb-business-hours", 1000).monthly_usd <= 10.0
    own = {name: cheapest(name, 1000).monthly_usd for name in PROFILES if not name.startswith("shared")}
    assert min(own, key=own.get) == "own-alb-ipv6-batch"
    assert own["own-alb-ipv6-batch"] == pytest.approx(23.40, abs=0.01)  # local CPU (assumed 40 s/photo); docs/costs.md

    def gpu(profile):
        return next(s for s in estimate_monthly_cost(Assumptions(), prices, profile).scenarios if s.name == "batch transform")

    assert gpu("own-alb-ipv6-batch").monthly_usd == pytest.approx(24.40, abs=0.01)  # the GPU path, own ALB: under $25
    assert gpu("own-alb-ipv6-business-hours").monthly_usd == pytest.approx(25.42, abs=0.01)  # with an endpoint and a secret
    at_volume = cheapest("own-alb", 100_000)
    assert at_volume.name == "batch transform" and at_volume.monthly_usd / 100 <= 2.50


def test_cli_estimate_profile_json_and_breakdown():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipeline", "estimate", *args], capture_output=True, text=True, timeout=60)

    out = run("--images-per-month", "1000", "--profile", "shared-alb-business-hours", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["profile"] == "shared-alb-business-hours"
    by_name = {s["name"]: s for s in data["scenarios"]}
    assert by_name["batch transform"]["monthly_usd"] <= 10.0 and "alb" in by_name["batch transform"]["breakdown"]
    assert by_name["batch transform"]["breakdown"]["alb"] == pytest.approx(0.88, abs=0.01)  # LCUs only: no ALB hours
    assert data["break_even"] and {"images_per_month", "cheaper_before", "cheaper_after"} <= set(data["break_even"][0])
    big = json.loads(run("--images-per-month", "250000", "--json").stdout)
    assert all(s["monthly_usd"] > 0 for s in big["scenarios"]) and big["assumptions"]["images_per_month"] == 250000
    text = run("--images-per-month", "1000", "--profile", "own-alb-business-hours")
    assert text.returncode == 0 and "gives up:" in text.stdout and "fargate_dashboard 0.78" in text.stdout and "break-even at" in text.stdout
    bad = run("--images-per-month", "1000", "--profile", "cheap")
    assert bad.returncode == 2 and "invalid choice: 'cheap'" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_profiles_are_the_estimators():
    from pipeline.cli import build_parser
    from pipeline.settings import Settings

    [estimate] = [a for a in build_parser()._subparsers._group_actions[0].choices["estimate"]._actions if a.dest == "profile"]
    assert list(estimate.choices) == list(PROFILES)
    assert list(Settings.model_fields["deployment_profile"].annotation.__args__) == list(PROFILES)


def test_admin_page_prices_a_profile_and_charts_cost_by_volume_with_break_even_points(monkeypatch, tmp_path, tiny_model):
    """The Admin page's estimator: profile picker (default DEPLOYMENT_PROFILE), the same figures as the CLI, and a
    chart of cost against photos a month per scenario with the break-even points marked."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from pipeline.admin.costs import PriceTable as Prices
    from support.infra import INFRA

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "AUTH_MODE": "dev", "DEPLOYMENT_PROFILE": "own-alb-business-hours", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    for key in ("OPENAI_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(INFRA.parent / "dashboard" / "app.py"), default_timeout=60).run()
        app.switch_page("pages/admin.py").run()
        assert not app.exception, app.exception
        [profile] = [s for s in app.selectbox if s.label == "Deployment profile"]
        assert profile.value == "own-alb-business-hours"
        expected = estimate_monthly_cost(Assumptions(), Prices.load(), "own-alb-business-hours")
        table = next(df.value for df in app.dataframe if "Scenario" in df.value.columns)
        assert dict(zip(table["Scenario"], table["USD / month"])) == {s.name: s.monthly_usd for s in expected.scenarios}
        [chart] = [c.proto.spec for c in app.get("plotly_chart") if "Monthly cost by photos a month" in c.proto.spec]
        spec = json.loads(chart)
        [point] = break_even_points(Assumptions(), Prices.load(), 100, 200_000, "own-alb-business-hours")
        markers = [t for t in spec["data"] if t.get("mode") == "markers+text"]
        assert [(m["x"], m["text"]) for m in markers] == [([point.images_per_month], [f"break-even {point.images_per_month:,.0f}"])]
        assert spec["layout"]["xaxis"]["type"] == "log"
        lines = {t["name"] for t in spec["data"] if t.get("mode") == "lines"}
        assert lines == {s.name for s in expected.scenarios if "quoted" not in s.name}
        profile.set_value("shared-alb-business-hours").run()
        table = next(df.value for df in app.dataframe if "Scenario" in df.value.columns)
        assert dict(zip(table["Scenario"], table["USD / month"]))["batch transform"] <= 10.0
        assert any("(shared-alb-business-hours)" in c.proto.spec for c in app.get("plotly_chart"))
        [seo] = [s for s in app.selectbox if s.label == "SEO fields written by"]
        assert seo.value == "template"  # SEO_FIELDS_BY's default: today's figures above
        seo.set_value("model").run()
        table = next(df.value for df in app.dataframe if "Scenario" in df.value.columns)
        priced = estimate_monthly_cost(Assumptions(seo_fields_by="model"), Prices.load(), "shared-alb-business-hours")
        assert dict(zip(table["Scenario"], table["USD / month"])) == {s.name: s.monthly_usd for s in priced.scenarios}
    finally:
        st.cache_resource.clear()


def test_ledger_prices_vision_caption_tokens_at_the_models_price_and_old_llm_rows_as_before(tmp_path, prices):
    """Issue 19 follow-up: `vision` rows (CAPTIONER=openai-vision) at the vision model's token price, dated ids
    included, each one a captioned image; `vision_sample` rows (the captioner comparison) priced, no image; old
    `llm` rows still summary tokens at the summary price."""
    store = SqliteStore(tmp_path / "db.sqlite3")
    from pipeline.ingest.sources import IngestLimits, collect_sources
    from support.images import jpeg_bytes

    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes())
    batch = store.create_batch("b", "t", collect_sources([photo], IngestLimits()))
    [item] = store.list_items(batch.id)
    store.record_usage(item.id, [Usage("vision", "gpt-4o-mini-2024-07-18", input_tokens=1_000_000, output_tokens=100_000),
                                 Usage("vision_sample", "gpt-4o", input_tokens=1_000_000, output_tokens=0),
                                 Usage("llm", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0)])
    ledger = month_to_date(store, prices, Assumptions(summary_model="gpt-4o"), running_now=False)
    assert ledger.by_component["openai_vision"] == pytest.approx(0.15 + 0.06 + 2.50, abs=0.01)  # mini in + out, gpt-4o sample in
    assert ledger.by_component["openai"] == pytest.approx(0.15, abs=0.01)  # the summary row, as before
    assert ledger.tokens == 1_000_000 and ledger.images == 1  # summary tokens only; one image captioned, the sample none
    assert "openai_vision" not in ledger.estimated and ledger.measured_usd == pytest.approx(2.71 + 0.15, abs=0.02)


def test_readme_cost_table_is_what_the_estimator_says():
    """README's "What it costs" table: each profile's cheapest scenario at 1,000 and 100,000 photos a month, and the
    GPU (batch transform) figures quoted under it, are the estimator's."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z0-9-]+)`[^|]*\| \$([\d.,]+) \| \$([\d.,]+) \|", readme, flags=re.M)
    assert [name for name, _, _ in rows] == ["own-alb", "own-alb-business-hours", "own-alb-ipv6-business-hours", "own-alb-ipv6-batch",
                                             "shared-alb-business-hours"]
    prices = PriceTable.load()

    def scenarios(name: str, photos: int) -> dict[str, float]:
        return {s.name: s.monthly_usd for s in estimate_monthly_cost(Assumptions(images_per_month=photos), prices, profile=name).scenarios}

    for name, small, large in rows:
        assert float(small.replace(",", "")) == pytest.approx(min(scenarios(name, 1000).values()), abs=0.005), name
        assert float(large.replace(",", "")) == pytest.approx(min(scenarios(name, 100_000).values()), abs=0.005), name
    assert "$24.40 on `own-alb-ipv6-batch`, $25.42 on the IPv6 profile with an endpoint and $9.00 on a shared\nALB" in readme
    assert scenarios("own-alb-ipv6-batch", 1000)["batch transform"] == pytest.approx(24.40, abs=0.005)
    assert scenarios("own-alb-ipv6-business-hours", 1000)["batch transform"] == pytest.approx(25.42, abs=0.005)
    assert scenarios("shared-alb-business-hours", 1000)["batch transform"] == pytest.approx(9.00, abs=0.005)
    per_thousand = [scenarios(name, 100_000)["batch transform"] / 100 for name, _, _ in rows]
    assert "$2.03–2.43 per 1,000 photos" in readme
    assert (round(min(per_thousand), 2), round(max(per_thousand), 2)) == (2.03, 2.43)
    seo_by_model = estimate_monthly_cost(Assumptions(images_per_month=100_000, seo_fields_by="model"), prices, profile="own-alb")
    assert "comes to $3.19 per 1,000" in readme
    assert round(min(s.monthly_usd for s in seo_by_model.scenarios) / 100, 2) == 3.19


# The estimator's inputs are bounded: a negative or absurd number is refused in one sentence, never priced ------------
def test_cli_estimate_refuses_numbers_out_of_range_in_one_sentence(monkeypatch, capsys):
    from pipeline.admin.brand import LANGUAGES
    from pipeline.cli import main

    monkeypatch.delenv("PRICES_FILE", raising=False)
    offered = len(LANGUAGES) - 1  # extra languages: English is always written
    cases = [
        (["--images-per-month", "-5"], "--images-per-month must be from 1 to 100,000,000 (got -5)."),
        (["--images-per-month", "0"], "--images-per-month must be from 1 to 100,000,000 (got 0)."),
        (["--images-per-month", "99999999999999999999"], "--images-per-month must be from 1 to 100,000,000 (got 99,999,999,999,999,999,999)."),
        (["--languages", "-3"], f"--languages must be from 0 to {offered} (got -3)."),
        (["--languages", "99999999"], f"--languages must be from 0 to {offered} (got 99,999,999)."),
        (["--languages", str(offered + 1)], f"--languages must be from 0 to {offered} (got {offered + 1})."),
        (["--working-days", "-5", "--hours-per-day", "100"], "--working-days must be from 1 to 31 (got -5)."),
        (["--working-days", "32"], "--working-days must be from 1 to 31 (got 32)."),
        (["--hours-per-day", "100"], "--hours-per-day must be from 1 to 24 (got 100)."),
        (["--hours-per-day", "nan"], "--hours-per-day must be from 1 to 24 (got nan)."),
        (["--batches-per-month", "0"], "--batches-per-month must be from 1 to 1,000 (got 0)."),
        (["--max-latency-s", "-1"], "--max-latency-s must be from 1 to 86,400 (got -1)."),
    ]
    for extra, message in cases:
        assert main(["estimate", "--images-per-month", "1000", *extra]) == 2, extra
        captured = capsys.readouterr()
        assert (captured.err.strip().splitlines(), captured.out) == ([f"error: {message}"], ""), extra
    edges = ["--images-per-month", "1", "--working-days", "31", "--hours-per-day", "24", "--batches-per-month", "1000",
             "--languages", str(offered), "--max-latency-s", "86400", "--json"]
    assert main(["estimate", *edges]) == 0
    scenarios = json.loads(capsys.readouterr().out)["scenarios"]
    assert all(s["monthly_usd"] >= 0 and min(s["breakdown"].values()) >= 0 for s in scenarios)
    assert main(["estimate", "--images-per-month", "1000", "--working-days", "1", "--hours-per-day", "1", "--languages", "0"]) == 0
    assert capsys.readouterr().err == ""


def test_prices_file_with_a_negative_price_or_an_unknown_key_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    def load(entries):
        override = tmp_path / "prices.json"
        override.write_text(json.dumps(entries))
        return PriceTable.load(override)

    sourced = {"unit": "instance-hour", "source": "our EDP rate", "as_of": "2026-11"}
    with pytest.raises(ConfigError, match=r"the usd of 'alb_hour' must be a number, 0 or more \(it is -0.5\)"):
        load({"alb_hour": {"usd": -0.5}})
    for bad in ("cheap", None, True, float("inf")):
        with pytest.raises(ConfigError, match="the usd of 'alb_hour' must be a number"):
            load({"alb_hour": {"usd": bad}})
    with pytest.raises(ConfigError, match=r"'alb_hourr' is not a price this estimator uses"):
        load({"alb_hourr": {"usd": 0.02, **sourced}})
    with pytest.raises(ConfigError, match=r"'sagemaker_hosting_hours:ml.g5.xlarge' is not a price"):
        load({"sagemaker_hosting_hours:ml.g5.xlarge": {"usd": 1.4, **sourced}})
    # another instance type or model of a shipped family is a price the estimator can use; 0 is a price; "_" keys are notes
    table = load({"sagemaker_hosting_hour:ml.g5.xlarge": {"usd": 1.408, **sourced}, "alb_hour": {"usd": 0},
                  "_note": "our rates"})
    assert table.usd("sagemaker_hosting_hour:ml.g5.xlarge") == 1.408 and table.usd("alb_hour") == 0
    (tmp_path / "prices.json").write_text(json.dumps({"openai_input_per_million:gpt-4o": {"usd": -2.5}}))
    monkeypatch.setenv("PRICES_FILE", str(tmp_path / "prices.json"))
    assert main(["estimate", "--images-per-month", "1000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [
        f"error: PRICES_FILE {tmp_path / 'prices.json'}: the usd of 'openai_input_per_million:gpt-4o' must be a number, "
        "0 or more (it is -2.5)."]


def test_a_deeply_nested_prices_file_is_refused_with_one_sentence(tmp_path, monkeypatch, capsys):
    """200 KB of `[[[…]]]` in PRICES_FILE exhausts the JSON parser (RecursionError): one sentence, not
    "unexpected problem (RecursionError…)", from the library and from the CLI."""
    from pipeline.cli import main

    deep = tmp_path / "prices.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError) as refused:
        PriceTable.load(deep)
    assert str(refused.value) == (f"PRICES_FILE {deep} is nested too deeply to be a price table "
                                  "(an object of entries with usd, unit, source and as_of).")
    monkeypatch.setenv("PRICES_FILE", str(deep))
    assert main(["estimate", "--images-per-month", "1000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [f"error: {refused.value}"]


def test_seo_fields_by_model_adds_the_measured_tokens_and_template_keeps_todays_figures(prices):
    """SEO_FIELDS_BY=model: 199 more input and 102 more output tokens per photo (measured from the request in
    tests/test_seo_fields.py); template (the default) is today's estimate, so README's figures stand."""
    from pipeline.admin.costs import summary_costs

    assert Assumptions().seo_fields_by == "template"
    for photos in (1000, 100_000):
        template = replace(Assumptions(images_per_month=photos), seo_fields_by="template")
        model = replace(template, seo_fields_by="model")
        # real time: photos x (199 x $2.50 + 102 x $10.00) / 1e6; the Batch API: half
        assert summary_costs(model, prices, batch=False)["openai"] - summary_costs(template, prices, batch=False)["openai"] == \
            pytest.approx(photos * 1517.5 / 1e6, abs=1e-9)
        assert summary_costs(model, prices, batch=True)["openai_batch"] - summary_costs(template, prices, batch=True)["openai_batch"] == \
            pytest.approx(photos * 758.75 / 1e6, abs=1e-9)
        assert [s.monthly_usd for s in estimate_monthly_cost(template, prices, "own-alb").scenarios] == \
            [s.monthly_usd for s in estimate_monthly_cost(Assumptions(images_per_month=photos), prices, "own-alb").scenarios]
    at_volume = {s.name: s.monthly_usd for s in estimate_monthly_cost(Assumptions(images_per_month=100_000, seo_fields_by="model"),
                                                                        prices, "own-alb").scenarios}
    assert at_volume["batch transform"] == pytest.approx(319.20, abs=0.005)  # docs/costs.md: $3.19 per 1,000, over issue 17's $2.50
    with pytest.raises(ConfigError, match="seo_fields_by 'gpt': choose one of template, model"):
        estimate_monthly_cost(Assumptions(seo_fields_by="gpt"), prices)
    out = subprocess.run([sys.executable, "-m", "pipeline", "estimate", "--images-per-month", "100000", "--seo-fields-by", "model",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["assumptions"]["seo_fields_by"] == "model"
    assert {s["name"]: s["monthly_usd"] for s in data["scenarios"]}["batch transform"] == pytest.approx(at_volume["batch transform"], abs=0.005)


# --- issue 17: log volume measured, not guessed ---------------------------------------------------------------------

def _log_volume():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "log_volume.py"
    spec = importlib.util.spec_from_file_location("log_volume", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_log_estimate_never_understates_what_a_real_batch_writes(tmp_path, tiny_model, local_captioner, prices):
    """bench/log_volume.py's measurement, on a small real batch (run_batch, tiny BLIP-2, offline summarizer, the
    container's LOG_LEVEL=INFO / LOG_FORMAT=json, EMF metrics on: the most it writes): the estimator's bytes per photo,
    per batch run and per task start are at least what was measured, with room to spare (the figures are 2x the
    bench's), and the estimate's log line grows with the photos by exactly those bytes."""
    bench = _log_volume()
    a = Assumptions()
    per_photo, per_run = bench.per_photo_and_run(tmp_path, 4, model_dir=tiny_model, metrics_format="emf", captioner=local_captioner)
    assert 1_000 < per_photo <= a.log_bytes_per_photo / 1.5, per_photo  # a stage line each: fetch ... save, item; EMF beside
    assert per_run <= a.log_bytes_per_batch_run, per_run
    task = bench.scheduled_task_bytes()  # the auto-stop schedule's command
    assert 0 < task <= a.log_bytes_per_task_start / 1.5, task
    # the estimator: logs scale with the photos (the app's bytes plus SageMaker's allowance per photo)
    logs = {n: {s.name: s.breakdown["cloudwatch_logs"] for s in estimate_monthly_cost(Assumptions(images_per_month=n), prices).scenarios}
            for n in (1_000, 1_001_000)}
    per_million = (a.log_bytes_per_photo + a.sagemaker_log_bytes_per_photo) * 1_000_000 / 1e9 * 0.53
    for name in logs[1_000]:
        assert logs[1_001_000][name] - logs[1_000][name] == pytest.approx(per_million, abs=0.011), name


def test_log_estimate_covers_a_dashboard_start(tmp_path):
    """The container's command, `streamlit run dashboard/app.py` with LOG_FORMAT=json, writes no more at start than
    the estimator counts per task start."""
    started = _log_volume().dashboard_start_bytes()
    assert 0 < started <= Assumptions().log_bytes_per_task_start / 1.5, started


# --- issue 17: a deployment without an endpoint (profile own-alb-ipv6-batch) -------------------------------------------

def test_batch_only_profile_prices_only_what_it_synthesizes_and_meets_the_own_alb_goal(prices):
    """own-alb-ipv6-batch: no endpoint (no auto-stop/start/stop tasks, 3 alarms instead of 5), the key in SSM (no
    secret); real-time and async scenarios are not offered; batch transform at 1,000 photos <= $25 all-in."""
    a = profile_assumptions("own-alb-ipv6-batch")
    assert (a.realtime_endpoint, a.secrets, a.alarms, a.endpoint_schedule, a.autostop_every_minutes) == (False, 0, 3, False, 0)
    fixed = fixed_infra_costs(a, prices)
    ipv6 = fixed_infra_costs(profile_assumptions("own-alb-ipv6-business-hours"), prices)
    assert "secrets_manager" not in fixed and "scheduled_tasks" not in fixed and ipv6["secrets_manager"] == pytest.approx(0.40)
    assert fixed["cloudwatch_alarms"] == pytest.approx(0.30)
    assert fixed["public_ipv4"] == pytest.approx(224 * 0.005)  # the task's address while it runs; no scheduled tasks' minutes
    scenarios = {s.name: s for s in estimate_monthly_cost(Assumptions(), prices, "own-alb-ipv6-batch").scenarios}
    assert list(scenarios) == ["batch transform", "local CPU"]
    batch = scenarios["batch transform"]
    assert batch.monthly_usd <= 25.0 and batch.monthly_usd == pytest.approx(24.40, abs=0.005)
    assert "sagemaker_endpoint" not in {k for s in scenarios.values() for k in s.breakdown}
    [point] = break_even_points(Assumptions(), prices, 100, 200_000, "own-alb-ipv6-batch")
    assert (point.cheaper_before, point.cheaper_after) == ("local CPU", "batch transform")


def test_admin_page_of_a_deployment_without_endpoint_offers_no_start(monkeypatch, tmp_path, tiny_model):
    """ENDPOINT_ENABLED=false (what the stack sets with realtime_endpoint false): the Admin page says there is no
    endpoint, offers no Start / Stop and asks AWS nothing about one (here AWS is unreachable: with an endpoint the same
    page tries and warns); its estimator lists only batch transform and local CPU for the profile."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.text import inert
    from pipeline.admin.endpoint import NO_ENDPOINT
    from support.infra import INFRA

    for key, value in {"DATA_DIR": str(tmp_path / "data"), "CAPTION_MODEL": str(tiny_model), "SUMMARIZER": "offline",
                       "AUTH_MODE": "dev", "DEPLOYMENT_PROFILE": "own-alb-ipv6-batch", "CAPTIONER": "sagemaker",
                       "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def admin_page():
        st.cache_resource.clear()
        app = AppTest.from_file(str(INFRA.parent / "dashboard" / "app.py"), default_timeout=60).run()
        app.switch_page("pages/admin.py").run()
        assert not app.exception, app.exception
        return app

    try:
        monkeypatch.setenv("ENDPOINT_ENABLED", "true")
        with_endpoint = admin_page()
        assert any("Endpoint status unavailable" in w.value for w in with_endpoint.warning)  # it asked AWS
        monkeypatch.setenv("ENDPOINT_ENABLED", "false")
        app = admin_page()
        assert [i.value for i in app.info if "captioning endpoint" in i.value] == [inert(NO_ENDPOINT)]  # as text, not Markdown
        labels = [b.label for b in app.button]
        assert not [label for label in labels if "endpoint" in label.lower() or "auto-stop" in label.lower()], labels
        assert not [w.value for w in app.warning if "Endpoint status" in w.value]  # nothing asked
        table = next(df.value for df in app.dataframe if "Scenario" in df.value.columns)
        assert list(table["Scenario"]) == ["batch transform", "local CPU"]
    finally:
        st.cache_resource.clear()


def test_endpoint_start_refuses_without_an_endpoint_and_calls_no_aws(tmp_path, capsys, monkeypatch):
    """`python -m pipeline endpoint start` with ENDPOINT_ENABLED=false: one sentence, exit 1, the refusal in the audit
    log, and no request (AWS is unreachable here: with an endpoint the same command fails on the call)."""
    from pipeline.admin.endpoint import NO_ENDPOINT
    from pipeline.cli import main

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENDPOINT_ENABLED", "false")
    assert main(["endpoint", "start", "--endpoint-url", "http://127.0.0.1:9"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"start: refused. {NO_ENDPOINT}" and "Traceback" not in captured.err
    store = SqliteStore(tmp_path / "data" / "pipeline.sqlite3")
    assert [(e.action, e.result) for e in store.audit_log(limit=5)] == [("start", "refused")]
