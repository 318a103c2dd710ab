"""Price table, what-if estimator (against figures worked out by hand below) and the month-to-date ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.admin.costs import Assumptions, PriceTable, estimate_monthly_cost, fixed_infra_costs, month_to_date, uptime_intervals
from pipeline.errors import ConfigError
from pipeline.models import AuditEntry, Usage
from pipeline.store.sqlite_store import SqliteStore

# Hand-computed with the shipped prices and default assumptions (1,000 images/month; the defaults are
# infra/cdk.json's deployment: 1 ARM64 task, 2 AZs, public subnets, no NAT, 5 alarms):
#   dashboard  730 h × (0.5 × 0.03238 + 1 × 0.00356)           = 14.4175
#   ALB        730 h × (0.0225 + 0.5 LCU × 0.008)               = 19.345
#   public IPv4 3 addresses × 730 h × 0.005                     = 10.95
#   alarms 5 × 0.10 = 0.50, logs 0.53, secret 0.40
#   fixed infrastructure                                         = 46.1425
#   S3         0.1465 GB × 0.023 + 3,000 PUT × 0.005/1k          =  0.018
#   OpenAI     1,000 × (700 × 2.50 + 150 × 10.00) / 1e6          =  3.250
#   shared                                                       = 49.41
#   24x7        730 × 0.7364 = 537.572        brief: 730 × 1.2 = 876.000
#   business    22 × 10 = 220 h × 0.7364      = 162.008
#   async       (20 × 25/60 + 1,000 × 1.5/3,600) h = 8.75 h × 0.7364 = 6.4435
#   batch       (20 × 12/60 + 0.41667) h = 4.41667 h × 0.7364       = 3.2524
#   local CPU   11.111 h × (4 × 0.03238 + 16 × 0.00356)             = 2.0720
FIXED = 14.4175 + 19.345 + 10.95 + 0.50 + 0.53 + 0.40
SHARED = FIXED + 0.018 + 3.25
EXPECTED = {
    "real-time 24x7": 537.572 + SHARED,
    "real-time 24x7 (quoted $1.2/h)": 876.0 + SHARED,
    "real-time business hours + auto-stop": 162.008 + SHARED,
    "async scale-to-zero": 6.4435 + SHARED,
    "batch transform": 3.2524 + SHARED,
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
    nat = fixed_infra_costs(Assumptions(nat_gateways=1, public_ipv4_addresses=3), prices)
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


def test_month_to_date_ledger(tmp_path, prices):
    store = SqliteStore(tmp_path / "db.sqlite3")
    now = datetime.now(timezone.utc)
    store.add_audit("boss", "start", "started")  # started just now; running for 2 h by `later`
    later = now + timedelta(hours=2)
    from pipeline.ingest.sources import IngestLimits, collect_sources
    from support.images import jpeg_bytes

    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes())
    batch = store.create_batch("b", "t", collect_sources([photo], IngestLimits()))
    [item] = store.list_items(batch.id)
    store.record_usage(item.id, [Usage("endpoint", "blip2-endpoint"), Usage("llm", "gpt-4o", input_tokens=1_000_000, output_tokens=100_000)])
    if later.month != now.month:
        pytest.skip("run too close to a month boundary for a 2-hour window")  # pragma: no cover
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
    assert ledger.by_component["public_ipv4"] == pytest.approx(3 * 0.005 * hours_so_far, abs=0.01)  # fixed parts pro-rated
    assert "nat_gateway" not in ledger.by_component
