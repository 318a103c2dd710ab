"""Start, stop and watch the captioning endpoint: the switch that decides most of the bill.

Real-time: *stopped* means the model and endpoint config exist but the endpoint does not (no
instance, no charge); start creates the endpoint from the newest saved config `deploy.py` made
(`<endpoint>-realtime-<hash>`), stop deletes only the endpoint. Async: the endpoint stays; start
raises autoscaling's minimum to 1, stop sets it (and the desired count) to 0.
Every start / stop / auto-stop, refused ones included, is written to the store's audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from pipeline.errors import UserFacingError
from pipeline.store import Store

VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
STATE_BY_AWS_STATUS = {
    "Creating": "creating", "Updating": "updating", "SystemUpdating": "updating", "RollingBack": "updating",
    "InService": "in_service", "Deleting": "deleting", "Failed": "failed", "UpdateRollbackFailed": "failed",
    "OutOfService": "failed",
}


def scaling_target(endpoint_name: str) -> dict[str, str]:
    """The Application Auto Scaling target of the endpoint's one variant (shared with sagemaker/deploy.py)."""
    return {"ServiceNamespace": "sagemaker", "ResourceId": f"endpoint/{endpoint_name}/variant/{VARIANT}",
            "ScalableDimension": SCALABLE_DIMENSION}


AWS_CREDENTIALS_HINT = ("set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a task or instance role "
                        "provides them")
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
                "InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredToken",
                "ExpiredTokenException", "AuthFailure"}


def aws_problem(error: BaseException, region: str | None = None) -> str | None:
    """One plain sentence saying what to configure, for an AWS client error; None for anything else."""
    try:
        from botocore import exceptions as aws
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    where = f" (AWS_REGION is {region})" if region else ""
    if isinstance(error, (aws.NoCredentialsError, aws.PartialCredentialsError, aws.CredentialRetrievalError)):
        return f"No usable AWS credentials were found: {AWS_CREDENTIALS_HINT}."
    if isinstance(error, aws.ProfileNotFound):
        return f"The AWS profile {error.kwargs.get('profile')!r} does not exist: fix AWS_PROFILE or ~/.aws/config."
    if isinstance(error, aws.NoRegionError):
        return "No AWS region is set: set AWS_REGION (for example us-east-1)."
    if isinstance(error, (aws.EndpointConnectionError, aws.ConnectTimeoutError, aws.ReadTimeoutError, aws.ConnectionClosedError)):
        url = getattr(error, "kwargs", {}).get("endpoint_url")
        return f"Could not reach AWS{' at ' + url if url else ''}{where}: check the network connection and AWS_REGION, then try again."
    if isinstance(error, aws.ClientError):
        info = error.response.get("Error", {})
        code, operation = info.get("Code", "unknown"), getattr(error, "operation_name", "the request")
        if code in DENIED_CODES:
            return (f"AWS refused {operation} ({code}): the credentials in use lack permission or are invalid; "
                    f"use credentials allowed to manage the SageMaker endpoint{where}.")
        message = (info.get("Message") or "").splitlines()[0][:200] if info.get("Message") else ""
        return f"AWS refused {operation} ({code}{': ' + message if message else ''})."
    if isinstance(error, aws.BotoCoreError):
        return f"AWS request failed: {str(error).splitlines()[0][:200]}."
    return None


def aws_setup_problem(settings) -> str | None:
    """Why this process cannot manage the endpoint at all (no region, no credentials), as one sentence; None when
    it can try. Looks only at the local configuration (environment, profile files, a task or instance role)."""
    try:
        import boto3

        session = boto3.Session(region_name=settings.aws_region or None)
        if not session.region_name:
            return "No AWS region is set: set AWS_REGION (for example us-east-1)."
        if session.get_credentials() is None:
            return f"No usable AWS credentials were found: {AWS_CREDENTIALS_HINT}."
    except Exception as error:  # a broken profile, an unreadable config file, ...
        return aws_problem(error, settings.aws_region) or f"AWS is not configured here ({type(error).__name__})."
    return None


class NotAllowed(UserFacingError):
    """The person is not an admin."""


@dataclass(frozen=True)
class Actor:
    who: str
    is_admin: bool


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    mode: str
    state: str  # not_deployed | creating | in_service | updating | deleting | failed | stopped
    instance_type: str | None = None
    instance_count: int | None = None
    since: datetime | None = None
    last_invocation: datetime | None = None
    config_name: str | None = None
    detail: str = ""

    @property
    def billing(self) -> bool:
        """Instances are (or are about to be) running and charged."""
        return self.state in ("creating", "in_service", "updating", "failed") and (self.instance_count or 0) > 0


@dataclass(frozen=True)
class ActionResult:
    action: str  # start | stop | autostop
    result: str  # started | stopped | already running | already stopped | refused | kept running
    message: str

    @property
    def changed(self) -> bool:
        return self.result in ("started", "stopped")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


NO_ENDPOINT = ("This deployment has no captioning endpoint (ENDPOINT_ENABLED=false): photos are captioned by batch "
               "transform jobs, each starting its own GPU machine for the batch.")


