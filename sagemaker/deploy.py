"""Create or update the BLIP-2 endpoint: model, endpoint config, endpoint (+ async autoscaling).

    python sagemaker/deploy.py --model-data s3://B/blip2/blip2-endpoint.tar.gz [--mode realtime|async]
                               [--async-s3 s3://B/blip2-async] [--dry-run]

Names come from settings (SAGEMAKER_ENDPOINT, SAGEMAKER_ROLE_ARN, SAGEMAKER_INSTANCE_TYPE, ...; see
docs/settings.md). The deployment is a plan of plain API calls: `plan_deployment` reads what exists (describe
calls only), `apply_plan` makes the calls in order, `--dry-run` prints the plan and changes nothing.

- Model and endpoint-config names carry a hash of their content, so re-running with the same inputs
  creates nothing new, and a changed input gives a new config that the endpoint is *switched* to with
  UpdateEndpoint (in-place, no delete/recreate; SageMaker keeps serving the old config meanwhile).
- Async mode: results to `<async-s3>/output/`, failures to `<async-s3>/failure/`, optional SNS
  topics, MaxConcurrentInvocationsPerInstance; autoscaling with min capacity 0, target tracking on
  ApproximateBacklogSizePerInstance, and a step policy driven by a CloudWatch alarm on
  HasBacklogWithoutCapacity, because target tracking alone cannot scale out from zero instances.
- A redeploy keeps the capacity it finds: the scalable target's minimum (an admin's Start raised it to
  1, pipeline/admin/endpoint.py) and the variant's desired instance count (restored with
  UpdateEndpointWeightsAndCapacities after a switch, which starts the new config's instance count).
- The variant waits up to STARTUP_HEALTH_CHECK_TIMEOUT_S for the container's first /ping and
  MODEL_DATA_DOWNLOAD_TIMEOUT_S for the model data (a ~16 GB model does not fit SageMaker's defaults);
  infra/tagger_infra/captioning.py sets the same values on the endpoint config it defines.
- IAM: the GitHub model-deploy role (infra/tagger_infra/stacks.py, permissions.py) allows exactly
  the calls this module makes; tests/test_iam_coverage.py records them against moto and checks them
  against the synthesized policy.
- Control-plane calls are boto3: sagemaker-core's resource classes wrap the same calls, but they
  re-describe every resource after creating it and the fake AWS our tests use (moto) answers those
  describes in a shape they reject. The SDK (sagemaker-core) is used for what it adds here: the
  region's Hugging Face PyTorch inference container image URI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.admin.endpoint import VARIANT, scaling_target

# The Hugging Face PyTorch inference DLC the handler is tested against (sagemaker/container.json, the
# one pin), looked up in the SDK's image catalogue.
# installs the pinned transformers on top at start-up).
CONTAINER = json.loads((Path(__file__).resolve().parent / "container.json").read_text())
BUSY_STATES = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# Per variant; SageMaker allows 60-3600 s. Cold start pulls the ~16 GB model (Hub or S3) and loads it on
# the GPU before /ping answers: the defaults are too short. Keep equal to infra/tagger_infra/captioning.py.
STARTUP_HEALTH_CHECK_TIMEOUT_S = 1800
MODEL_DATA_DOWNLOAD_TIMEOUT_S = 1800
TIMEOUT_RANGE_S = (60, 3600)


class DeployError(Exception):
    """A problem the person deploying can fix; printed as one line, never a traceback."""


@dataclass(frozen=True)
class DeployOptions:
    endpoint_name: str
    model_data: str  # s3://…/blip2-endpoint.tar.gz, or an s3://…/ prefix (uncompressed)
    role_arn: str
    image_uri: str
    region: str
    mode: str = "realtime"  # realtime | async
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    hf_model_id: str | None = None  # None: weights are packaged in model_data
    hf_model_revision: str | None = None
    load_in_8bit: bool = False
    async_s3: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrency_per_instance: int = 4
    max_instances: int = 1
    backlog_per_instance: float = 5.0
    scale_in_cooldown_s: int = 600
    scale_out_cooldown_s: int = 300
    startup_timeout_s: int = STARTUP_HEALTH_CHECK_TIMEOUT_S
    download_timeout_s: int = MODEL_DATA_DOWNLOAD_TIMEOUT_S


@dataclass(frozen=True)
class Capacity:
    """What an async endpoint's autoscaling is set to: kept across redeploys."""

    min_capacity: int
    max_capacity: int


