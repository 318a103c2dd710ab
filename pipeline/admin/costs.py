"""What the system costs: a sourced price table, a what-if estimator and a month-to-date ledger.

Every price comes from `prices.json` (source + date per entry), overridable with PRICES_FILE.
Every assumption of the estimator is a field of `Assumptions`, printed with the result.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.errors import ConfigError

HOURS_PER_MONTH = 730.0  # AWS's own convention (8,760 h / 12)
QUOTED_SUFFIX = " (quoted $1.2/h)"  # the comparison scenario at the originally quoted hourly price, never "cheapest"
REFERENCE_PRICES = ("brief_sagemaker_hour",)  # comparison figures, not list prices: not shown as prices
DEFAULT_PRICES = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    as_of: str


class PriceTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = prices

    @classmethod
    def load(cls, override: Path | None = None) -> "PriceTable":
        """The shipped table, with any entries from `override` (same keys) replacing it."""
        entries = {k: v for k, v in json.loads(DEFAULT_PRICES.read_text()).items() if not k.startswith("_")}
        if override is not None:
            try:
                extra = json.loads(Path(override).read_text())
            except (OSError, ValueError) as error:
                raise ConfigError(f"PRICES_FILE {override} cannot be read: {error}") from error
            except RecursionError:  # a deeply nested document exhausts the JSON parser
                raise ConfigError(f"PRICES_FILE {override} is nested too deeply to be a price table "
                                  f"(an object of entries with usd, unit, source and as_of).") from None
            if not isinstance(extra, dict):
                raise ConfigError(f"PRICES_FILE {override} must be an object of price entries (usd, unit, source and as_of), "
                                  f"not {type(extra).__name__}.")
            for key, value in extra.items():
                if not key.startswith("_"):
                    _check_override(override, key, value, entries)
                    entries[key] = {**entries.get(key, {}), **value}
        try:
            return cls({key: Price(**value) for key, value in entries.items()})
        except TypeError as error:
            raise ConfigError(f"A price entry needs usd, unit, source and as_of: {error}") from error

    def usd(self, key: str) -> float:
        if key not in self.prices:
            raise ConfigError(f"No price for {key!r}; add it to PRICES_FILE.")
        return self.prices[key].usd


def _check_override(override: Path, key: str, value: object, shipped: dict) -> None:
    """A PRICES_FILE entry must name a price the estimator knows (a shipped key, or a shipped family such as
    `sagemaker_hosting_hour:<instance type>` for another type) and carry a usd that is a number, 0 or more:
    a misspelled key would be ignored silently and a negative price gives negative costs."""
    families = {name.split(":", 1)[0] for name in shipped if ":" in name}
    if key not in shipped and not (":" in key and key.split(":", 1)[0] in families):
        raise ConfigError(f"PRICES_FILE {override}: {key!r} is not a price this estimator uses; use the keys of "
                          "pipeline/admin/prices.json (a `name:variant` key may name another instance type or model).")
    if not isinstance(value, dict):
        raise ConfigError(f"PRICES_FILE {override}: {key!r} must be an object with usd, unit, source and as_of "
                          f"(it is {repr(value)[:60]}).")
    usd = value.get("usd")
    if "usd" in value and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0):
        raise ConfigError(f"PRICES_FILE {override}: the usd of {key!r} must be a number, 0 or more (it is {usd!r}).")


SUMMARY_MODES = ("auto", "realtime", "batch")  # auto: only scenarios that can wait (batch transform) use the Batch API
SEO_FIELDS_BY = ("template", "model")  # who writes the SEO fields (Settings.seo_fields_by)


@dataclass(frozen=True)
class Assumptions:
    images_per_month: int = 1000
    working_days: int = 22
    hours_per_day: float = 10.0  # business hours the real-time endpoint (and a business-hours dashboard) is scheduled on
    batches_per_month: int = 20  # uploads arrive in this many bursts
    instance_type: str = "ml.g4dn.xlarge"
    gpu_seconds_per_image: float = 1.5  # caption + 4 answers, one batched generate, fp16 T4 (assumed until measured)
    cold_start_minutes: float = 10.0  # instance + container + weights to GPU
    idle_tail_minutes: float = 15.0  # async scale-in cooldown / auto-stop wait after the last request
    batch_job_overhead_minutes: float = 12.0  # batch transform: provisioning + model load per job
    summary_model: str = "gpt-4o"
    summary_mode: str = "auto"  # auto | realtime | batch (OpenAI Batch API: half price, results within 24 h)
    input_tokens_per_image: int = 700
    output_tokens_per_image: int = 150
    # Summaries in other languages (issue 19: `tag --languages`): each extra language adds one more summary of at most
    # 50 words / 125 Japanese or 75 Chinese characters to the same answer (~70 tokens in English; non-Latin scripts take
    # more tokens per word, so 100 is assumed, not measured) and a line of instructions + one schema field to the prompt
    # (measured: 2 languages add 219 characters of instructions and 417 of response schema, ~80 tokens each at ~4 chars/token).
    extra_languages: int = 0
    output_tokens_per_extra_language: int = 100
    input_tokens_per_extra_language: int = 80
    # SEO fields (issue 19, SEO_FIELDS_BY): `template` (default) fills them after the answer, no tokens; `model` asks GPT-4o
    # for them. Measured (tests/test_seo_fields.py sends the request both ways through the openai client): `model` adds 371
    # characters of system prompt and 425 of response schema (compact JSON, as sent) = 796 ≈ 199 tokens at ~4 characters a
    # token; the answer gains the three fields, 406 characters with their keys at the limits (70 + 160 + 125) ≈ 102 tokens
    # (an upper bound: the prompt asks for at most those lengths). A corrective request for an over-long field is not counted.
    seo_fields_by: str = "template"  # template | model
    seo_input_tokens_per_image: int = 199
    seo_output_tokens_per_image: int = 102
    # The always-on infrastructure: defaults are infra/cdk.json's, the "own-alb" profile (PROFILES below;
    # InfraConfig.cost_assumptions maps a deployment, tests tie both to the synthesized template).
    dashboard_vcpu: float = 0.5
    dashboard_gb: float = 1.0
    dashboard_tasks: int = 1
    fargate_arch: str = "arm"  # x86 | arm (the stack runs ARM64: ~20% cheaper)
    fargate_spot: bool = False
    fargate_on_demand_base: int = 0  # with Spot: this many tasks stay on regular Fargate
    dashboard_always_on: bool = True  # False: the service runs working_days x hours_per_day (+ wake-ups), 0 tasks otherwise
    dashboard_wake_hours: float = 4.0  # outside business hours, woken through /wake (business-hours dashboards only)
    wake_function: bool = False  # the wake/tick Lambda of a business-hours dashboard
    own_alb: bool = True  # False: rules on an existing shared ALB (its hours are paid by its owner)
    alb_lcu: float = 0.5  # average LCUs while people use the dashboard (working_days x hours_per_day)
    public_ipv4_addresses: int = 2  # always-on: the ALB's, one per AZ (none with dualstack-without-public-ipv4), + one per NAT
    task_public_ip: bool = True  # tasks in public subnets hold a public IPv4 while they run
    nat_gateways: int = 0
    interface_endpoints: int = 0  # VPC interface endpoints × AZs
    alarms: int = 5
    realtime_endpoint: bool = True  # False: no endpoint at all (batch transform only): no auto-stop task, no real-time/async scenarios
    autostop_every_minutes: int = 15  # the scheduled endpoint auto-stop task (a one-off Fargate task of the dashboard image); 0: none
    endpoint_schedule: bool = True  # real-time endpoint start/stop tasks on working days
    scheduled_task_minutes: float = 1.0  # Fargate bills a task at least one minute
    local_cpu_seconds_per_image: float = 40.0  # BLIP-2 flan-t5-xl on 4 Fargate vCPU (assumed)
    local_cpu_vcpu: float = 4.0
    local_cpu_gb: float = 16.0
    stored_mb_per_image: float = 0.15  # normalized JPEG + report rows
    # CloudWatch Logs (billed per GB ingested, and stored for the 30-day retention): what the app writes, measured by
    # bench/log_volume.py (the app's own handlers at the container's LOG_LEVEL=INFO, LOG_FORMAT=json; each line's bytes
    # + CloudWatch's 26 bytes per event). Latest run (40 and 80 photos, tiny BLIP-2, offline summarizer): 4,177 B per
    # photo with METRICS_FORMAT=emf (1,819 B with metrics off, the stack's default), 216-253 B per batch run; a dashboard start
    # 510 B (`python -m dashboard.serve`'s start-up events), a scheduled `endpoint autostop` run 97 B. Each figure here is twice that
    # (tests/test_costs.py runs a batch and fails if the measured per-photo bytes exceed log_bytes_per_photo).
    log_bytes_per_photo: float = 8_400.0
    log_bytes_per_batch_run: float = 450.0
    log_bytes_per_task_start: float = 1_020.0  # a dashboard task start or a scheduled task run (the larger, 510 B, x 2)
    dashboard_starts_per_month: int = 30  # assumed: a start each working day, wake-ups, deploys, Spot replacements
    wake_log_bytes_per_invocation: float = 400.0  # the wake Lambda writes nothing; Lambda's START/END/REPORT lines (~300 B)
    # Not measured (SageMaker's containers log to their own /aws/sagemaker/... groups): an assumed allowance per
    # endpoint start or transform job (model server start-up) and per photo (its request lines).
    sagemaker_log_bytes_per_start: float = 100_000.0
    sagemaker_log_bytes_per_photo: float = 2_000.0
    secrets: int = 1


@dataclass(frozen=True)
class Profile:
    """A deployment shape (infra/tagger_infra/config.py PROFILES holds the same names as cdk.json overrides)."""

    name: str
    what: str  # what it is
    gives_up: str  # what it costs the user, besides money
    fixed: dict  # Assumptions fields of the always-on part


BUSINESS_HOURS = {"dashboard_vcpu": 0.25, "fargate_spot": True, "dashboard_always_on": False, "wake_function": True,
                  "autostop_every_minutes": 30}
PROFILES = {p.name: p for p in (
    Profile("own-alb", "infra/cdk.json as shipped: dashboard 24x7 (0.5 vCPU / 1 GB, ARM64), its own ALB with public IPv4",
            "nothing", {}),
    Profile("own-alb-business-hours",
            "dashboard only in business hours (0.25 vCPU / 1 GB on Fargate Spot), a /wake page outside them; own ALB",
            "outside business hours the first visitor waits ~2 min after pressing Wake; Spot tasks can be reclaimed "
            "(2 min notice, the session reloads); 0.25 vCPU normalizes big photos ~2x slower", BUSINESS_HOURS),
    Profile("own-alb-ipv6-business-hours",
            "as own-alb-business-hours, the ALB dualstack-without-public-ipv4 (no public IPv4 address charge)",
            "reachable only over IPv6: users on IPv4-only networks cannot open it",
            {**BUSINESS_HOURS, "public_ipv4_addresses": 0}),
    Profile("shared-alb-business-hours",
            "as own-alb-business-hours, on a listener rule of an existing shared ALB (no ALB of its own)",
            "needs a company ALB in the same VPC (listener ARN, host name, rule priority); its owner pays its hours",
            {**BUSINESS_HOURS, "own_alb": False, "public_ipv4_addresses": 0}),
    Profile("own-alb-ipv6-batch",
            "as own-alb-ipv6-business-hours, without a SageMaker endpoint (captions only through batch transform jobs) and "
            "with the OpenAI key in SSM Parameter Store instead of Secrets Manager",
            "reachable only over IPv6; no real-time or async endpoint: every batch is a transform job, its first result 12+ "
            "minutes after Run; the key is rotated by hand (aws ssm put-parameter --overwrite), no Secrets Manager rotation",
            {**BUSINESS_HOURS, "public_ipv4_addresses": 0, "secrets": 0, "alarms": 3, "realtime_endpoint": False,
             "autostop_every_minutes": 0, "endpoint_schedule": False}),
)}
DEFAULT_PROFILE = "own-alb"


def profile_assumptions(name: str, base: Assumptions | None = None) -> Assumptions:
    """`base`'s volume and model assumptions with the always-on part of profile `name`."""
    if name not in PROFILES:
        raise ConfigError(f"Unknown deployment profile {name!r}; choose one of {', '.join(PROFILES)}.")
    base = base or Assumptions()
    reset = {k: getattr(Assumptions(), k) for k in PROFILES_FIXED_FIELDS}
    return replace(base, **{**reset, **PROFILES[name].fixed})


