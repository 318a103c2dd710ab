"""The business-hours dashboard's clock and its /wake page (a Lambda function; boto3 only, no app code).

Two callers:
- EventBridge Scheduler every 15 minutes ({"action": "tick"}): in business hours, or before a wake-up runs out,
  the dashboard is open (service scalable target min/max = MIN_TASKS/MAX_TASKS, the "closed" listener rule
  parked on a path nobody requests); otherwise closed (0/0 tasks, the closed rule matching every path, so the
  ALB answers with its fixed "asleep" page instead of a 503).
- The ALB, for a signed-in user's request to /wake: GET shows when it opens and a Wake button; POST opens it
  for WAKE_MINUTES from now (never longer: pressing again cannot stack hours), then the page sends the
  browser to the dashboard once the task has had time to start.

The wake-up's end is kept in the closed rule's own parked path (/__open-until-<epoch seconds>), so the
function holds no state and needs no table.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
OPEN_PREFIX = "/__open-until-"
CLOSED_PATHS = ["/*"]
STARTUP_SECONDS = 120  # Fargate start + image pull + Streamlit's health check, about


@dataclass(frozen=True)
class Hours:
    start: str  # HH:MM
    stop: str
    days: str  # MON-FRI, or MON,WED,FRI, or *
    timezone: str = "UTC"

    def weekdays(self) -> set[int]:
        if self.days.strip() in ("*", "?"):
            return set(range(7))
        out: set[int] = set()
        for part in self.days.upper().split(","):
            first, _, last = part.strip().partition("-")
            a = DAYS.index(first)
            b = DAYS.index(last) if last else a
            out |= set(range(a, b + 1)) if a <= b else set(range(a, 7)) | set(range(0, b + 1))
        return out

    def local(self, now: datetime) -> datetime:
        if self.timezone in ("UTC", "Etc/UTC"):
            return now.astimezone(timezone.utc)
        from zoneinfo import ZoneInfo

        return now.astimezone(ZoneInfo(self.timezone))

    def contains(self, now: datetime) -> bool:
        here = self.local(now)
        return here.weekday() in self.weekdays() and self.start <= here.strftime("%H:%M") < self.stop

    def label(self) -> str:
        return f"{self.days} {self.start}-{self.stop} {self.timezone}"


@dataclass(frozen=True)
class Config:
    resource_id: str  # service/<cluster>/<service>
    min_tasks: int
    max_tasks: int
    rule_arn: str
    host: str | None
    hours: Hours
    wake_minutes: int
    admins: tuple[str, ...] = ()  # non-empty: only these signed-in e-mails may wake it (cdk.json wake_admins_only)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Config":
        hours = json.loads(env["HOURS"])
        return cls(env["RESOURCE_ID"], int(env["MIN_TASKS"]), int(env["MAX_TASKS"]), env["RULE_ARN"], env.get("HOST") or None,
                   Hours(hours["start"], hours["stop"], hours["days"], hours.get("timezone", "UTC")), int(env["WAKE_MINUTES"]),
                   tuple(e.lower() for e in json.loads(env.get("ADMINS") or "[]")))


def signed_in_email(headers: dict) -> str | None:
    """The e-mail claim of the ALB's x-amzn-oidc-data token. The ALB sets this header itself after its authenticate
    action (replacing any the browser sent) and only the ALB may invoke the function, so it is read, not re-verified."""
    token = {k.lower(): v for k, v in (headers or {}).items()}.get("x-amzn-oidc-data", "")
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    email = claims.get("email")
    return email.lower() if isinstance(email, str) else None


def open_until(conditions: list[dict]) -> int | None:
    """None: closed. Otherwise the epoch second a wake-up ends (0: open for business hours only)."""
    for condition in conditions:
        if condition.get("Field") == "path-pattern":
            values = (condition.get("PathPatternConfig") or {}).get("Values") or condition.get("Values") or []
            for value in values:
                if value.startswith(OPEN_PREFIX):
                    return int(value[len(OPEN_PREFIX):])
    return None


def should_be_open(now: datetime, hours: Hours, until: int | None) -> bool:
    return hours.contains(now) or (until is not None and now.timestamp() < until)


def read_rule(clients, config: Config) -> int | None:
    [rule] = clients["elbv2"].describe_rules(RuleArns=[config.rule_arn])["Rules"]
    return open_until(rule["Conditions"])


def apply(clients, config: Config, *, opened: bool, until: int = 0) -> None:
    """Tasks first when opening (so the rule lets people through to a starting service), rule first when closing."""
    conditions = ([{"Field": "host-header", "HostHeaderConfig": {"Values": [config.host]}}] if config.host else []) + [
        {"Field": "path-pattern", "PathPatternConfig": {"Values": [f"{OPEN_PREFIX}{until}"] if opened else CLOSED_PATHS}}]

    def scale() -> None:
        tasks = config.min_tasks if opened else 0
        clients["application-autoscaling"].register_scalable_target(
            ServiceNamespace="ecs", ResourceId=config.resource_id, ScalableDimension="ecs:service:DesiredCount",
            MinCapacity=tasks, MaxCapacity=config.max_tasks if opened else 0)
        # The range keeps CPU scaling from undoing it; the desired count itself is set here, not left to a later
        # scaling decision (service/<cluster>/<service>).
        _, cluster, service = config.resource_id.split("/", 2)
        clients["ecs"].update_service(cluster=cluster, service=service, desiredCount=tasks)

    def rule() -> None:
        clients["elbv2"].modify_rule(RuleArn=config.rule_arn, Conditions=conditions)

    for step in ((scale, rule) if opened else (rule, scale)):
        step()


def tick(clients, config: Config, now: datetime) -> dict:
    until = read_rule(clients, config)
    opened = should_be_open(now, config.hours, until)
    keep = until if (opened and until and now.timestamp() < until) else 0
    apply(clients, config, opened=opened, until=keep)
    return {"open": opened, "until": keep}


def wake(clients, config: Config, now: datetime) -> int:
    """Open now, until WAKE_MINUTES from now (at most: a second press does not add more)."""
    until = int((now + timedelta(minutes=config.wake_minutes)).timestamp())
    apply(clients, config, opened=True, until=until)
    return until


def page(title: str, body: str, *, refresh_to: str | None = None, status: int = 200) -> dict:
    refresh = f'<meta http-equiv="refresh" content="{STARTUP_SECONDS};url={refresh_to}">' if refresh_to else ""
    document = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>{refresh}</head>"
                f"<body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{html.escape(title)}</h1>{body}</body></html>")
    return {"statusCode": status, "statusDescription": f"{status} {'OK' if status == 200 else 'Forbidden'}", "isBase64Encoded": False,
            "headers": {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}, "body": document}


def handle(event: dict, clients, config: Config, now: datetime) -> dict:
    if "requestContext" not in event:  # EventBridge Scheduler
        return tick(clients, config, now)
    method = (event.get("httpMethod") or "GET").upper()
    if method == "POST":
        if config.admins and signed_in_email(event.get("headers") or {}) not in config.admins:
            return page("Only admins can wake the dashboard",
                        f"<p>Ask an admin, or come back in business hours ({html.escape(config.hours.label())}).</p>", status=403)
        until = wake(clients, config, now)
        ends = config.hours.local(datetime.fromtimestamp(until, timezone.utc)).strftime("%H:%M")
        return page("Starting the dashboard", f"<p>It takes about 2 minutes; this page opens it by itself. It stays on until "
                                               f"{html.escape(ends)} ({html.escape(config.hours.timezone)}), then sleeps again "
                                               f"unless it is business hours ({html.escape(config.hours.label())}).</p>"
                                               '<p><a href="/">Open the dashboard</a></p>', refresh_to="/")
    state = "open" if should_be_open(now, config.hours, read_rule(clients, config)) else "asleep"
    return page(f"The dashboard is {state}",
                f"<p>It runs in business hours ({html.escape(config.hours.label())}). Outside them it sleeps to save money; "
                f"waking it takes about 2 minutes and keeps it on for {config.wake_minutes} minutes.</p>"
                '<form method="post" action="/wake"><button type="submit">Wake it now</button></form>'
                '<p><a href="/">Open the dashboard</a></p>')


def handler(event, context):  # pragma: no cover - the Lambda entry point; tests call handle() with moto clients
    import boto3

    clients = {name: boto3.client(name) for name in ("elbv2", "application-autoscaling", "ecs")}
    return handle(event, clients, Config.from_env(dict(os.environ)), datetime.now(timezone.utc))
