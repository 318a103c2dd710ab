"""The cost figures an admin reads, line by line, to the cent (mutation testing of pipeline/admin/costs.py,
docs/mutation.md): the monthly estimate's scenarios, the fixed infrastructure, the per-photo summary tokens, the
month-to-date ledger (endpoint uptime, batch jobs, tokens, the pro-rated fixed part) and the cheapest choice.

Every expected figure is worked out by hand below from prices.json's sourced prices (`SHIPPED` pins the ones used, so
a price update fails here first, by name) and the documented default assumptions; none is read back from the code.
Fast on purpose (no CLI subprocess, no model, no Streamlit): mutmut runs these for each mutant.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from pipeline.admin import costs
from pipeline.admin.costs import (Assumptions, Ledger, Price, PriceTable, _split_by_day, dashboard_hours, estimate_monthly_cost,
                                  estimate_transform_job, fixed_infra_costs, month_to_date, scheduled_task_runs, shared_costs,
                                  summary_costs, uptime_intervals)
from pipeline.models import AuditEntry, Usage

# prices.json as shipped (us-east-1, 2025-06): the numbers the hand computations below use
SHIPPED = {
    "sagemaker_hosting_hour:ml.g4dn.xlarge": 0.7364, "sagemaker_batch_hour:ml.g4dn.xlarge": 0.7364, "brief_sagemaker_hour": 1.2,
    "fargate_vcpu_hour:arm": 0.03238, "fargate_gb_hour:arm": 0.00356, "fargate_vcpu_hour:x86": 0.04048, "fargate_gb_hour:x86": 0.004445,
    "fargate_spot_vcpu_hour:x86": 0.012144, "fargate_spot_gb_hour:x86": 0.0013335, "fargate_spot_vcpu_hour:arm": 0.009714,
    "fargate_spot_gb_hour:arm": 0.001068, "alb_hour": 0.0225, "alb_lcu_hour": 0.008,
    "public_ipv4_hour": 0.005, "nat_gateway_hour": 0.045, "vpc_interface_endpoint_hour": 0.01, "cloudwatch_alarm_month": 0.10,
    "s3_gb_month": 0.023, "s3_put_per_1k": 0.005, "cloudwatch_logs_ingest_gb": 0.50, "cloudwatch_logs_store_gb_month": 0.03,
    "secrets_manager_secret_month": 0.40, "lambda_requests_per_million": 0.20, "lambda_gb_second:arm": 0.0000133334,
    "openai_input_per_million:gpt-4o": 2.50, "openai_output_per_million:gpt-4o": 10.00,
    "openai_input_per_million:gpt-4o-mini": 0.15, "openai_output_per_million:gpt-4o-mini": 0.60,
    "openai_batch_input_per_million:gpt-4o": 1.25, "openai_batch_output_per_million:gpt-4o": 5.00,
    "openai_batch_input_per_million:gpt-4o-mini": 0.075, "openai_batch_output_per_million:gpt-4o-mini": 0.30,
}


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    table = PriceTable.load()
    assert {key: table.usd(key) for key in SHIPPED} == SHIPPED, "prices.json changed: rework the hand computations below"
    return table


def exact(value: float) -> object:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


def with_price(table: PriceTable, key: str, usd: float) -> PriceTable:
    return PriceTable({**table.prices, key: replace(table.prices[key], usd=usd)})


# --- the always-on part -----------------------------------------------------------------------------------------------

def test_hours_and_scheduled_runs_of_each_deployment_shape():
    assert dashboard_hours(Assumptions()) == 730  # always on
    assert dashboard_hours(Assumptions(dashboard_always_on=False)) == 22 * 10 + 4  # business hours + wake-ups
    assert dashboard_hours(Assumptions(dashboard_always_on=False, working_days=31, hours_per_day=24)) == 730  # never more than a month
    assert scheduled_task_runs(Assumptions()) == 730 * 60 / 15 + 2 * 22  # auto-stop every 15 min + start and stop each working day
    assert scheduled_task_runs(Assumptions(autostop_every_minutes=30, working_days=20)) == 730 * 2 + 2 * 20
    assert scheduled_task_runs(Assumptions(autostop_every_minutes=0)) == 2 * 22  # no auto-stop task
    assert scheduled_task_runs(Assumptions(endpoint_schedule=False)) == 730 * 4  # no start/stop schedule
    assert scheduled_task_runs(Assumptions(realtime_endpoint=False)) == 0  # no endpoint: neither


def test_fixed_infrastructure_of_the_shipped_deployment_line_by_line(prices):
    """own-alb (infra/cdk.json): 1 ARM64 task of 0.5 vCPU / 1 GB 24x7, own ALB, 2 public IPv4 + the task's, 5 alarms, 1 secret.
    Lines that cost nothing (NAT, endpoints, wake Lambda) are not shown."""
    runs = 730 * 4 + 2 * 22  # 2,964 one-minute scheduled tasks
    assert fixed_infra_costs(Assumptions(), prices) == {
        "fargate_dashboard": exact(730 * (0.5 * 0.03238 + 1 * 0.00356)),  # 14.4175
        "alb": exact(730 * 0.0225 + 22 * 10 * 0.5 * 0.008),  # 16.425 + 0.88 LCU
        "public_ipv4": exact((2 * 730 + 730 + runs / 60) * 0.005),  # ALB's two + the task's + the scheduled tasks'
        "scheduled_tasks": exact(runs / 60 * (0.5 * 0.03238 + 1 * 0.00356)),  # on-demand Fargate
        "cloudwatch_logs": exact((runs + 30) * 1_020 / 1e9 * (0.50 + 0.03)),  # a start's 1,020 B, ingested and kept a month
        "cloudwatch_alarms": exact(5 * 0.10),
        "secrets_manager": exact(1 * 0.40),
    }


def test_fixed_infrastructure_of_a_private_x86_spot_business_hours_shape(prices):
    """3 x86 tasks on Spot with 1 kept on demand, 20 days x 8 h + 6 h of wake-ups, a shared ALB at 1 LCU, private
    subnets behind a NAT with 4 interface endpoints, the wake Lambda, no auto-stop task, 2 secrets, no alarms."""
    a = Assumptions(fargate_arch="x86", dashboard_tasks=3, fargate_spot=True, fargate_on_demand_base=1, task_public_ip=False,
                    own_alb=False, alb_lcu=1.0, nat_gateways=1, public_ipv4_addresses=1, interface_endpoints=4, wake_function=True,
                    dashboard_always_on=False, working_days=20, hours_per_day=8, dashboard_wake_hours=6, autostop_every_minutes=0,
                    secrets=2, alarms=0)
    hours = 20 * 8 + 6
    on_demand, spot = 0.5 * 0.04048 + 1 * 0.004445, 0.5 * 0.012144 + 1 * 0.0013335
    runs = 2 * 20  # start and stop on working days only
    ticks = 730 * 4  # the wake Lambda every 15 minutes
    assert fixed_infra_costs(a, prices) == {
        "fargate_dashboard": exact(hours * (1 * on_demand + 2 * spot)),  # 6.556336
        "alb": exact(20 * 8 * 1.0 * 0.008),  # LCUs only: the shared ALB's hours are its owner's
        "public_ipv4": exact(730 * 1 * 0.005),  # the NAT's address; tasks in private subnets hold none
        "nat_gateway": exact(730 * 0.045),
        "vpc_endpoints": exact(730 * 4 * 0.01),
        "scheduled_tasks": exact(runs / 60 * on_demand),
        "wake_lambda": exact(ticks * (0.20 / 1e6 + 0.128 * 0.5 * 0.0000133334)),
        "cloudwatch_logs": exact(((runs + 30) * 1_020 + ticks * 400) / 1e9 * 0.53),
        "secrets_manager": exact(2 * 0.40),
    }
    # Spot without an on-demand base: every task on Spot; more base than tasks: every task on demand
    all_spot = fixed_infra_costs(replace(a, fargate_on_demand_base=0), prices)["fargate_dashboard"]
    assert all_spot == exact(hours * 3 * spot)
    assert fixed_infra_costs(replace(a, fargate_on_demand_base=5), prices)["fargate_dashboard"] == exact(hours * 3 * on_demand)
    # two NAT gateways (one per AZ), each with its address
    two_nats = fixed_infra_costs(replace(a, nat_gateways=2, public_ipv4_addresses=2), prices)
    assert (two_nats["nat_gateway"], two_nats["public_ipv4"]) == (exact(2 * 730 * 0.045), exact(2 * 730 * 0.005))


def test_every_task_and_every_scheduled_minute_holds_a_public_address(prices):
    """Two dashboard tasks in public subnets, scheduled tasks billed 2 minutes each: 2 x 730 task-hours of addresses."""
    a = Assumptions(dashboard_tasks=2, scheduled_task_minutes=2.0)
    runs = 730 * 4 + 2 * 22
    got = fixed_infra_costs(a, prices)
    assert got["public_ipv4"] == exact((2 * 730 + 2 * 730 + runs * 2 / 60) * 0.005)
    assert got["scheduled_tasks"] == exact(runs * 2 / 60 * (0.5 * 0.03238 + 1 * 0.00356))
    assert got["fargate_dashboard"] == exact(2 * 730 * (0.5 * 0.03238 + 1 * 0.00356))


# --- what grows with the photos ---------------------------------------------------------------------------------------

def test_summary_tokens_per_photo_with_languages_seo_fields_and_the_batch_api(prices):
    # 2 extra languages: (700 + 2 x 80) input and (150 + 2 x 100) output tokens a photo
    two = Assumptions(extra_languages=2)
    assert summary_costs(two, prices, batch=False) == {"openai": exact(1000 * (860 * 2.50 + 350 * 10.00) / 1e6)}  # 5.65
    assert summary_costs(two, prices, batch=True) == {"openai_batch": exact(1000 * (860 * 1.25 + 350 * 5.00) / 1e6)}  # 2.825
    # the model writes the SEO fields too: + 199 input and + 102 output tokens
    seo = replace(two, seo_fields_by="model")
    assert summary_costs(seo, prices, batch=False) == {"openai": exact(1000 * (1059 * 2.50 + 452 * 10.00) / 1e6)}
    # gpt-4o-mini, 10,000 photos, 1 extra language
    mini = Assumptions(images_per_month=10_000, summary_model="gpt-4o-mini", extra_languages=1)
    assert summary_costs(mini, prices, batch=False) == {"openai": exact(10_000 * (780 * 0.15 + 250 * 0.60) / 1e6)}  # 2.67
    assert summary_costs(mini, prices, batch=True) == {"openai_batch": exact(10_000 * (780 * 0.075 + 250 * 0.30) / 1e6)}


def test_shared_costs_add_storage_puts_and_every_log_byte(prices):
    a = Assumptions(images_per_month=100_000)
    shared = shared_costs(a, prices)
    # 100,000 x 0.15 MB = 14.648 GB at $0.023 + 3 PUTs a photo at $0.005 per 1,000
    assert shared["s3"] == exact(100_000 * 0.15 / 1024 * 0.023 + 100_000 * 3 / 1000 * 0.005)  # 1.8369
    fixed_bytes = (730 * 4 + 2 * 22 + 30) * 1_020
    volume_bytes = 100_000 * (8_400 + 2_000) + 20 * (450 + 100_000)  # the app's and SageMaker's lines, per photo and per burst
    assert shared["cloudwatch_logs"] == exact((fixed_bytes + volume_bytes) / 1e9 * 0.53)  # 0.5539
    assert shared["openai"] == exact(100_000 * (700 * 2.50 + 150 * 10.00) / 1e6) and "openai_batch" not in shared
    assert shared["alb"] == exact(730 * 0.0225 + 220 * 0.5 * 0.008)  # the fixed part rides along
    batch = shared_costs(a, prices, batch_summaries=True)
    assert batch["openai_batch"] == exact(100_000 * (700 * 1.25 + 150 * 5.00) / 1e6) and "openai" not in batch


# --- the monthly estimate -----------------------------------------------------------------------------------------------

def test_each_scenarios_compute_line_latency_and_notes_at_the_defaults(prices):
    """What the Admin page and `estimate` show for each scenario: its compute line in cents, the wait, and the note that
    says how the line was made (1,000 photos, 20 bursts, g4dn.xlarge at $0.7364/h)."""
    got = {s.name: s for s in estimate_monthly_cost(Assumptions(), prices).scenarios}
    work_h = 1000 * 1.5 / 3600  # 0.4167 h of GPU work
    batch_note = "; summaries through the Batch API (half price, within 24 h, usually far sooner)"
    want = {  # name: (compute line, its cents, latency, latency_s, note)
        "real-time 24x7": ("sagemaker_endpoint", 730 * 0.7364, 537.57, "seconds", 5, "730 h × $0.7364/h: the always-on baseline"),
        "real-time 24x7 (quoted $1.2/h)": ("sagemaker_endpoint", 730 * 1.2, 876.00, "seconds", 5,
                                           "730 h × $1.2/h reproduces the original ~$876 quote"),
        "real-time business hours + auto-stop": ("sagemaker_endpoint", 22 * 10 * 0.7364, 162.01, "seconds in business hours", 5,
                                                 "22 days × 10 h; auto-stop ends forgotten days"),
        "async scale-to-zero": ("sagemaker_endpoint", (20 * 25 / 60 + work_h) * 0.7364, 6.44, "10 min cold start per burst", 600,
                                "20 bursts × (10 min start + 15 min idle tail) + 0.42 h work"),
        "batch transform": ("sagemaker_batch", (20 * 12 / 60 + work_h) * 0.7364, 3.25, "12+ min per job", 12 * 60 + 60,
                            "20 jobs × 12 min overhead + 0.42 h work; no idle time" + batch_note),
        "local CPU": ("fargate_captioning", 1000 * 40 / 3600 * (4 * 0.03238 + 16 * 0.00356), 2.07, "~40 s per image", 40,
                      "11.1 h of a 4 vCPU / 16 GB task; no GPU"),
    }
    assert list(got) == list(want)
    for name, (key, usd, cents, latency, latency_s, note) in want.items():
        scenario = got[name]
        assert scenario.breakdown[key] == round(usd, 2) == cents, name
        assert (scenario.latency, scenario.latency_s, scenario.notes) == (latency, latency_s, note), name
        assert list(scenario.breakdown)[0] == key  # the compute line first, then the shared lines


def test_every_line_an_admin_reads_is_in_whole_cents_and_the_total_is_their_sum(prices):
    for a in (Assumptions(), Assumptions(images_per_month=123_457, summary_model="gpt-4o-mini", extra_languages=3)):
        for scenario in estimate_monthly_cost(a, prices).scenarios:
            assert all(value == round(value, 2) for value in scenario.breakdown.values()), scenario.breakdown
            assert scenario.monthly_usd == round(sum(scenario.breakdown.values()), 2), scenario.name
    # defaults: the shared lines in cents (14.4175 -> 14.42, 11.197 -> 11.20, 0.97565 -> 0.98, 3.25 real-time, 1.625 batch)
    [real_time, *_, batch, local] = estimate_monthly_cost(Assumptions(), prices).scenarios
    assert {k: real_time.breakdown[k] for k in ("fargate_dashboard", "public_ipv4", "scheduled_tasks", "openai", "s3")} == \
        {"fargate_dashboard": 14.42, "public_ipv4": 11.20, "scheduled_tasks": 0.98, "openai": 3.25, "s3": 0.02}
    assert batch.breakdown["openai_batch"] in (1.62, 1.63) and "openai" not in batch.breakdown
    assert local.monthly_usd == round(2.07 + 14.42 + 17.30 + 11.20 + 0.98 + 0.01 + 0.50 + 0.40 + 0.02 + 3.25, 2)  # 50.15


def test_summary_modes_decide_who_pays_batch_api_prices(prices):
    def lines(mode):
        return {s.name: s for s in estimate_monthly_cost(Assumptions(summary_mode=mode), prices).scenarios}

    batch_note = "; summaries through the Batch API (half price, within 24 h, usually far sooner)"
    realtime = lines("realtime")
    assert all("openai_batch" not in s.breakdown and not s.notes.endswith(batch_note) for s in realtime.values())
    assert realtime["batch transform"].breakdown["openai"] == 3.25
    assert realtime["batch transform"].notes == "20 jobs × 12 min overhead + 0.42 h work; no idle time"
    everywhere = lines("batch")
    assert all(s.breakdown["openai_batch"] in (1.62, 1.63) and "openai" not in s.breakdown for s in everywhere.values())
    assert all(s.notes.endswith(batch_note) and s.notes.count("Batch API") == 1 for s in everywhere.values())
    auto = lines("auto")
    assert [name for name, s in auto.items() if s.notes.endswith(batch_note)] == ["batch transform"]


def test_a_deployment_without_an_endpoint_offers_only_what_runs_without_one(prices):
    a = Assumptions(realtime_endpoint=False)
    estimate = estimate_monthly_cost(a, prices)
    assert [s.name for s in estimate.scenarios] == ["batch transform", "local CPU"]
    assert estimate.cheapest_meeting(86_400).name == "batch transform"  # $49.70 against local CPU's $50.15
    assert estimate.cheapest_meeting(60).name == "local CPU" and estimate.cheapest_meeting(5) is None  # no real-time endpoint
    # a profile sets the shape: its name and assumptions are what the estimate reports
    profiled = estimate_monthly_cost(Assumptions(images_per_month=5000), prices, "own-alb-ipv6-batch")
    assert profiled.profile == "own-alb-ipv6-batch" and profiled.to_json()["profile"] == "own-alb-ipv6-batch"
    assert profiled.assumptions["realtime_endpoint"] is False and profiled.assumptions["images_per_month"] == 5000
    assert profiled.to_json()["assumptions"] == profiled.assumptions  # `estimate --json` prints what was assumed
    assert [s["name"] for s in profiled.to_json()["scenarios"]] == ["batch transform", "local CPU"]
    assert estimate_monthly_cost(Assumptions(), prices).profile is None


def test_local_cpu_captioning_runs_on_the_deployments_fargate_capacity(prices):
    """Business-hours profiles run on Fargate Spot (ARM64): the local-CPU captioning task is priced at Spot rates there."""
    spot = {s.name: s for s in estimate_monthly_cost(Assumptions(), prices, "own-alb-business-hours").scenarios}
    assert spot["local CPU"].breakdown["fargate_captioning"] == round(1000 * 40 / 3600 * (4 * 0.009714 + 16 * 0.001068), 2) == 0.62
    x86 = {s.name: s for s in estimate_monthly_cost(Assumptions(fargate_arch="x86"), prices).scenarios}
    assert x86["local CPU"].breakdown["fargate_captioning"] == round(1000 * 40 / 3600 * (4 * 0.04048 + 16 * 0.004445), 2) == 2.59


def test_the_cheapest_choice_meets_the_wait_exactly_and_never_picks_the_quoted_comparison(prices):
    estimate = estimate_monthly_cost(Assumptions(), prices)
    assert estimate.cheapest_meeting(5).name == "real-time business hours + auto-stop"  # 5 s: the real-time ones
    assert estimate.cheapest_meeting(40).name == "local CPU"  # ~40 s a photo meets a 40 s need
    assert estimate.cheapest_meeting(39.9).name == "real-time business hours + auto-stop"
    assert estimate.cheapest_meeting(780).name == "batch transform"  # 12 min + 1 min: $49.70 beats local CPU's $50.15
    assert estimate.cheapest_meeting(4.9) is None
    # the quoted $1.2/h comparison is never "cheapest", even when it is the lowest figure
    free_quote = estimate_monthly_cost(Assumptions(), with_price(prices, "brief_sagemaker_hour", 0.0))
    assert min(free_quote.scenarios, key=lambda s: s.monthly_usd).name == "real-time 24x7 (quoted $1.2/h)"
    assert free_quote.cheapest_meeting(5).name == "real-time business hours + auto-stop"


def test_a_transform_job_estimate_before_it_starts(prices):
    # 1,000 photos on 2 instances: 12 min start-up each + 1,000 x 1.5 s / 2 = 12.5 min; both billed
    job = estimate_transform_job(1000, "ml.g4dn.xlarge", 2, prices, Assumptions())
    assert (job.photos, job.instance_type, job.instance_count) == (1000, "ml.g4dn.xlarge", 2)
    assert (job.minutes, job.usd) == (24.5, round(2 * 24.5 / 60 * 0.7364, 2)) == (24.5, 0.60)
    # 13 photos on "0" instances: one instance, 12 + 0.325 min, shown to a tenth of a minute and a cent
    small = estimate_transform_job(13, "ml.g4dn.xlarge", 0, prices, Assumptions())
    assert (small.instance_count, small.minutes, small.usd) == (1, 12.3, 0.15)  # 12.325 / 60 x 0.7364 = 0.1513


# --- the month-to-date ledger -----------------------------------------------------------------------------------------

def at(text: str) -> datetime:
    return datetime.fromisoformat(text + "+00:00")


def hours(intervals) -> list[tuple[str, float]]:
    return [(start.isoformat()[:16], (end - start).total_seconds() / 3600) for start, end in intervals]


def test_endpoint_uptime_from_the_audit_log_edge_cases():
    month, now = at("2026-11-01T00:00:00"), at("2026-11-05T00:00:00")

    def entry(when, result):
        return AuditEntry(when + "+00:00", "boss", "start" if result == "started" else "stop", result)

    # a stop with nothing recorded before it: running since the month's start (deployed outside the dashboard)
    assert hours(uptime_intervals([entry("2026-11-02T10:00:00", "stopped")], month, now, False)) == [("2026-11-01T00:00", 34.0)]
    # a second stop without a start counts from the stop before it; a second start keeps the first
    audit = [entry("2026-11-01T05:00:00", "stopped"), entry("2026-11-01T01:00:00", "started"),  # out of order on purpose
             entry("2026-11-01T01:30:00", "already running"), entry("2026-11-01T01:40:00", "refused"),  # neither starts nor stops
             entry("2026-11-01T02:00:00", "stopped"), entry("2026-11-02T00:00:00", "started"),
             entry("2026-11-02T03:00:00", "started"), entry("2026-11-02T06:00:00", "stopped")]
    assert hours(uptime_intervals(audit, month, now, False)) == [("2026-11-01T01:00", 1.0), ("2026-11-01T02:00", 3.0),
                                                                 ("2026-11-02T00:00", 6.0)]
    # running now: from the last start, or the last event, or the month's start
    assert hours(uptime_intervals([entry("2026-11-04T20:00:00", "started")], month, now, True)) == [("2026-11-04T20:00", 4.0)]
    assert hours(uptime_intervals([entry("2026-11-04T21:00:00", "stopped")], month, now, True)) == \
        [("2026-11-01T00:00", 93.0), ("2026-11-04T21:00", 3.0)]
    assert hours(uptime_intervals([], month, now, True)) == [("2026-11-01T00:00", 96.0)]
    assert uptime_intervals([], month, now, False) == []
    # last month's uptime is not this month's; a start and stop in the same second is no uptime
    before = [entry("2026-10-30T00:00:00", "started"), entry("2026-10-31T00:00:00", "stopped"),
              entry("2026-11-03T00:00:00", "started"), entry("2026-11-03T00:00:00", "stopped")]
    assert uptime_intervals(before, month, now, False) == []
    # asked as of an earlier time (a ledger for a past moment): a later stop is clipped to it
    later_stop = [entry("2026-11-04T20:00:00", "started"), entry("2026-11-05T02:00:00", "stopped")]
    assert hours(uptime_intervals(later_stop, month, now, False)) == [("2026-11-04T20:00", 4.0)]


def test_uptime_is_split_at_midnight_utc():
    assert _split_by_day(at("2026-11-01T22:30:00"), at("2026-11-03T01:15:00")) == {
        "2026-11-01": 1.5, "2026-11-02": 24.0, "2026-11-03": 1.25}
    assert _split_by_day(at("2026-11-01T08:00:00"), at("2026-11-01T08:00:00")) == {}
    # a start with seconds and microseconds: the day still ends at 00:00:00.000000
    assert _split_by_day(at("2026-11-01T23:59:30.250000"), at("2026-11-02T00:00:30.250000")) == {
        "2026-11-01": 29.75 / 3600, "2026-11-02": 30.25 / 3600}


@pytest.fixture
def ledger_store(tmp_path, monkeypatch):
    """A SQLite store whose clock is set by the test (the store stamps every audit and usage row itself)."""
    from pipeline.ingest.sources import IngestLimits, collect_sources
    from pipeline.store import sqlite_store
    from support.images import jpeg_bytes

    clock = {"now": "2026-10-15T00:00:00+00:00"}
    monkeypatch.setattr(sqlite_store, "utc_now", lambda: clock["now"])
    store = sqlite_store.SqliteStore(tmp_path / "db.sqlite3")
    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes())
    [item] = store.list_items(store.create_batch("b", "t", collect_sources([photo], IngestLimits())).id)

    def record(when: str, *usage: Usage) -> None:
        clock["now"] = when + "+00:00"
        store.record_usage(item.id, list(usage))

    def audit(when: str, result: str) -> None:
        clock["now"] = when + "+00:00"
        store.add_audit("boss", "start", result)

    store.record, store.audit = record, audit
    return store


def test_month_to_date_ledger_by_day_component_and_photo(ledger_store, prices):
    """Now: 3 November, 06:00 UTC (54 h into the month). The endpoint ran from 31 Oct 22:00 to 1 Nov 02:00 and since
    2 Nov 23:00; a transform job billed 1.5 instance-hours; summaries, Batch API summaries and vision captions were paid."""
    store = ledger_store
    store.audit("2026-10-31T22:00:00", "started")
    store.record("2026-10-31T23:59:59", Usage("llm", "gpt-4o", input_tokens=9_000_000))  # October's: not this month's
    store.audit("2026-11-01T02:00:00", "stopped")
    store.record("2026-11-01T09:00:00", Usage("endpoint", "blip2", invocations=2))  # 2 photos captioned
    store.record("2026-11-02T10:00:00", Usage("transform_job", "ml.g4dn.xlarge", invocations=0, latency_ms=5_400_000),
                 Usage("transform", "blip2", invocations=3))
    store.record("2026-11-02T11:00:00", Usage("llm", "gpt-4o-2099-01-01", input_tokens=200_000, output_tokens=10_000),  # unpriced id
                 Usage("llm_batch", "gpt-4o-mini", input_tokens=2_000_000, output_tokens=1_000_000))
    store.record("2026-11-03T05:00:00", Usage("vision", "gpt-4o-2024-08-06", input_tokens=100_000, output_tokens=10_000),
                 Usage("vision_sample", "gpt-4o-mini", input_tokens=1_000_000, invocations=1))
    store.audit("2026-11-02T23:00:00", "started")
    now = at("2026-11-03T06:00:00")
    ledger = month_to_date(store, prices, Assumptions(), running_now=True, now=now)

    assert (ledger.month_start, ledger.now) == (at("2026-11-01T00:00:00"), now)
    assert ledger.endpoint_hours == 2 + 1 + 6
    fixed = fixed_infra_costs(Assumptions(), prices)
    measured = {
        "sagemaker_endpoint": 9 * 0.7364,  # 6.6276
        "sagemaker_batch": 1.5 * 0.7364,  # 1.1046
        "openai": (200_000 * 2.50 + 10_000 * 10.00) / 1e6,  # a dated id without its own price: the summary model's, 0.60
        "openai_batch": (2_000_000 * 0.075 + 1_000_000 * 0.30) / 1e6,  # 0.45
        "openai_vision": (100_000 * 2.50 + 10_000 * 10.00) / 1e6 + 1_000_000 * 0.15 / 1e6,  # gpt-4o's price for its dated id, 0.50
    }
    assert ledger.by_component == {**{k: round(v, 2) for k, v in measured.items()},
                                   **{k: round(usd * 54 / 730, 2) for k, usd in fixed.items()}}  # the fixed part, pro-rated by hour
    assert ledger.by_component["sagemaker_endpoint"] == 6.63 and ledger.by_component["alb"] == 1.28
    assert ledger.estimated == frozenset(fixed)
    assert ledger.images == 2 + 3 + 1  # endpoint and transform captions, the vision caption; not the sample
    assert ledger.tokens == 210_000 + 3_000_000  # summary tokens only
    assert ledger.measured_usd == round(6.63 + 1.10 + 0.60 + 0.45 + 0.50, 2) == 9.28
    assert ledger.usd_per_image == round(9.28 / 6, 4) == 1.5467
    assert ledger.total_usd == round(sum(ledger.by_component.values()), 2)
    assert ledger.estimated_usd == round(sum(round(usd * 54 / 730, 2) for usd in fixed.values()), 2)
    # each day's lines, to 4 decimals
    assert list(ledger.daily) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert ledger.daily["2026-11-01"]["sagemaker_endpoint"] == round(2 * 0.7364, 4)
    assert ledger.daily["2026-11-02"]["sagemaker_endpoint"] == round(1 * 0.7364, 4)
    assert ledger.daily["2026-11-03"]["sagemaker_endpoint"] == round(6 * 0.7364, 4)
    assert ledger.daily["2026-11-02"]["sagemaker_batch"] == round(1.5 * 0.7364, 4)
    assert ledger.daily["2026-11-03"]["openai_vision"] == 0.5
    assert ledger.daily["2026-11-01"]["fargate_dashboard"] == round(fixed["fargate_dashboard"] * 24 / 730, 4)
    assert ledger.daily["2026-11-03"]["fargate_dashboard"] == round(fixed["fargate_dashboard"] * 6 / 730, 4)
    assert ledger.daily["2026-11-01"]["public_ipv4"] == 0.3681  # $11.197 x 24 / 730 h = 0.368121: 4 decimals shown


def test_month_to_date_when_nothing_was_used(ledger_store, prices):
    ledger = month_to_date(ledger_store, prices, Assumptions(), running_now=False, now=at("2026-11-01T12:34:56.789012"))
    assert ledger.month_start == at("2026-11-01T00:00:00")  # the month starts at midnight UTC on the 1st, whatever the time now
    assert ledger.endpoint_hours == 0 and ledger.images == 0 and ledger.tokens == 0
    assert ledger.measured_usd == 0 and ledger.usd_per_image is None  # no photo: no per-photo figure, not a division by zero
    assert set(ledger.by_component) == set(fixed_infra_costs(Assumptions(), prices))
    assert ledger.estimated_usd == ledger.total_usd > 0


def test_ledger_figures_are_rounded_for_display():
    ledger = Ledger(at("2026-11-01T00:00:00"), at("2026-11-02T00:00:00"),
                    {"sagemaker_endpoint": 1.004, "openai": 2.003, "alb": 0.333, "public_ipv4": 0.336}, {}, images=3,
                    endpoint_hours=1.0, estimated=frozenset({"alb", "public_ipv4"}))
    assert (ledger.measured_usd, ledger.estimated_usd, ledger.total_usd) == (3.01, 0.67, 3.68)
    assert ledger.usd_per_image == round(3.01 / 3, 4) == 1.0033  # the measured cost only, to a hundredth of a cent
    assert Ledger(ledger.month_start, ledger.now, {}, {}, 0, 0.0).usd_per_image is None


def test_prices_are_what_the_table_says(prices):
    assert isinstance(prices.prices["alb_hour"], Price) and prices.prices["alb_hour"].source.startswith("https://")
    assert costs.HOURS_PER_MONTH == 730


def test_month_to_date_without_a_time_is_now_in_utc(ledger_store, prices):
    """The Admin page asks for "now": an aware UTC time (the audit log's times are UTC; a naive one cannot be compared)."""
    ledger_store.audit("2026-11-01T00:00:00", "stopped")
    ledger = month_to_date(ledger_store, prices, Assumptions(), running_now=True)
    assert ledger.now.utcoffset().total_seconds() == 0 and ledger.month_start.day == 1 and ledger.month_start.tzinfo is not None


# --- cost by volume and break-even points (the Admin page's chart, `estimate`'s "break-even at") ---------------------

def test_each_scenario_is_a_fixed_part_plus_a_cost_per_photo(prices):
    from pipeline.admin.costs import cost_lines

    lines = cost_lines(Assumptions(), prices, "own-alb")
    # batch transform at 0 photos: 20 jobs x 12 min x $0.7364 = 2.95, + the fixed lines in cents (14.42 + 17.30 + 11.20 + 0.98
    # + 0.50 + 0.40; logs under a cent); per photo: 1.5 s of GPU, 10,400 log bytes, 0.15 MB and 3 PUTs, Batch API tokens
    fixed, per_photo = lines["batch transform"]
    assert fixed == pytest.approx(2.95 + 14.42 + 17.30 + 11.20 + 0.98 + 0.50 + 0.40, abs=1e-9)  # 47.75
    assert per_photo == pytest.approx(1.5 / 3600 * 0.7364 + 10_400 / 1e9 * 0.53 + 0.15 / 1024 * 0.023 + 3 / 1000 * 0.005
                                      + (700 * 1.25 + 150 * 5.00) / 1e6, abs=2e-8)  # $0.001956 a photo
    fixed, per_photo = lines["local CPU"]
    assert fixed == pytest.approx(14.42 + 17.30 + 11.20 + 0.98 + 0.50 + 0.40, abs=1e-9)  # 44.80: no GPU, no job overhead
    assert per_photo == pytest.approx(40 / 3600 * (4 * 0.03238 + 16 * 0.00356) + 10_400 / 1e9 * 0.53 + 0.15 / 1024 * 0.023
                                      + 3 / 1000 * 0.005 + (700 * 2.50 + 150 * 10.00) / 1e6, abs=2e-8)  # $0.005346
    assert list(lines) == [s.name for s in estimate_monthly_cost(Assumptions(), prices, "own-alb").scenarios]


def test_break_even_where_batch_transform_overtakes_local_cpu(prices):
    from pipeline.admin.costs import break_even_points

    # 44.80 + 0.00534588 n = 47.75 + 0.00195571 n  =>  n = 2.95 / 0.00339017 = 870.2 photos, at $49.45
    [point] = break_even_points(Assumptions(), prices, 100, 200_000, "own-alb")
    assert (point.images_per_month, point.cheaper_before, point.cheaper_after, point.monthly_usd) == \
        (870, "local CPU", "batch transform", 49.45)
    assert break_even_points(Assumptions(), prices, 100, 870, "own-alb") == []  # past the upper bound: not shown
    assert len(break_even_points(Assumptions(), prices, 100, 871, "own-alb")) == 1
    assert break_even_points(Assumptions(), prices, 871, 200_000, "own-alb") == []  # already past it


def test_break_even_points_follow_the_cheapest_scenario_through_two_changes(prices):
    """An endpoint scheduled 1 hour on 1 day a month: local CPU, then the business-hours endpoint, then batch transform."""
    from pipeline.admin.costs import break_even_points

    a = Assumptions(working_days=1, hours_per_day=1)
    points = break_even_points(a, prices, 0, 200_000, "own-alb")
    assert [(p.cheaper_before, p.cheaper_after) for p in points] == [
        ("local CPU", "real-time business hours + auto-stop"), ("real-time business hours + auto-stop", "batch transform")]
    for point in points:  # the estimator agrees on each side of each point, and at it
        def cheapest(volume):
            scenarios = estimate_monthly_cost(replace(a, images_per_month=volume), prices, "own-alb").scenarios
            return min((s for s in scenarios if "quoted" not in s.name), key=lambda s: s.monthly_usd)

        assert cheapest(int(point.images_per_month * 0.95)).name == point.cheaper_before
        assert cheapest(int(point.images_per_month * 1.05)).name == point.cheaper_after
        at_point = cheapest(int(point.images_per_month)).monthly_usd
        assert point.monthly_usd == pytest.approx(at_point, abs=0.02) and point.monthly_usd == round(point.monthly_usd, 2)
        assert point.images_per_month == int(point.images_per_month)  # whole photos


# --- the price table ----------------------------------------------------------------------------------------------------

def test_billed_model_ids_find_their_price(prices):
    from pipeline.admin.costs import token_price_model

    assert token_price_model("gpt-4o-mini-2024-07-18", prices) == "gpt-4o-mini"  # the longest name that fits, not gpt-4o
    assert token_price_model("gpt-4o-2024-08-06", prices) == "gpt-4o"
    assert token_price_model("gpt-4o", prices) == "gpt-4o" and token_price_model("gpt-4o-mini", prices) == "gpt-4o-mini"
    assert token_price_model("gpt-4omni", prices) is None and token_price_model("gpt-5", prices) is None
    assert token_price_model("openai_input_per_million:gpt-4o", prices) is None
    # a fine-tuned model priced in PRICES_FILE: its id holds colons
    tuned = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    table = PriceTable({**prices.prices, f"openai_input_per_million:{tuned}": Price(0.30, "1M input tokens", "our contract", "2026-11")})
    assert token_price_model(tuned, table) == tuned and token_price_model("gpt-4o-mini-2024-07-18", table) == "gpt-4o-mini"


def test_prices_file_overrides(tmp_path):
    import json

    from pipeline.errors import ConfigError

    def load(entries):
        override = tmp_path / "prices.json"
        override.write_text(json.dumps(entries))
        return PriceTable.load(override)

    table = PriceTable.load()
    assert not [key for key in table.prices if key.startswith("_")]  # prices.json's "_about" note is not a price
    edp = load({"alb_hour": {"usd": 0.02, "as_of": "2026-11", "source": "our EDP rate"}, "_note": {"anything": 1},
                "openai_input_per_million:gpt-4o-2024-11-20": {"usd": 2.5, "unit": "1M input tokens", "source": "s", "as_of": "d"}})
    assert edp.prices["alb_hour"] == Price(0.02, "load-balancer-hour", "our EDP rate", "2026-11")  # the unit kept from prices.json
    assert edp.usd("openai_input_per_million:gpt-4o-2024-11-20") == 2.5  # a shipped family, another model
    assert "_note" not in edp.prices and edp.usd("nat_gateway_hour") == 0.045  # the rest as shipped
    assert load({"alb_hour": {"source": "re-checked", "as_of": "2026-12"}}).prices["alb_hour"].usd == 0.0225  # no usd: the price stays
    assert load({"alb_hour": {"usd": 1}}).usd("alb_hour") == 1  # a whole number is a price
    with pytest.raises(ConfigError) as missing:
        load({"sagemaker_hosting_hour:ml.g5.xlarge": {"usd": 1.4}})  # a new entry needs its unit, source and date
    assert str(missing.value).startswith("A price entry needs usd, unit, source and as_of: ")
    with pytest.raises(ConfigError) as unknown:
        load({"alb": {"usd": 0.02}})
    assert str(unknown.value) == (f"PRICES_FILE {tmp_path / 'prices.json'}: 'alb' is not a price this estimator uses; use the keys "
                                  "of pipeline/admin/prices.json (a `name:variant` key may name another instance type or model).")
    for bad in (float("nan"), False, "0.02", -0.01):
        with pytest.raises(ConfigError) as refused:
            load({"alb_hour": {"usd": bad}})
        assert str(refused.value) == f"PRICES_FILE {tmp_path / 'prices.json'}: the usd of 'alb_hour' must be a number, 0 or more (it is {bad!r})."
    assert load({"alb_hour": {"usd": 0.0}}).usd("alb_hour") == 0.0
    # a variant must be of a shipped family; a fine-tuned model's id holds colons itself
    with pytest.raises(ConfigError, match=r"'sagemaker_hosting_hours:ml.g5.xlarge' is not a price this estimator uses"):
        load({"sagemaker_hosting_hours:ml.g5.xlarge": {"usd": 1.4, "unit": "u", "source": "s", "as_of": "d"}})
    fine_tuned = "openai_input_per_million:ft:gpt-4o-mini-2024-07-18:acme::abc123"
    assert load({fine_tuned: {"usd": 0.30, "unit": "1M input tokens", "source": "s", "as_of": "d"}}).usd(fine_tuned) == 0.30
    # not an object: one sentence that says what a price entry is, not "unexpected problem (TypeError ...)"
    with pytest.raises(ConfigError) as bare:
        load({"alb_hour": 0.02})
    assert str(bare.value) == (f"PRICES_FILE {tmp_path / 'prices.json'}: 'alb_hour' must be an object with usd, unit, source and as_of "
                               "(it is 0.02).")
    with pytest.raises(ConfigError) as long_value:
        load({"alb_hour": "0.02 " * 40})  # a long value is cut to its first 60 characters in the sentence
    assert str(long_value.value).endswith(f"(it is '{'0.02 ' * 11}0.02).")
    with pytest.raises(ConfigError) as listed:
        load([{"alb_hour": {"usd": 0.02}}])
    assert str(listed.value) == (f"PRICES_FILE {tmp_path / 'prices.json'} must be an object of price entries (usd, unit, source and "
                                 "as_of), not list.")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError) as nested:
        PriceTable.load(deep)
    assert str(nested.value) == (f"PRICES_FILE {deep} is nested too deeply to be a price table "
                                 "(an object of entries with usd, unit, source and as_of).")
    with pytest.raises(ConfigError) as unreadable:
        PriceTable.load(tmp_path / "missing.json")
    assert str(unreadable.value).startswith(f"PRICES_FILE {tmp_path / 'missing.json'} cannot be read: ")
    with pytest.raises(ConfigError) as absent:
        table.usd("alb_hour:x86")
    assert str(absent.value) == "No price for 'alb_hour:x86'; add it to PRICES_FILE."