PROFILES_FIXED_FIELDS = ("dashboard_vcpu", "dashboard_gb", "dashboard_tasks", "fargate_arch", "fargate_spot", "fargate_on_demand_base",
                         "dashboard_always_on", "wake_function", "own_alb", "public_ipv4_addresses", "task_public_ip", "nat_gateways",
                         "interface_endpoints", "alarms", "realtime_endpoint", "autostop_every_minutes", "endpoint_schedule", "secrets")


@dataclass
class Scenario:
    name: str
    monthly_usd: float
    breakdown: dict[str, float]
    latency: str  # what a merchandiser waits for the first result
    latency_s: float
    notes: str = ""


@dataclass
class Estimate:
    assumptions: dict
    scenarios: list[Scenario] = field(default_factory=list)
    profile: str | None = None

    def to_json(self) -> dict:
        return {"profile": self.profile, "assumptions": self.assumptions, "scenarios": [asdict(s) for s in self.scenarios]}

    def cheapest_meeting(self, max_latency_s: float) -> Scenario | None:
        fitting = [s for s in self.scenarios if s.latency_s <= max_latency_s and not s.name.endswith(QUOTED_SUFFIX)]
        return min(fitting, key=lambda s: s.monthly_usd, default=None)


def _fargate_hour(prices: PriceTable, vcpu: float, gb: float, arch: str, spot: bool) -> float:
    kind = "fargate_spot" if spot else "fargate"
    return vcpu * prices.usd(f"{kind}_vcpu_hour:{arch}") + gb * prices.usd(f"{kind}_gb_hour:{arch}")