@dataclass(frozen=True)
class Ref:
    """A value produced by an earlier step (e.g. a scaling policy ARN), filled in when applying."""

    key: str


@dataclass(frozen=True)
class Step:
    summary: str
    service: str  # boto3 client name
    operation: str  # client method, or "wait:<waiter name>"
    params: dict[str, Any]
    output: tuple[str, str] | None = None  # (response field, key for later Refs)


@dataclass
class Plan:
    options: DeployOptions
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- names -----------------------------------------------------------------------------------------


def content_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def resource_name(endpoint_name: str, *parts: str) -> str:
    """`<endpoint>-<parts>` within SageMaker's 63-character limit (the endpoint part is shortened)."""
    suffix = "-".join(parts)
    return f"{endpoint_name[: 62 - len(suffix)].rstrip('-')}-{suffix}"


def backlog_alarm_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-HasBacklogWithoutCapacity"


# --- what to create --------------------------------------------------------------------------------


def validate_options(options: DeployOptions) -> None:
    if not NAME_PATTERN.match(options.endpoint_name):
        raise DeployError(f"endpoint name {options.endpoint_name!r} must be 1-63 letters, digits or hyphens")
    if options.mode not in ("realtime", "async"):
        raise DeployError(f"mode must be realtime or async, not {options.mode!r}")
    if not options.model_data.startswith("s3://"):
        raise DeployError("--model-data must be an s3:// URI (run sagemaker/package.py --bucket first)")
    if not options.role_arn:
        raise DeployError("set SAGEMAKER_ROLE_ARN (or --role-arn): the execution role the endpoint runs as")
    if options.hf_model_id and not options.hf_model_revision:
        raise DeployError(
            "set SAGEMAKER_HF_MODEL_REVISION (or --hf-revision) to a commit of the model repo, so the endpoint "
            "loads exactly the weights you tested; or pass --hf-model-id '' when the weights are packaged"
        )
    low, high = TIMEOUT_RANGE_S
    for label, value in (("--startup-timeout", options.startup_timeout_s), ("--download-timeout", options.download_timeout_s)):
        if not low <= value <= high:
            raise DeployError(f"{label} must be between {low} and {high} seconds (SageMaker's limits), not {value}")
    if options.mode == "async":
        if not (options.async_s3 or "").startswith("s3://"):
            raise DeployError("async mode needs SAGEMAKER_ASYNC_S3 (or --async-s3), e.g. s3://bucket/blip2-async")
        if options.max_instances < 1:
            raise DeployError("--max-instances must be at least 1")


def container_definition(options: DeployOptions) -> dict[str, Any]:
    environment = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",  # one model copy per T4; two fp16 copies would not fit
        "LOAD_IN_8BIT": "true" if options.load_in_8bit else "false",
    }
    if options.hf_model_id:
        # Not HF_MODEL_ID: with it the toolkit downloads the model itself and never imports code/inference.py.
        environment["BLIP2_MODEL_ID"] = options.hf_model_id
        environment["BLIP2_MODEL_REVISION"] = options.hf_model_revision or ""
    container: dict[str, Any] = {"Image": options.image_uri, "Environment": environment}
    if options.model_data.endswith("/"):
        container["ModelDataSource"] = {
            "S3DataSource": {"S3Uri": options.model_data, "S3DataType": "S3Prefix", "CompressionType": "None"}
        }
    else:
        container["ModelDataUrl"] = options.model_data
    return container