def test_a_profile_keeps_the_volume_and_takes_its_whole_shape():
    from pipeline.admin.costs import PROFILES, PROFILES_FIXED_FIELDS, profile_assumptions

    base = Assumptions(images_per_month=5000, extra_languages=2, nat_gateways=3, alarms=9, secrets=4, realtime_endpoint=False)
    business = profile_assumptions("own-alb-business-hours", base)
    assert (business.images_per_month, business.extra_languages) == (5000, 2)  # the volume and model, as given
    assert (business.nat_gateways, business.alarms, business.secrets, business.realtime_endpoint) == (0, 5, 1, True)  # shipped shape
    assert (business.dashboard_vcpu, business.fargate_spot, business.dashboard_always_on, business.wake_function,
            business.autostop_every_minutes) == (0.25, True, False, True, 30)
    assert profile_assumptions("own-alb") == Assumptions()  # no base: the defaults, which are the own-alb profile
    for name, profile in PROFILES.items():
        shaped = profile_assumptions(name, base)
        assert {k: getattr(shaped, k) for k in PROFILES_FIXED_FIELDS} == {k: profile.fixed.get(k, getattr(Assumptions(), k))
                                                                         for k in PROFILES_FIXED_FIELDS}, name
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as unknown:
        profile_assumptions("cheapest")
    assert str(unknown.value) == ("Unknown deployment profile 'cheapest'; choose one of own-alb, own-alb-business-hours, "
                                  "own-alb-ipv6-business-hours, shared-alb-business-hours, own-alb-ipv6-batch.")