def dashboard_hours(a: Assumptions) -> float:
    """Hours a month the dashboard service runs its tasks."""
    return HOURS_PER_MONTH if a.dashboard_always_on else min(HOURS_PER_MONTH, a.working_days * a.hours_per_day + a.dashboard_wake_hours)


def scheduled_task_runs(a: Assumptions) -> float:
    """One-off Fargate tasks a month: the endpoint auto-stop check, and real-time start/stop on working days
    (none without an endpoint)."""
    autostop = HOURS_PER_MONTH * 60 / a.autostop_every_minutes if a.realtime_endpoint and a.autostop_every_minutes else 0
    return autostop + (2 * a.working_days if a.endpoint_schedule and a.realtime_endpoint else 0)


WAKE_TICKS_PER_HOUR = 4  # the wake Lambda's schedule: every 15 minutes
WAKE_LAMBDA_GB, WAKE_LAMBDA_SECONDS = 0.128, 0.5


def fixed_infra_costs(a: Assumptions, prices: PriceTable) -> dict[str, float]:
    """The deployment's always-on monthly bill, whatever the volume: dashboard tasks, ALB, addresses, network,
    scheduled tasks, logs, secrets, alarms (docs/deploy.md shows it per profile). Only what it pays: no zero lines."""
    hours = dashboard_hours(a)
    on_demand = min(a.dashboard_tasks, a.fargate_on_demand_base) if a.fargate_spot else a.dashboard_tasks
    task_hours = hours * a.dashboard_tasks
    fargate = hours * (on_demand * _fargate_hour(prices, a.dashboard_vcpu, a.dashboard_gb, a.fargate_arch, False)
                       + (a.dashboard_tasks - on_demand) * _fargate_hour(prices, a.dashboard_vcpu, a.dashboard_gb, a.fargate_arch, True))
    use_hours = a.working_days * a.hours_per_day
    scheduled_hours = scheduled_task_runs(a) * a.scheduled_task_minutes / 60  # launch type FARGATE (on demand)
    ticks = HOURS_PER_MONTH * WAKE_TICKS_PER_HOUR if a.wake_function else 0
    costs = {
        "fargate_dashboard": fargate,
        "alb": (HOURS_PER_MONTH * prices.usd("alb_hour") if a.own_alb else 0.0) + use_hours * a.alb_lcu * prices.usd("alb_lcu_hour"),
        "public_ipv4": (HOURS_PER_MONTH * a.public_ipv4_addresses
                        + ((task_hours + scheduled_hours) if a.task_public_ip else 0)) * prices.usd("public_ipv4_hour"),
        "nat_gateway": HOURS_PER_MONTH * a.nat_gateways * prices.usd("nat_gateway_hour"),
        "vpc_endpoints": HOURS_PER_MONTH * a.interface_endpoints * prices.usd("vpc_interface_endpoint_hour"),
        "scheduled_tasks": scheduled_hours * _fargate_hour(prices, a.dashboard_vcpu, a.dashboard_gb, a.fargate_arch, False),
        "wake_lambda": ticks * (prices.usd("lambda_requests_per_million") / 1e6
                                + WAKE_LAMBDA_GB * WAKE_LAMBDA_SECONDS * prices.usd("lambda_gb_second:arm")),
        "cloudwatch_logs": fixed_log_bytes(a) / 1e9 * log_gb_price(prices),
        "cloudwatch_alarms": a.alarms * prices.usd("cloudwatch_alarm_month"),
        "secrets_manager": a.secrets * prices.usd("secrets_manager_secret_month"),
    }
    return {k: v for k, v in costs.items() if v}


