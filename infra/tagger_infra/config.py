"""What one deployment is: every knob of the stack, read from cdk.json's context (or `-c key=value`).

One pydantic model, validated before any construct is made, so a wrong value fails `cdk synth` with
one clear line instead of a half-built template. docs/deploy.md documents each field.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.admin.costs import Assumptions
from pipeline.settings import Settings

CONTEXT_KEY = "product-tagging"  # cdk.json: {"context": {"product-tagging": {...}}}
NAME = re.compile(r"^[a-z][a-z0-9-]{1,40}$")


class InfraConfigError(Exception):
    """A context value the person deploying must fix."""


class OidcProvider(BaseModel):
    """An external OpenID Connect identity provider (Okta, Entra ID, Google Workspace...) instead of Cognito."""

    model_config = ConfigDict(extra="forbid")
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    user_info_endpoint: str
    client_id: str
    client_secret_name: str = Field(description="Secrets Manager secret holding the client secret (resolved by CloudFormation, never in the template).")


class BusinessHours(BaseModel):
    """Real-time endpoint schedule: started at `start`, stopped at `stop`, on `days`, in `timezone`."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    start: str = "08:00"
    stop: str = "18:00"
    days: str = "MON-FRI"
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _times(self) -> "BusinessHours":
        for value in (self.start, self.stop):
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
                raise ValueError(f"business hours time {value!r} must be HH:MM (24 h)")
        return self

    def cron(self, at: str) -> str:
        hour, minute = at.split(":")
        return f"cron({int(minute)} {int(hour)} ? * {self.days} *)"


class SharedAlb(BaseModel):
    """An existing (company) ALB the dashboard joins with listener rules instead of creating its own."""

    model_config = ConfigDict(extra="forbid")
    listener_arn: str = Field(description="Its HTTPS listener: the rules (and this host's certificate) are added there.")
    load_balancer_arn: str = Field(description="The ALB itself (its metrics feed the alarms).")
    security_group_id: str = Field(description="The ALB's security group: allowed into the tasks on port 8501.")
    vpc_id: str = Field(description="The ALB's VPC: the tasks run there (IP targets).")
    availability_zones: list[str]
    task_subnet_ids: list[str] = Field(description="Subnets of that VPC for the tasks, one per availability zone.")
    assign_public_ip: bool = Field(True, description="Public subnets: tasks reach AWS and OpenAI with a public IPv4; "
                                                     "false: the subnets must have a NAT gateway or endpoints of their own.")
    priority: int = Field(description="First of three free rule priorities on the listener: /wake, closed page, dashboard.")
    dns_name: str | None = Field(None, description="The ALB's DNS name, for an alias record in hosted_zone_id (else: point the name yourself).")
    canonical_hosted_zone_id: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> "SharedAlb":
        if len(self.task_subnet_ids) != len(self.availability_zones):
            raise ValueError("shared_alb: one task subnet per availability zone")
        if not 1 <= self.priority <= 49_998:
            raise ValueError("shared_alb.priority must be 1-49998 (three consecutive priorities are used)")
        return self


class InfraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, description="Set by from_context when a deployment profile was applied (PROFILES).")

    # Where
    app_name: str = "product-tagging"
    account: str | None = Field(None, description="None: the CLI's current account (CDK_DEFAULT_ACCOUNT).")
    region: str = "us-east-1"

    # Name and certificate: the ALB authenticates users only on HTTPS, so one of these is required.
    domain_name: str | None = Field(None, description="e.g. tagging.example.com; gets an ACM certificate and an alias record.")
    hosted_zone_id: str | None = None
    hosted_zone_name: str | None = None
    certificate_arn: str | None = Field(None, description="An existing ACM certificate (DNS managed outside Route 53).")

    # Sign-in
    auth: Literal["cognito", "oidc"] = "cognito"
    cognito_domain_prefix: str | None = Field(None, description="Hosted sign-in page prefix; default <app_name>-<account>.")
    oidc: OidcProvider | None = None
    admin_emails: list[str] = Field(default_factory=list)

    # Network: public subnets (tasks get a public IP, no NAT), or private subnets with NAT or interface endpoints.
    network: Literal["public", "private-nat", "private-endpoints"] = "public"
    max_azs: int = 2
    allowed_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], description="Who may reach the ALB (HTTPS).")
    vpc_flow_logs: Literal["off", "reject", "all"] = Field(
        "off", description="VPC flow logs to CloudWatch Logs: rejected traffic only, or all; billed per GB ingested, no fixed cost.")

    # Load balancer: "own" (default), "own-dualstack" (dualstack-without-public-ipv4: no public IPv4 address charge,
    # reachable over IPv6 only), or "shared" (rules on an existing ALB, shared_alb block; no ALB created).
    load_balancer: Literal["own", "own-dualstack", "shared"] = "own"
    allowed_ipv6_cidrs: list[str] = Field(default_factory=lambda: ["::/0"], description="Who may reach a dual-stack ALB over IPv6.")
    shared_alb: SharedAlb | None = None

    # Dashboard service
    dashboard_schedule: Literal["always", "business-hours"] = Field(
        "always", description="business-hours: the service runs 0 tasks outside business_hours; /wake starts it for wake_minutes.")
    wake_minutes: int = 120
    wake_admins_only: bool = Field(False, description="Only admin_emails may press Wake (default: any signed-in user).")
    fargate_on_demand_base: int = Field(0, description="With fargate_spot: this many tasks on regular Fargate, the rest on Spot.")
    cpu: int = 512
    memory_mib: int = 1024
    cpu_architecture: Literal["ARM64", "X86_64"] = "ARM64"
    fargate_spot: bool = False
    desired_count: int = 1
    max_count: int = 3
    image_tag: str = "latest"
    log_retention_days: int = 30
    alb_idle_timeout_s: int = 600

    # The OpenAI API key the tasks get as OPENAI_API_KEY: a Secrets Manager secret the stack creates (you put the key in
    # after the first deploy; $0.40 a month), or an SSM Parameter Store SecureString (standard tier, no monthly charge)
    # that you create BEFORE deploying: CloudFormation cannot create SecureString parameters (docs/deploy.md).
    openai_key_store: Literal["secrets-manager", "ssm"] = Field(
        "secrets-manager", description="secrets-manager: the stack creates a secret; ssm: a SecureString parameter you create first.")
    openai_key_parameter: str | None = Field(None, description="With openai_key_store ssm: the parameter's name (default /<app_name>/openai-api-key).")

    # Captioning endpoint
    realtime_endpoint: bool = Field(True, description="false: no real-time or async endpoint: captions only through batch "
                                    "transform jobs; no endpoint alarms, schedules or start/stop/invoke permissions, and the "
                                    "Admin page offers no Start (ENDPOINT_ENABLED=false).")
    # Same-working-day summaries on the Batch API: OpenAI promises 24 h. With a limit, what its batch has not answered
    # by then is cancelled and summarized in real time at the full price (OPENAI_BATCH_FALLBACK stays on).
    openai_batch_deadline_hours: float | None = Field(
        None, gt=0, le=24, description="Sets the tasks' OPENAI_BATCH_DEADLINE_S: hours an OpenAI batch is waited for before "
        "its unanswered items are summarized in real time (unset: the app's default, 25 h).")
    endpoint_name: str = "blip2-endpoint"
    instance_type: str = "ml.g4dn.xlarge"
    async_inference: bool = False
    async_max_instances: int = 1
    model_data_url: str | None = Field(None, description="s3://…/blip2-endpoint.tar.gz: CDK defines model + endpoint config; None: sagemaker/deploy.py does.")
    image_uri: str | None = Field(None, description="Inference image for model_data_url (`sagemaker/deploy.py --dry-run` prints the region's).")
    hf_model_id: str | None = Field(Settings.model_fields["sagemaker_hf_model_id"].default,
                                    description="Hub model the container loads at start; None when weights are in the package.")
    hf_model_revision: str | None = None
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    autostop_every_minutes: int = 15
    autostop_idle_minutes: int = 30

    # Storage
    upload_expiry_days: int = 7
    transfer_expiry_days: int = 14  # async/ and transform/ requests and results
    dynamodb_table: str = "product-tagging"
    s3_source_buckets: list[str] = Field(default_factory=list, description="Buckets merchandisers may tag photos from (s3:// rows).")

    # Watching
    alarm_email: str | None = None
    monthly_budget_usd: float = 300.0
    pipeline_monitoring: bool = Field(False, description="Alarms (item failure rate, p95 caption time) and a CloudWatch "
                                      "dashboard on the tasks' EMF metrics; off: the tasks write no metrics (docs/operations.md).")

    # CI/CD
    github_repo: str | None = Field(None, description="owner/name: creates the GitHub OIDC deploy roles for the workflows.")
    github_oidc_provider_arn: str | None = Field(None, description="Reuse an account's existing GitHub OIDC provider.")

    @model_validator(mode="after")
    def _consistent(self) -> "InfraConfig":
        if self.profile is not None and self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r}: choose one of {', '.join(PROFILES)}")
        if not NAME.match(self.app_name):
            raise ValueError(f"app_name {self.app_name!r}: lowercase letters, digits and hyphens, 2-41 characters")
        if not self.domain_name or not (self.certificate_arn or (self.hosted_zone_id and self.hosted_zone_name)):
            raise ValueError("set domain_name, and hosted_zone_id + hosted_zone_name (a Route 53 zone) or certificate_arn: "
                             "the load balancer signs users in only over HTTPS, on a name of yours")
        if self.auth == "oidc" and self.oidc is None:
            raise ValueError("auth is 'oidc' but the oidc provider block is missing")
        if (self.cpu, self.memory_mib) not in FARGATE_SIZES:
            raise ValueError(f"cpu {self.cpu} / memory_mib {self.memory_mib} is not a Fargate size")
        if not 1 <= self.desired_count <= self.max_count:
            raise ValueError("need 1 <= desired_count <= max_count")
        if self.load_balancer == "shared" and self.shared_alb is None:
            raise ValueError("load_balancer is 'shared' but the shared_alb block is missing")
        if self.load_balancer == "shared" and self.network != "public":
            raise ValueError("load_balancer 'shared' runs the tasks in the shared ALB's VPC: set network 'public' "
                             "(shared_alb.assign_public_ip false for subnets with their own NAT)")
        if self.load_balancer == "own-dualstack" and self.network == "private-endpoints":
            raise ValueError("load_balancer 'own-dualstack' needs network 'public' or 'private-nat'")
        if not 15 <= self.wake_minutes <= 720:
            raise ValueError("wake_minutes must be 15-720")
        if self.upload_expiry_days < 1:
            raise ValueError("upload_expiry_days must be at least 1")
        if self.model_data_url and not (self.model_data_url.startswith("s3://") and self.image_uri):
            raise ValueError("model_data_url must be an s3:// URL, and needs image_uri")
        if self.openai_key_parameter is not None and not re.fullmatch(r"/[A-Za-z0-9_.\-/]{1,1010}", self.openai_key_parameter):
            raise ValueError("openai_key_parameter must be a parameter name starting with / (letters, digits, _ . - /)")
        if self.openai_key_parameter is not None and self.openai_key_store != "ssm":
            raise ValueError("openai_key_parameter is for openai_key_store 'ssm'")
        if not self.realtime_endpoint and self.async_inference:
            raise ValueError("async_inference needs an endpoint: set realtime_endpoint true, or async_inference false")
        if self.model_data_url and self.hf_model_id and not self.hf_model_revision:
            raise ValueError("model_data_url with hf_model_id needs hf_model_revision (a commit of the model repo, "
                             "as sagemaker/model-revision.json pins it), or hf_model_id null when weights are packaged")
        return self

    @classmethod
    def from_context(cls, values: dict[str, Any] | str | None, profile: str | None = None) -> "InfraConfig":
        """cdk.json's block, or a JSON string (what `-c product-tagging='{...}'` passes); `profile` (PROFILES, or
        the block's own "profile" key; `-c profile=<name>`) overrides the block's always-on shape."""
        if isinstance(values, str):
            values = json.loads(values)
        values = dict(values or {})
        profile = profile or values.pop("profile", None)
        if profile is not None:
            if profile not in PROFILES:
                raise InfraConfigError(f"profile {profile!r}: choose one of {', '.join(PROFILES)}")
            values.update(PROFILES[profile], profile=profile)
        try:
            return cls(**values)
        except ValidationError as error:
            lines = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors()]
            raise InfraConfigError("cdk.json context 'product-tagging': " + "; ".join(lines)) from None

    @property
    def nat_gateways(self) -> int:
        return 1 if self.network == "private-nat" else 0  # one shared NAT: an AZ outage only stops egress

    @property
    def interface_endpoints(self) -> list[str]:
        """AWS services reached through interface endpoints when tasks have no route to the internet."""
        if self.network != "private-endpoints":
            return []
        services = ["ecr.api", "ecr.dkr", "logs", "secretsmanager", "sagemaker.api", "sagemaker.runtime", "monitoring",
                    "application-autoscaling", "sts"]
        if self.openai_key_store == "ssm":  # the task execution role reads the key from Parameter Store at task start
            services[services.index("secretsmanager")] = "ssm"
        if not self.realtime_endpoint:  # invoke, the last invocation's metric and async capacity: endpoint calls only
            services = [s for s in services if s not in ("sagemaker.runtime", "monitoring", "application-autoscaling")]
        return services + (["sqs"] if self.async_inference else [])

    @property
    def tasks_get_public_ip(self) -> bool:
        if self.load_balancer == "shared":
            return self.shared_alb.assign_public_ip
        return self.network == "public"

    @property
    def openai_key_parameter_name(self) -> str | None:
        """The SSM parameter the tasks read OPENAI_API_KEY from (openai_key_store ssm), else None."""
        if self.openai_key_store != "ssm":
            return None
        return self.openai_key_parameter or f"/{self.app_name}/openai-api-key"

    @property
    def alarm_names(self) -> tuple[str, ...]:
        """The CloudWatch alarms the stack defines (tagger_infra.monitoring.Monitoring), by name suffix."""
        names = ALARMS if self.realtime_endpoint else tuple(a for a in ALARMS if a not in ENDPOINT_ALARMS)
        return (names + (("async-backlog-stuck",) if self.async_inference else ())
                + (PIPELINE_ALARMS if self.pipeline_monitoring else ()))

    @property
    def sagemaker_mode(self) -> str:
        return "async" if self.async_inference else "realtime"

    def cost_assumptions(self, base: Assumptions | None = None) -> Assumptions:
        """The estimator's inputs for this deployment's always-on parts (the same numbers the stack uses)."""
        return replace(
            base or Assumptions(),
            instance_type=self.instance_type,
            dashboard_vcpu=self.cpu / 1024, dashboard_gb=self.memory_mib / 1024, dashboard_tasks=self.desired_count,
            fargate_arch="arm" if self.cpu_architecture == "ARM64" else "x86", fargate_spot=self.fargate_spot,
            fargate_on_demand_base=self.fargate_on_demand_base if self.fargate_spot else 0,
            dashboard_always_on=self.dashboard_schedule == "always", wake_function=self.dashboard_schedule == "business-hours",
            own_alb=self.load_balancer != "shared",
            secrets=(1 if self.openai_key_store == "secrets-manager" else 0) + (1 if self.auth == "oidc" else 0),
            public_ipv4_addresses=(self.max_azs if self.load_balancer == "own" else 0) + self.nat_gateways,  # ALB: one per AZ
            task_public_ip=self.tasks_get_public_ip,
            nat_gateways=self.nat_gateways, interface_endpoints=len(self.interface_endpoints) * self.max_azs,
            alarms=len(self.alarm_names), realtime_endpoint=self.realtime_endpoint,
            autostop_every_minutes=self.autostop_every_minutes if self.realtime_endpoint else 0,  # 0: no auto-stop task
            endpoint_schedule=self.realtime_endpoint and self.business_hours.enabled and not self.async_inference,
        )