def test_an_unknown_summary_mode_or_seo_writer_is_refused_in_one_sentence(prices):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as mode:
        estimate_monthly_cost(Assumptions(summary_mode="nightly"), prices)
    assert str(mode.value) == "summary_mode 'nightly': choose one of auto, realtime, batch."
    with pytest.raises(ConfigError) as seo:
        estimate_monthly_cost(Assumptions(seo_fields_by="gpt"), prices)
    assert str(seo.value) == "seo_fields_by 'gpt': choose one of template, model."


def test_a_heavy_day_is_priced_to_the_hundredth_of_a_cent(ledger_store, prices):
    """A day at 100,000+ photos a month: 25 transform jobs of 10 instance-hours, 40M + 4M summary tokens, 40M vision tokens.
    The daily figures are shown to 4 decimals: a slightly wrong divisor (hours, millions) shows there."""
    for _ in range(25):
        ledger_store.record("2026-11-02T10:00:00", Usage("transform_job", "ml.g4dn.xlarge", invocations=0, latency_ms=36_000_000))
    ledger_store.record("2026-11-02T11:00:00", Usage("llm", "gpt-4o", input_tokens=40_000_000, output_tokens=4_000_000),
                        Usage("vision", "gpt-4o", input_tokens=40_000_000, invocations=100_000))
    ledger = month_to_date(ledger_store, prices, Assumptions(), running_now=False, now=at("2026-11-03T00:00:00"))
    day = ledger.daily["2026-11-02"]
    assert day["sagemaker_batch"] == 184.1  # 250 instance-hours x $0.7364
    assert day["openai"] == 140.0  # 40M x $2.50 + 4M x $10.00 a million
    assert day["openai_vision"] == 100.0  # 40M x $2.50
    assert (ledger.images, ledger.tokens) == (100_000, 44_000_000)