def log_gb_price(prices: PriceTable) -> float:
    """One GB of logs: ingested, then stored for the retention (30 days: about one month of storage)."""
    return prices.usd("cloudwatch_logs_ingest_gb") + prices.usd("cloudwatch_logs_store_gb_month")


def fixed_log_bytes(a: Assumptions) -> float:
    """Log bytes a month whatever the volume: task starts (the dashboard's and every scheduled task run) and the
    wake Lambda's invocations."""
    starts = scheduled_task_runs(a) + a.dashboard_starts_per_month
    ticks = HOURS_PER_MONTH * WAKE_TICKS_PER_HOUR if a.wake_function else 0
    return starts * a.log_bytes_per_task_start + ticks * a.wake_log_bytes_per_invocation


def volume_log_bytes(a: Assumptions) -> float:
    """Log bytes a month that grow with the photos: the app's per-photo lines and batch runs, and SageMaker's
    allowance (a start per upload burst: an endpoint start, async scale-up or transform job)."""
    return (a.images_per_month * (a.log_bytes_per_photo + a.sagemaker_log_bytes_per_photo)
            + a.batches_per_month * (a.log_bytes_per_batch_run + a.sagemaker_log_bytes_per_start))


def summary_costs(a: Assumptions, prices: PriceTable, *, batch: bool) -> dict[str, float]:
    """Summary tokens for the volume: {"openai": …} in real time, {"openai_batch": …} through the Batch API."""
    kind = "openai_batch" if batch else "openai"
    input_tokens = a.input_tokens_per_image + a.extra_languages * a.input_tokens_per_extra_language
    output_tokens = a.output_tokens_per_image + a.extra_languages * a.output_tokens_per_extra_language
    if a.seo_fields_by == "model":  # the model writes the SEO fields: more prompt and schema, three more answers
        input_tokens += a.seo_input_tokens_per_image
        output_tokens += a.seo_output_tokens_per_image
    usd = a.images_per_month * (input_tokens * prices.usd(f"{kind}_input_per_million:{a.summary_model}")
                                + output_tokens * prices.usd(f"{kind}_output_per_million:{a.summary_model}")) / 1e6
    return {kind: usd}