def async_inference_config(options: DeployOptions) -> dict[str, Any]:
    base = options.async_s3.rstrip("/")
    output: dict[str, Any] = {"S3OutputPath": f"{base}/output/", "S3FailurePath": f"{base}/failure/"}
    topics = {k: v for k, v in (("SuccessTopic", options.success_topic), ("ErrorTopic", options.error_topic)) if v}
    if topics:
        output["NotificationConfig"] = topics
    return {
        "OutputConfig": output,
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": options.max_concurrency_per_instance},
    }


def model_request(options: DeployOptions) -> dict[str, Any]:
    body = {"PrimaryContainer": container_definition(options), "ExecutionRoleArn": options.role_arn}
    return {"ModelName": resource_name(options.endpoint_name, content_hash(body)), **body}


def endpoint_config_request(options: DeployOptions, model_name: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ProductionVariants": [{
            "VariantName": VARIANT,
            "ModelName": model_name,
            "InstanceType": options.instance_type,
            "InitialInstanceCount": options.instance_count,
            "ContainerStartupHealthCheckTimeoutInSeconds": options.startup_timeout_s,
            "ModelDataDownloadTimeoutInSeconds": options.download_timeout_s,
        }],
    }
    if options.mode == "async":
        body["AsyncInferenceConfig"] = async_inference_config(options)
    name = resource_name(options.endpoint_name, options.mode, content_hash(body))
    return {"EndpointConfigName": name, **body}


def wanted_capacity(options: DeployOptions, current: Capacity | None) -> Capacity:
    """Min 0 on a first deploy; on a redeploy the minimum found (an admin's Start sets 1) is kept.
    The maximum is this deploy's --max-instances (deploy.py is what sets it), never below that minimum."""
    minimum = current.min_capacity if current else 0
    return Capacity(minimum, max(options.max_instances, minimum))


def autoscaling_steps(options: DeployOptions, current: Capacity | None = None) -> list[Step]:
    """Scale-to-zero for async: min 0 (or the minimum kept), backlog target tracking, and a step policy to leave zero."""
    name, target = options.endpoint_name, scaling_target(options.endpoint_name)
    rid = target["ResourceId"]
    endpoint_dimension = [{"Name": "EndpointName", "Value": name}]
    capacity = wanted_capacity(options, current)
    kept = " kept" if current and capacity.min_capacity else ""
    return [
        Step(
            f"register scalable target {rid} (min {capacity.min_capacity}{kept}, max {capacity.max_capacity})",
            "application-autoscaling", "register_scalable_target",
            {**target, "MinCapacity": capacity.min_capacity, "MaxCapacity": capacity.max_capacity},
        ),
        Step(
            f"target tracking: {options.backlog_per_instance:g} queued requests per instance",
            "application-autoscaling", "put_scaling_policy",
            {
                **target, "PolicyName": f"{name}-backlog-per-instance", "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": options.backlog_per_instance,
                    "CustomizedMetricSpecification": {
                        "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                        "Dimensions": endpoint_dimension, "Statistic": "Average",
                    },
                    "ScaleInCooldown": options.scale_in_cooldown_s,
                    "ScaleOutCooldown": options.scale_out_cooldown_s,
                },
            },
        ),
        Step(
            "step scaling: +1 instance when requests wait and no instance runs",
            "application-autoscaling", "put_scaling_policy",
            {
                **target, "PolicyName": f"{name}-scale-from-zero", "PolicyType": "StepScaling",
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
                    "Cooldown": options.scale_out_cooldown_s,
                    "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
                },
            },
            output=("PolicyARN", "scale_from_zero_policy_arn"),
        ),
        Step(
            f"alarm {backlog_alarm_name(name)} → scale-from-zero policy",
            "cloudwatch", "put_metric_alarm",
            {
                "AlarmName": backlog_alarm_name(name),
                "AlarmDescription": f"Requests queued for {name} while it has no instances: start one.",
                "MetricName": "HasBacklogWithoutCapacity", "Namespace": "AWS/SageMaker",
                "Dimensions": endpoint_dimension, "Statistic": "Average", "Period": 60,
                "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 1,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "missing",
                "AlarmActions": [Ref("scale_from_zero_policy_arn")],
            },
        ),
    ]


# --- reading what exists ---------------------------------------------------------------------------