def test_compute_lines_at_100000_photos_a_month(prices):
    """Where the per-photo GPU and CPU time dominate: 100,000 x 1.5 s = 41.67 h of GPU work, 100,000 x 40 s = 1,111 h of CPU."""
    got = {s.name: s for s in estimate_monthly_cost(Assumptions(images_per_month=100_000), prices).scenarios}
    work_h = 100_000 * 1.5 / 3600
    assert got["async scale-to-zero"].breakdown["sagemaker_endpoint"] == round((20 * 25 / 60 + work_h) * 0.7364, 2) == 36.82  # 50 h
    assert got["batch transform"].breakdown["sagemaker_batch"] == round((20 * 12 / 60 + work_h) * 0.7364, 2) == 33.63  # 45.67 h
    assert got["local CPU"].breakdown["fargate_captioning"] == round(100_000 * 40 / 3600 * (4 * 0.03238 + 16 * 0.00356), 2) == 207.20
    assert got["real-time 24x7"].breakdown["sagemaker_endpoint"] == 537.57  # the always-on lines do not grow with the photos
    assert got["async scale-to-zero"].notes == "20 bursts × (10 min start + 15 min idle tail) + 41.67 h work"
    assert got["local CPU"].notes == "1111.1 h of a 4 vCPU / 16 GB task; no GPU"