def shared_costs(a: Assumptions, prices: PriceTable, *, batch_summaries: bool = False) -> dict[str, float]:
    """What every scenario pays: the fixed infrastructure, plus storage and summaries for the volume."""
    stored_gb = a.images_per_month * a.stored_mb_per_image / 1024
    fixed = fixed_infra_costs(a, prices)
    return {
        **fixed,
        "cloudwatch_logs": fixed.get("cloudwatch_logs", 0.0) + volume_log_bytes(a) / 1e9 * log_gb_price(prices),
        "s3": stored_gb * prices.usd("s3_gb_month") + a.images_per_month * 3 / 1000 * prices.usd("s3_put_per_1k"),
        **summary_costs(a, prices, batch=batch_summaries),
    }


def _scenario(name: str, shared: dict[str, float], compute_key: str, compute_usd: float, latency: str, latency_s: float, notes: str) -> Scenario:
    breakdown = {compute_key: compute_usd, **shared}
    breakdown = {k: round(v, 2) for k, v in breakdown.items()}
    return Scenario(name, round(sum(breakdown.values()), 2), breakdown, latency, latency_s, notes)


def estimate_monthly_cost(a: Assumptions, prices: PriceTable, profile: str | None = None) -> Estimate:
    """Every scenario all-in. `profile` (PROFILES) sets the always-on part; without it, `a` as given."""
    if a.summary_mode not in SUMMARY_MODES:
        raise ConfigError(f"summary_mode {a.summary_mode!r}: choose one of {', '.join(SUMMARY_MODES)}.")
    if a.seo_fields_by not in SEO_FIELDS_BY:
        raise ConfigError(f"seo_fields_by {a.seo_fields_by!r}: choose one of {', '.join(SEO_FIELDS_BY)}.")
    if profile is not None:
        a = profile_assumptions(profile, a)
    shared = shared_costs(a, prices, batch_summaries=a.summary_mode == "batch")
    waits = shared_costs(a, prices, batch_summaries=a.summary_mode != "realtime")  # scenarios that can wait for summaries
    batch_note = "; summaries through the Batch API (half price, within 24 h, usually far sooner)"
    gpu_hour = prices.usd(f"sagemaker_hosting_hour:{a.instance_type}")
    processing_h = a.images_per_month * a.gpu_seconds_per_image / 3600
    per_burst_h = (a.cold_start_minutes + a.idle_tail_minutes) / 60
    business_h = a.working_days * a.hours_per_day
    batch_h = a.batches_per_month * a.batch_job_overhead_minutes / 60 + processing_h
    local_h = a.images_per_month * a.local_cpu_seconds_per_image / 3600
    cold = f"{a.cold_start_minutes:g} min cold start per burst"
    everywhere = batch_note if a.summary_mode == "batch" else ""
    scenarios = [
        _scenario("real-time 24x7", shared, "sagemaker_endpoint", HOURS_PER_MONTH * gpu_hour, "seconds", 5,
                  f"{HOURS_PER_MONTH:g} h × ${gpu_hour}/h: the always-on baseline" + everywhere),
        _scenario("real-time 24x7" + QUOTED_SUFFIX, shared, "sagemaker_endpoint", HOURS_PER_MONTH * prices.usd("brief_sagemaker_hour"),
                  "seconds", 5, f"{HOURS_PER_MONTH:g} h × $1.2/h reproduces the original ~$876 quote" + everywhere),
        _scenario("real-time business hours + auto-stop", shared, "sagemaker_endpoint", business_h * gpu_hour,
                  "seconds in business hours", 5, f"{a.working_days} days × {a.hours_per_day:g} h; auto-stop ends forgotten days" + everywhere),
        _scenario("async scale-to-zero", shared, "sagemaker_endpoint",
                  (a.batches_per_month * per_burst_h + processing_h) * gpu_hour, cold, a.cold_start_minutes * 60,
                  f"{a.batches_per_month} bursts × ({a.cold_start_minutes:g} min start + {a.idle_tail_minutes:g} min idle tail) + {processing_h:.2f} h work"
                  + everywhere),
        _scenario("batch transform", waits, "sagemaker_batch", batch_h * prices.usd(f"sagemaker_batch_hour:{a.instance_type}"),
                  f"{a.batch_job_overhead_minutes:g}+ min per job", a.batch_job_overhead_minutes * 60 + 60,
                  f"{a.batches_per_month} jobs × {a.batch_job_overhead_minutes:g} min overhead + {processing_h:.2f} h work; no idle time"
                  + (batch_note if a.summary_mode != "realtime" else "")),
        _scenario("local CPU", shared, "fargate_captioning",
                  local_h * _fargate_hour(prices, a.local_cpu_vcpu, a.local_cpu_gb, a.fargate_arch, a.fargate_spot),
                  f"~{a.local_cpu_seconds_per_image:g} s per image", a.local_cpu_seconds_per_image,
                  f"{local_h:.1f} h of a {a.local_cpu_vcpu:g} vCPU / {a.local_cpu_gb:g} GB task; no GPU" + everywhere),
    ]
    if not a.realtime_endpoint:  # no endpoint in this deployment: only what runs without one is possible
        scenarios = [s for s in scenarios if s.name in SCENARIOS_WITHOUT_ENDPOINT]
    return Estimate(assumptions=asdict(a), scenarios=scenarios, profile=profile)