def _exists(call, **params) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return call(**params)
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if error.response.get("Error", {}).get("Code") == "ValidationException" and "ould not find" in message:
            return None
        raise


def current_capacity(autoscaling, endpoint_name: str) -> Capacity | None:
    """The endpoint's scalable target (min, max), or None when it is not autoscaled."""
    target = scaling_target(endpoint_name)
    found = autoscaling.describe_scalable_targets(
        ServiceNamespace=target["ServiceNamespace"], ResourceIds=[target["ResourceId"]], ScalableDimension=target["ScalableDimension"],
    )["ScalableTargets"]
    return Capacity(found[0]["MinCapacity"], found[0]["MaxCapacity"]) if found else None


def desired_instance_count(endpoint: dict[str, Any]) -> int | None:
    variant = next((v for v in endpoint.get("ProductionVariants") or [] if v.get("VariantName") == VARIANT), None)
    if variant is None:
        return None
    return variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount"))


def scaling_policy_names(autoscaling, endpoint_name: str) -> list[str]:
    found = autoscaling.describe_scaling_policies(**scaling_target(endpoint_name))
    return [policy["PolicyName"] for policy in found["ScalingPolicies"]]


def remove_autoscaling_steps(autoscaling, endpoint_name: str) -> list[Step]:
    """Policies first, then the target (explicit, rather than relying on deregistration's cascade)."""
    target = scaling_target(endpoint_name)
    steps = [
        Step(f"delete scaling policy {policy}", "application-autoscaling", "delete_scaling_policy", {**target, "PolicyName": policy})
        for policy in scaling_policy_names(autoscaling, endpoint_name)
    ]
    steps.append(Step(
        f"deregister autoscaling for {endpoint_name} (required before switching configs)",
        "application-autoscaling", "deregister_scalable_target", target,
    ))
    return steps


def plan_deployment(options: DeployOptions, clients: dict[str, Any]) -> Plan:
    """Compare what is wanted with what exists; read-only."""
    validate_options(options)
    sm, name = clients["sagemaker"], options.endpoint_name
    plan = Plan(options)
    model = model_request(options)
    config = endpoint_config_request(options, model["ModelName"])
    config_name = config["EndpointConfigName"]

    if _exists(sm.describe_model, ModelName=model["ModelName"]) is None:
        plan.steps.append(Step(f"create model {model['ModelName']}", "sagemaker", "create_model", model))
    else:
        plan.notes.append(f"model {model['ModelName']} exists (same image, data and environment)")
    if _exists(sm.describe_endpoint_config, EndpointConfigName=config_name) is None:
        plan.steps.append(Step(
            f"create endpoint config {config_name} ({options.mode}, {options.instance_count} × {options.instance_type})",
            "sagemaker", "create_endpoint_config", config,
        ))
    else:
        plan.notes.append(f"endpoint config {config_name} exists")

    endpoint = _exists(sm.describe_endpoint, EndpointName=name)
    capacity = current_capacity(clients["application-autoscaling"], name)
    target_exists = capacity is not None
    switching = endpoint is not None and endpoint["EndpointConfigName"] != config_name
    if endpoint is not None and endpoint["EndpointStatus"] in BUSY_STATES:
        raise DeployError(f"endpoint {name} is {endpoint['EndpointStatus']}; run again when it is InService")
    if endpoint is not None and endpoint["EndpointStatus"] == "Failed":
        raise DeployError(
            f"endpoint {name} is Failed ({endpoint.get('FailureReason', 'no reason given')}); "
            "a failed endpoint cannot be updated: delete it, then run deploy again"
        )

    # AWS requires deregistering autoscaling before an endpoint's config changes.
    if target_exists and (switching or options.mode == "realtime"):
        plan.steps.extend(remove_autoscaling_steps(clients["application-autoscaling"], name))
    if options.mode == "realtime" and target_exists:
        plan.steps.append(Step(
            f"delete alarm {backlog_alarm_name(name)}", "cloudwatch", "delete_alarms",
            {"AlarmNames": [backlog_alarm_name(name)]},
        ))

    if endpoint is None:
        plan.steps.append(Step(
            f"create endpoint {name} on {config_name}", "sagemaker", "create_endpoint",
            {"EndpointName": name, "EndpointConfigName": config_name},
        ))
    elif switching:
        plan.steps.append(Step(
            f"switch endpoint {name}: {endpoint['EndpointConfigName']} → {config_name} (in place)",
            "sagemaker", "update_endpoint", {"EndpointName": name, "EndpointConfigName": config_name},
        ))
    else:
        plan.notes.append(f"endpoint {name} already runs {config_name}")

    if endpoint is None or switching:
        plan.steps.append(wait_in_service(name))
    if options.mode == "async":
        if switching and target_exists:
            plan.steps.extend(restore_instance_count_steps(options, endpoint, capacity))
        plan.steps.extend(autoscaling_steps(options, capacity))
    return plan