def test_log_line_without_any_fixed_log_bytes(prices):
    """No endpoint (no scheduled tasks), no wake Lambda and no dashboard start counted: the log line is the photos' alone."""
    a = Assumptions(realtime_endpoint=False, dashboard_starts_per_month=0, images_per_month=10_000)
    assert "cloudwatch_logs" not in fixed_infra_costs(a, prices)
    assert shared_costs(a, prices)["cloudwatch_logs"] == exact((10_000 * (8_400 + 2_000) + 20 * (450 + 100_000)) / 1e9 * 0.53)


def test_endpoint_hours_are_shown_to_the_hundredth(ledger_store, prices):
    ledger_store.audit("2026-11-03T03:39:30", "started")  # 2 h 20 min 30 s before now: 2.3417 h
    ledger = month_to_date(ledger_store, prices, Assumptions(), running_now=True, now=at("2026-11-03T06:00:00"))
    assert ledger.endpoint_hours == 2.34
    assert ledger.by_component["sagemaker_endpoint"] == 1.72  # 2.3417 h x $0.7364


def test_break_even_bounds_and_profile(prices):
    from pipeline.admin.costs import break_even_points, cost_lines

    lines = cost_lines(Assumptions(), prices, "own-alb")
    (local_fixed, local_slope), (batch_fixed, batch_slope) = lines["local CPU"], lines["batch transform"]
    crossing = (batch_fixed - local_fixed) / (local_slope - batch_slope)  # 870.2 photos
    assert len(break_even_points(Assumptions(), prices, 100, crossing, "own-alb")) == 1  # the upper bound is included
    # the profile's shape decides which scenarios exist: without an endpoint, no business-hours endpoint to change to
    a = Assumptions(working_days=1, hours_per_day=1)
    [point] = break_even_points(a, prices, 0, 200_000, "own-alb-ipv6-batch")
    assert (point.cheaper_before, point.cheaper_after) == ("local CPU", "batch transform")
    assert len(break_even_points(a, prices, 0, 200_000)) == 2  # no profile: the assumptions as given (with an endpoint)


def test_cost_lines_are_the_profiles_bill_at_zero_photos_plus_a_slope(prices):
    from pipeline.admin.costs import cost_lines

    # a base with two NAT gateways: the business-hours profile resets the shape, at 0 photos and at any volume
    base = Assumptions(nat_gateways=2, local_cpu_seconds_per_image=400.0)  # 400 s a photo: $0.0207 of CPU, 2 cents from 1 photo
    lines = cost_lines(base, prices, "own-alb-business-hours")
    zero = {s.name: s.monthly_usd for s in estimate_monthly_cost(replace(base, images_per_month=0), prices, "own-alb-business-hours").scenarios}
    assert {name: fixed for name, (fixed, _) in lines.items()} == pytest.approx(zero, abs=1e-9)
    for volume in (1, 12_345, 87_000):
        for s in estimate_monthly_cost(replace(base, images_per_month=volume), prices, "own-alb-business-hours").scenarios:
            fixed, per_photo = lines[s.name]
            assert fixed + per_photo * volume == pytest.approx(s.monthly_usd, abs=0.05), (s.name, volume)