SCENARIOS_WITHOUT_ENDPOINT = ("batch transform", "local CPU")


@dataclass(frozen=True)
class BreakEven:
    images_per_month: float
    cheaper_before: str
    cheaper_after: str
    monthly_usd: float


def cost_lines(a: Assumptions, prices: PriceTable, profile: str | None = None) -> dict[str, tuple[float, float]]:
    """Each scenario's monthly cost as fixed + per-image (every part is linear in the volume)."""
    far = 1_000_000  # far apart, so the cent rounding of each line is negligible per image
    at0 = estimate_monthly_cost(replace(a, images_per_month=0), prices, profile)
    at_far = estimate_monthly_cost(replace(a, images_per_month=far), prices, profile)
    lines = {}
    for zero, many in zip(at0.scenarios, at_far.scenarios):
        fixed = sum(zero.breakdown.values())
        lines[zero.name] = (fixed, (sum(many.breakdown.values()) - fixed) / far)
    return lines


def break_even_points(a: Assumptions, prices: PriceTable, low: float, high: float, profile: str | None = None) -> list[BreakEven]:
    """Where the cheapest scenario changes between `low` and `high` photos a month (the quoted comparison excluded)."""
    lines = {name: line for name, line in cost_lines(a, prices, profile).items() if not name.endswith(QUOTED_SUFFIX)}

    def cost(name: str, images: float) -> float:
        return lines[name][0] + lines[name][1] * images

    points: list[BreakEven] = []
    images = low
    current = min(lines, key=lambda n: (cost(n, images), lines[n][1]))
    while True:
        crossings = []
        for name, (fixed, slope) in lines.items():
            if name != current and slope < lines[current][1]:
                at = (fixed - lines[current][0]) / (lines[current][1] - slope)
                if images < at <= high:
                    crossings.append((at, name))
        if not crossings:
            return points
        at, name = min(crossings)
        points.append(BreakEven(round(at), current, name, round(cost(name, at), 2)))
        current, images = name, at