# Deployment profiles: cdk.json overrides by name (`npx cdk deploy -c profile=<name>`). pipeline.admin.costs.PROFILES
# prices the same names; tests/test_infra.py synthesizes each and ties the estimator's fixed lines to the template.
# 0.25 vCPU / 1 GB: a whole run peaks at ~563-625 MB with the dashboard (README benchmark 10b), 1 GB leaves ~40 %.
BUSINESS_HOURS_PROFILE = {"dashboard_schedule": "business-hours", "cpu": 256, "memory_mib": 1024, "fargate_spot": True,
                          "autostop_every_minutes": 30}
PROFILES: dict[str, dict[str, Any]] = {
    "own-alb": {},
    "own-alb-business-hours": BUSINESS_HOURS_PROFILE,
    "own-alb-ipv6-business-hours": {**BUSINESS_HOURS_PROFILE, "load_balancer": "own-dualstack"},
    "shared-alb-business-hours": {**BUSINESS_HOURS_PROFILE, "load_balancer": "shared"},
    # The cheapest own-ALB shape for a batch-transform-only workload: no endpoint, the key in SSM Parameter Store.
    "own-alb-ipv6-batch": {**BUSINESS_HOURS_PROFILE, "load_balancer": "own-dualstack", "openai_key_store": "ssm",
                           "realtime_endpoint": False, "openai_batch_deadline_hours": 4},
}


# Valid Fargate task sizes (CPU units → memory MiB) for the sizes a dashboard could use.
FARGATE_SIZES = {(256, m) for m in (512, 1024, 2048)} | {(512, m) for m in range(1024, 4097, 1024)} \
    | {(1024, m) for m in range(2048, 8193, 1024)} | {(2048, m) for m in range(4096, 16385, 1024)}

# CloudWatch alarms the stack defines (names are suffixes; the async one is added with async inference).
ALARMS = ("alb-5xx", "unhealthy-tasks", "dashboard-cpu-high", "endpoint-model-errors", "endpoint-running-long")
ENDPOINT_ALARMS = ("endpoint-model-errors", "endpoint-running-long")  # not defined with realtime_endpoint false
# With pipeline_monitoring: alarms on the pipeline's own EMF metrics (tagger_infra.monitoring.PipelineMonitoring).
PIPELINE_ALARMS = ("item-failure-rate", "caption-latency-p95")