def wait_in_service(name: str) -> Step:
    return Step(f"wait until {name} is InService", "sagemaker", "wait:endpoint_in_service", {"EndpointName": name})


def restore_instance_count_steps(options: DeployOptions, endpoint: dict[str, Any], capacity: Capacity) -> list[Step]:
    """After a switch the variant runs the new config's InitialInstanceCount; put back the count the
    autoscaled endpoint had (0 when it was scaled to zero or stopped, more when scaled out)."""
    before = desired_instance_count(endpoint)
    if before is None:
        return []
    wanted = wanted_capacity(options, capacity)
    count = min(max(before, wanted.min_capacity), wanted.max_capacity)
    if count == options.instance_count:
        return []
    return [
        Step(
            f"keep {count} instance(s) running, as before the switch", "sagemaker", "update_endpoint_weights_and_capacities",
            {"EndpointName": options.endpoint_name, "DesiredWeightsAndCapacities": [{"VariantName": VARIANT, "DesiredInstanceCount": count}]},
        ),
        wait_in_service(options.endpoint_name),
    ]


# --- doing it --------------------------------------------------------------------------------------


def resolve_refs(value: Any, outputs: dict[str, Any]) -> Any:
    if isinstance(value, Ref):
        return outputs[value.key]
    if isinstance(value, dict):
        return {k: resolve_refs(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, outputs) for v in value]
    return value


def apply_plan(plan: Plan, clients: dict[str, Any], *, wait_delay_s: int = 30, wait_attempts: int = 120, log=print) -> None:
    outputs: dict[str, Any] = {}
    for number, step in enumerate(plan.steps, 1):
        log(f"{number:>2}. {step.summary}")
        client = clients[step.service]
        params = resolve_refs(step.params, outputs)
        if step.operation.startswith("wait:"):
            waiter = client.get_waiter(step.operation.removeprefix("wait:"))
            waiter.wait(**params, WaiterConfig={"Delay": wait_delay_s, "MaxAttempts": wait_attempts})
            continue
        response = getattr(client, step.operation)(**params)
        if step.output:
            outputs[step.output[1]] = response[step.output[0]]


def describe_plan(plan: Plan, *, with_calls: bool = False) -> str:
    o = plan.options
    lines = [f"Plan for endpoint {o.endpoint_name} ({o.mode}, {o.instance_type}, {o.region}):"]
    for number, step in enumerate(plan.steps, 1):
        lines.append(f"{number:>2}. {step.summary}")
        if with_calls:
            params = json.dumps(step.params, indent=2, sort_keys=True, default=lambda r: f"<{r.key}>")
            lines.append(f"    {step.service}.{step.operation}(" + params.replace("\n", "\n    ") + ")")
    if not plan.steps:
        lines.append("    nothing to do")
    lines.extend(f"    - {note}" for note in plan.notes)
    return "\n".join(lines)


# --- settings and command line ---------------------------------------------------------------------


def default_image_uri(region: str, instance_type: str) -> str:
    """The region's Hugging Face PyTorch inference DLC, from the SageMaker SDK's image catalogue."""
    try:
        from sagemaker.core import image_uris
    except ImportError as error:
        raise DeployError("install requirements-deploy.txt (sagemaker-core) or set SAGEMAKER_IMAGE_URI") from error
    return image_uris.retrieve(
        region=region, instance_type=instance_type, **CONTAINER["image"]
    )