@dataclass(frozen=True)
class JobEstimate:
    """What a batch transform job for `photos` is expected to cost and take, before it starts."""

    photos: int
    instance_type: str
    instance_count: int
    minutes: float
    usd: float


def estimate_transform_job(photos: int, instance_type: str, instance_count: int, prices: PriceTable, a: Assumptions) -> JobEstimate:
    """Each instance is billed for the job's start-up overhead plus its share of the photos."""
    count = max(1, instance_count)
    work_minutes = photos * a.gpu_seconds_per_image / 60 / count
    minutes = a.batch_job_overhead_minutes + work_minutes
    usd = count * minutes / 60 * prices.usd(f"sagemaker_batch_hour:{instance_type}")
    return JobEstimate(photos, instance_type, count, round(minutes, 1), round(usd, 2))


# --- month-to-date ledger from what was recorded ----------------------------------------------------


@dataclass
class Ledger:
    month_start: datetime
    now: datetime
    by_component: dict[str, float]
    daily: dict[str, dict[str, float]]  # "YYYY-MM-DD" -> component -> usd
    images: int
    endpoint_hours: float
    tokens: int = 0  # summary model tokens, input + output
    estimated: frozenset[str] = frozenset()  # components that are assumptions (fixed infrastructure), not recorded use

    @property
    def measured_usd(self) -> float:
        """From what was recorded: endpoint uptime in the audit log, batch jobs and tokens in the usage ledger."""
        return round(sum(v for k, v in self.by_component.items() if k not in self.estimated), 2)

    @property
    def estimated_usd(self) -> float:
        """Assumed always-on infrastructure (Fargate, ALB, addresses, logs...), pro-rated: not billing data."""
        return round(sum(v for k, v in self.by_component.items() if k in self.estimated), 2)

    @property
    def total_usd(self) -> float:
        return round(sum(self.by_component.values()), 2)

    @property
    def usd_per_image(self) -> float | None:
        """Measured cost per captioned image: the assumed fixed infrastructure is not spread over images."""
        return round(self.measured_usd / self.images, 4) if self.images else None