class EndpointController:
    def __init__(self, *, endpoint_name: str, mode: str, clients: dict[str, Any], store: Store, warmup_minutes: float,
                 clock: Callable[[], datetime] = utc_now, enabled: bool = True) -> None:
        self.name, self.mode, self.clients, self.store = endpoint_name, mode, clients, store
        self.warmup_minutes, self.clock = warmup_minutes, clock
        self.enabled = enabled  # False: the deployment has no endpoint (ENDPOINT_ENABLED=false, batch transform only)

    @classmethod
    def from_settings(cls, settings, store: Store, endpoint_url: str | None = None) -> "EndpointController":
        import boto3
        from botocore.config import Config

        # Short timeouts: a page showing the status must not hang when AWS is unreachable (e.g. local dev).
        config = Config(connect_timeout=3, read_timeout=15, retries={"mode": "adaptive", "max_attempts": 3})
        session = boto3.Session(region_name=settings.aws_region or None)  # empty: boto3's own lookup, else NoRegionError
        clients = {s: session.client(s, endpoint_url=endpoint_url, config=config) for s in ("sagemaker", "application-autoscaling", "cloudwatch")}
        return cls(endpoint_name=settings.sagemaker_endpoint, mode=settings.sagemaker_mode, clients=clients, store=store,
                   warmup_minutes=settings.endpoint_warmup_minutes, enabled=settings.endpoint_enabled)

    # --- reading -----------------------------------------------------------------------------
    def _describe_endpoint(self) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.clients["sagemaker"].describe_endpoint(EndpointName=self.name)
        except ClientError as error:
            if "ould not find" in error.response.get("Error", {}).get("Message", ""):
                return None
            raise

    def saved_config(self) -> dict | None:
        """The newest endpoint config deploy.py made for this endpoint and mode, if its model exists."""
        sm = self.clients["sagemaker"]
        prefix = f"{self.name}-{self.mode}-"
        found = sm.list_endpoint_configs(NameContains=prefix, SortBy="CreationTime", SortOrder="Descending", MaxResults=50)
        for summary in found["EndpointConfigs"]:
            if summary["EndpointConfigName"].startswith(prefix):
                config = sm.describe_endpoint_config(EndpointConfigName=summary["EndpointConfigName"])
                return config
        return None

    def _min_capacity(self) -> tuple[int, int] | None:
        target = scaling_target(self.name)
        targets = self.clients["application-autoscaling"].describe_scalable_targets(
            ServiceNamespace=target["ServiceNamespace"], ResourceIds=[target["ResourceId"]], ScalableDimension=target["ScalableDimension"],
        )["ScalableTargets"]
        return (targets[0]["MinCapacity"], targets[0]["MaxCapacity"]) if targets else None

    def last_invocation(self, lookback: timedelta = timedelta(days=1)) -> datetime | None:
        """Latest of: the usage ledger's last endpoint call, and CloudWatch's last minute with Invocations > 0
        (the ledger misses calls from other clients, CloudWatch lags by a few minutes: take both)."""
        now = self.clock()
        ledger = _parse(self.store.last_usage_at("endpoint"))
        points = self.clients["cloudwatch"].get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName="Invocations", StartTime=now - lookback, EndTime=now, Period=60,
            Statistics=["Sum"], Dimensions=[{"Name": "EndpointName", "Value": self.name}, {"Name": "VariantName", "Value": VARIANT}],
        )["Datapoints"]
        metric = max((p["Timestamp"] for p in points if p.get("Sum", 0) > 0), default=None)
        return max((t for t in (ledger, metric) if t is not None), default=None)

    def status(self) -> EndpointStatus:
        endpoint = self._describe_endpoint()
        if endpoint is None:
            config = self.saved_config() if self.mode == "realtime" else None
            if config is None:
                return EndpointStatus(self.name, self.mode, "not_deployed", detail="Run sagemaker/deploy.py to deploy it.")
            variant = config["ProductionVariants"][0]
            return EndpointStatus(self.name, self.mode, "stopped", variant.get("InstanceType"), 0, config_name=config["EndpointConfigName"],
                                  last_invocation=self.last_invocation(), detail="No instance is running; nothing is billed.")
        variant = (endpoint.get("ProductionVariants") or [{}])[0]
        state = STATE_BY_AWS_STATUS.get(endpoint["EndpointStatus"], "updating")
        count = variant.get("CurrentInstanceCount", variant.get("DesiredInstanceCount"))
        config = self.clients["sagemaker"].describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        instance_type = config["ProductionVariants"][0].get("InstanceType")
        detail = endpoint.get("FailureReason", "")
        if self.mode == "async" and state == "in_service":
            capacity = self._min_capacity()
            if capacity is not None and capacity[0] == 0 and not count:
                state, detail = "stopped", "Scaled to zero; a queued request starts an instance."
        since = endpoint.get("LastModifiedTime") or endpoint.get("CreationTime")
        return EndpointStatus(self.name, self.mode, state, instance_type, count, since, self.last_invocation(),
                              endpoint["EndpointConfigName"], detail)

    # --- acting ------------------------------------------------------------------------------
    def _record(self, actor: Actor, action: str, result: str, message: str) -> ActionResult:
        self.store.add_audit(actor.who, action, result, message)
        return ActionResult(action, result, message)

    def _check_admin(self, actor: Actor, action: str) -> None:
        if not actor.is_admin:
            self._record(actor, action, "refused", "not an admin")
            raise NotAllowed("Only admins can start or stop the endpoint.")

    def start(self, actor: Actor) -> ActionResult:
        self._check_admin(actor, "start")
        if not self.enabled:  # the stack grants no endpoint permissions: refuse before any AWS call
            return self._record(actor, "start", "refused", NO_ENDPOINT)
        status = self.status()
        if self.mode == "async":
            return self._start_async(actor, status)
        if status.state == "in_service":
            return self._record(actor, "start", "already running", "The endpoint is already in service.")
        if status.state in ("creating", "updating", "deleting"):
            return self._record(actor, "start", "refused", f"The endpoint is {status.state.replace('_', ' ')}; wait until that finishes.")
        if status.state == "failed":
            return self._record(actor, "start", "refused", f"The endpoint failed ({status.detail or 'no reason given'}); stop it first, then start.")
        if status.state == "not_deployed":
            return self._record(actor, "start", "refused", "Nothing to start: deploy it first (sagemaker/deploy.py).")
        self.clients["sagemaker"].create_endpoint(EndpointName=self.name, EndpointConfigName=status.config_name)
        return self._record(actor, "start", "started",
                            f"Starting {status.instance_type} from {status.config_name}; ready in about {self.warmup_minutes:g} minutes.")

    def _start_async(self, actor: Actor, status: EndpointStatus) -> ActionResult:
        capacity = self._min_capacity()
        if status.state == "not_deployed" or capacity is None:
            return self._record(actor, "start", "refused", "The async endpoint or its autoscaling is missing: run sagemaker/deploy.py --mode async.")
        if capacity[0] >= 1:
            return self._record(actor, "start", "already running", "Minimum capacity is already 1 or more.")
        self._set_capacity(1, capacity[1])
        return self._record(actor, "start", "started", f"Minimum capacity raised to 1; ready in about {self.warmup_minutes:g} minutes.")

    def stop(self, actor: Actor, *, action: str = "stop", reason: str = "") -> ActionResult:
        self._check_admin(actor, action)
        if not self.enabled:  # nothing can be running: say so without an AWS call (the stack grants none)
            return self._record(actor, action, "nothing to do", NO_ENDPOINT)
        status = self.status()
        suffix = f" ({reason})" if reason else ""
        if self.mode == "async":
            capacity = self._min_capacity()
            if capacity is None or (capacity[0] == 0 and status.state == "stopped"):
                return self._record(actor, action, "already stopped", "Already scaled to zero.")
            self._set_capacity(0, capacity[1])
            self.clients["sagemaker"].update_endpoint_weights_and_capacities(
                EndpointName=self.name, DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredInstanceCount": 0}])
            return self._record(actor, action, "stopped", f"Scaled to zero{suffix}.")
        if status.state in ("stopped", "not_deployed"):
            return self._record(actor, action, "already stopped", "No endpoint is running.")
        if status.state in ("creating", "updating", "deleting"):
            return self._record(actor, action, "refused", f"The endpoint is {status.state}; try again when that finishes.")
        self.clients["sagemaker"].delete_endpoint(EndpointName=self.name)
        return self._record(actor, action, "stopped", f"Endpoint deleted; model and config {status.config_name} kept for the next start{suffix}.")

    def _set_capacity(self, minimum: int, maximum: int) -> None:
        self.clients["application-autoscaling"].register_scalable_target(
            **scaling_target(self.name), MinCapacity=minimum, MaxCapacity=max(maximum, minimum, 1),
        )

    def autostop(self, idle_minutes: float, actor: Actor = Actor("autostop", True)) -> ActionResult:
        """Stop when nothing was invoked for `idle_minutes` (since start, if never invoked). Meant for a schedule."""
        if not self.enabled:
            return ActionResult("autostop", "nothing to do", NO_ENDPOINT)
        status = self.status()
        if status.state != "in_service":
            return ActionResult("autostop", "already stopped" if status.state in ("stopped", "not_deployed") else "kept running",
                                f"The endpoint is {status.state.replace('_', ' ')}; nothing to do.")
        last_activity = max((t for t in (status.last_invocation, status.since) if t is not None), default=None)
        idle = (self.clock() - last_activity) if last_activity else timedelta.max
        if idle < timedelta(minutes=idle_minutes):
            return ActionResult("autostop", "kept running", f"Last activity {idle.total_seconds() / 60:.0f} min ago (limit {idle_minutes:g}).")
        return self.stop(actor, action="autostop", reason=f"idle for {idle_minutes:g}+ minutes")