def make_clients(region: str, endpoint_url: str | None = None) -> dict[str, Any]:
    import boto3

    session = boto3.Session(region_name=region)
    return {
        service: session.client(service, endpoint_url=endpoint_url)
        for service in ("sagemaker", "application-autoscaling", "cloudwatch")
    }


def parse_args(argv: list[str] | None):
    from pipeline.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(description="Create or update the BLIP-2 SageMaker endpoint.")
    parser.add_argument("--model-data", required=True, help="s3://…/blip2-endpoint.tar.gz, or s3://…/prefix/ (uncompressed)")
    parser.add_argument("--mode", choices=("realtime", "async"), default=settings.sagemaker_mode)
    parser.add_argument("--endpoint-name", default=settings.sagemaker_endpoint)
    parser.add_argument("--role-arn", default=settings.sagemaker_role_arn)
    parser.add_argument("--region", default=settings.aws_region)
    parser.add_argument("--instance-type", default=settings.sagemaker_instance_type)
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--image-uri", default=settings.sagemaker_image_uri)
    parser.add_argument("--hf-model-id", default=settings.sagemaker_hf_model_id, help="'' when weights are packaged")
    parser.add_argument("--hf-revision", default=settings.sagemaker_hf_model_revision)
    parser.add_argument("--load-in-8bit", action="store_true")
    parser.add_argument("--async-s3", default=settings.sagemaker_async_s3, help="async results under <this>/output/, failures under <this>/failure/")
    parser.add_argument("--success-topic", help="SNS topic ARN notified when an async request succeeds")
    parser.add_argument("--error-topic", help="SNS topic ARN notified when an async request fails")
    parser.add_argument("--max-concurrency", type=int, default=4, help="MaxConcurrentInvocationsPerInstance (async)")
    parser.add_argument("--max-instances", type=int, default=1, help="autoscaling maximum (async)")
    parser.add_argument("--backlog-per-instance", type=float, default=5.0, help="target queued requests per instance (async)")
    parser.add_argument("--startup-timeout", type=int, default=STARTUP_HEALTH_CHECK_TIMEOUT_S,
                        help="seconds the container may take to answer its first /ping (60-3600)")
    parser.add_argument("--download-timeout", type=int, default=MODEL_DATA_DOWNLOAD_TIMEOUT_S,
                        help="seconds SageMaker may take to download the model data (60-3600)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    parser.add_argument("--show-calls", action="store_true", help="with the plan, print each API call's parameters")
    parser.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # a local fake AWS, for tests
    return parser.parse_args(argv)


def options_from_args(args) -> DeployOptions:
    return DeployOptions(
        endpoint_name=args.endpoint_name, model_data=args.model_data, role_arn=args.role_arn or "",
        image_uri=args.image_uri or default_image_uri(args.region, args.instance_type), region=args.region,
        mode=args.mode, instance_type=args.instance_type, instance_count=args.instance_count,
        hf_model_id=args.hf_model_id or None, hf_model_revision=args.hf_revision, load_in_8bit=args.load_in_8bit,
        async_s3=args.async_s3, success_topic=args.success_topic, error_topic=args.error_topic,
        max_concurrency_per_instance=args.max_concurrency, max_instances=args.max_instances,
        backlog_per_instance=args.backlog_per_instance, startup_timeout_s=args.startup_timeout,
        download_timeout_s=args.download_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    args = parse_args(argv)
    try:
        options = options_from_args(args)
        clients = make_clients(options.region, args.endpoint_url)
        plan = plan_deployment(options, clients)
        print(describe_plan(plan, with_calls=args.show_calls))
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        apply_plan(plan, clients)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WaiterError as error:
        print(f"error: endpoint did not become InService: {error.last_response.get('FailureReason', error)}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as error:
        print(f"error: AWS refused: {error}", file=sys.stderr)
        return 1
    print(f"done: {options.endpoint_name} ({options.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