def uptime_intervals(audit, month_start: datetime, now: datetime, running_now: bool) -> list[tuple[datetime, datetime]]:
    """Endpoint running intervals inside [month_start, now], from the audit log's started / stopped
    entries. Running with no start on record (e.g. deployed by deploy.py) counts from the last
    recorded event, or from the month's start."""
    intervals: list[tuple[datetime, datetime]] = []
    since: datetime | None = None
    last_event: datetime | None = None
    for entry in sorted(audit, key=lambda e: e.at):
        if entry.result not in ("started", "stopped"):
            continue
        at = datetime.fromisoformat(entry.at)
        if entry.result == "started" and since is None:
            since = at
        elif entry.result == "stopped":
            start = since if since is not None else (last_event or month_start)
            intervals.append((start, at))
            since = None
        last_event = at
    if running_now:
        intervals.append((since or last_event or month_start, now))
    clipped = [(max(start, month_start), min(end, now)) for start, end in intervals]
    return [(start, end) for start, end in clipped if end > start]


def _split_by_day(start: datetime, end: datetime) -> dict[str, float]:
    hours: dict[str, float] = {}
    cursor = start
    while cursor < end:
        next_day = (cursor + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        stop = min(next_day, end)
        hours[cursor.date().isoformat()] = hours.get(cursor.date().isoformat(), 0.0) + (stop - cursor).total_seconds() / 3600
        cursor = stop
    return hours


def month_to_date(store, prices: PriceTable, a: Assumptions, *, running_now: bool, now: datetime | None = None) -> Ledger:
    now = now or datetime.now(timezone.utc)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    daily: dict[str, dict[str, float]] = {}

    def add(day: str, component: str, usd: float) -> None:
        daily.setdefault(day, {}).setdefault(component, 0.0)
        daily[day][component] += usd

    gpu_hour = prices.usd(f"sagemaker_hosting_hour:{a.instance_type}")
    endpoint_hours = 0.0
    for start, end in uptime_intervals(store.audit_log(limit=10_000), month_start, now, running_now):
        for day, hours in _split_by_day(start, end).items():
            add(day, "sagemaker_endpoint", hours * gpu_hour)
            endpoint_hours += hours
    fixed = fixed_infra_costs(a, prices)  # per-month fixed parts, pro-rated by hour
    for day, hours in _split_by_day(month_start, now).items():
        for component, usd in fixed.items():
            add(day, component, usd * hours / HOURS_PER_MONTH)
    images = tokens = 0
    for at, usage in store.usage_rows(since=month_start.isoformat(timespec="seconds")):
        day = at[:10]
        if usage.kind == "transform_job":  # billed instance time, carried in latency_ms
            add(day, "sagemaker_batch", usage.latency_ms / 3_600_000 * prices.usd(f"sagemaker_batch_hour:{a.instance_type}"))
        elif usage.kind in ("llm", "llm_batch"):  # llm_batch: the OpenAI Batch API, at its own (half) token price
            tokens += usage.input_tokens + usage.output_tokens
            kind = "openai_batch" if usage.kind == "llm_batch" else "openai"
            model = usage.model if f"{kind}_input_per_million:{usage.model}" in prices.prices else a.summary_model
            add(day, kind, (usage.input_tokens * prices.usd(f"{kind}_input_per_million:{model}")
                            + usage.output_tokens * prices.usd(f"{kind}_output_per_million:{model}")) / 1e6)
        elif usage.kind in ("vision", "vision_sample"):  # the vision captioner's tokens (vision_sample: the comparison's, no image)
            model = token_price_model(usage.model, prices) or a.summary_model  # "gpt-4o-mini-2024-07-18" -> gpt-4o-mini
            add(day, "openai_vision", (usage.input_tokens * prices.usd(f"openai_input_per_million:{model}")
                                       + usage.output_tokens * prices.usd(f"openai_output_per_million:{model}")) / 1e6)
            images += usage.invocations if usage.kind == "vision" else 0
        else:
            images += usage.invocations  # one caption call per new image
    by_component: dict[str, float] = {}
    for components in daily.values():
        for component, usd in components.items():
            by_component[component] = by_component.get(component, 0.0) + usd
    return Ledger(month_start, now, {k: round(v, 2) for k, v in by_component.items()},
                  {d: {k: round(v, 4) for k, v in c.items()} for d, c in sorted(daily.items())}, images, round(endpoint_hours, 2), tokens,
                  frozenset(fixed))


def token_price_model(model: str, prices: PriceTable) -> str | None:
    """The prices.json model name for a billed model id ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini"), None when none has a price."""
    names = sorted((key.split(":", 1)[1] for key in prices.prices if key.startswith("openai_input_per_million:")), key=len, reverse=True)
    return next((name for name in names if model == name or model.startswith(name + "-")), None)
