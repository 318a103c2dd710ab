"""Synthesize the CDK app (infra/) in-process for tests: cdk.json's context, with overrides."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# jsii warns on every start that Node 20 is past its end of life (the machines here have Node 20).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

INFRA = Path(__file__).resolve().parents[2] / "infra"

VARIANT = {  # everything the default leaves off, in one deployment
    "async_inference": True, "network": "private-endpoints", "fargate_spot": True, "alarm_email": "ops@example.com",
    "auth": "oidc", "oidc": {"issuer": "https://id.example.com", "authorization_endpoint": "https://id.example.com/authorize",
                             "token_endpoint": "https://id.example.com/token", "user_info_endpoint": "https://id.example.com/userinfo",
                             "client_id": "tagging", "client_secret_name": "tagging/oidc"},
    "certificate_arn": "arn:aws:acm:us-east-1:111111111111:certificate/0000", "hosted_zone_id": None, "hosted_zone_name": None,
    "github_repo": "acme/tagging", "model_data_url": "s3://acme-models/blip2/blip2-endpoint.tar.gz",
    "image_uri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:test", "hf_model_revision": "c" * 40,
    "s3_source_buckets": ["acme-product-photos"], "vpc_flow_logs": "all",
}


# A company's existing ALB for the shared-ALB profile (names only: nothing is looked up at synth).
SHARED_ALB = {"shared_alb": {
    "listener_arn": "arn:aws:elasticloadbalancing:us-east-1:111111111111:listener/app/corp/0123456789abcdef/fedcba9876543210",
    "load_balancer_arn": "arn:aws:elasticloadbalancing:us-east-1:111111111111:loadbalancer/app/corp/0123456789abcdef",
    "security_group_id": "sg-0123456789abcdef0", "vpc_id": "vpc-0123456789abcdef0",
    "availability_zones": ["us-east-1a", "us-east-1b"], "task_subnet_ids": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
    "priority": 100}}


def profile_overrides(name: str) -> dict:
    """cdk.json with deployment profile `name` (as `-c profile=<name>`), plus the shared ALB it needs."""
    return {"profile": name, **(SHARED_ALB if name.startswith("shared") else {})}


def fixed_shape(template: dict) -> dict:
    """The estimator's always-on inputs (pipeline.admin.costs.PROFILES_FIXED_FIELDS) read back from a synthesized
    app template's resources, independently of InfraConfig.cost_assumptions."""
    import re

    resources = template["Resources"]

    def of(kind: str) -> list[dict]:
        return [r["Properties"] for r in resources.values() if r["Type"] == kind]

    [task], [service] = of("AWS::ECS::TaskDefinition"), of("AWS::ECS::Service")
    strategy = service["CapacityProviderStrategy"]
    albs = of("AWS::ElasticLoadBalancingV2::LoadBalancer")
    nat = len(of("AWS::EC2::NatGateway"))
    schedules = of("AWS::Scheduler::Schedule")
    tasks = [s for s in schedules if "EcsParameters" in s["Target"]]
    autostops = [s for s in tasks if "autostop" in s["Target"]["Input"]]  # none without an endpoint
    clock = [s for s in schedules if json.loads(s["Target"]["Input"]) == {"action": "tick"}]
    closed = [r for r in of("AWS::ElasticLoadBalancingV2::ListenerRule") if any(a["Type"] == "fixed-response" for a in r["Actions"])]
    interface = [e for e in of("AWS::EC2::VPCEndpoint") if e.get("VpcEndpointType") == "Interface"]
    return {
        "dashboard_vcpu": int(task["Cpu"]) / 1024, "dashboard_gb": int(task["Memory"]) / 1024, "dashboard_tasks": service["DesiredCount"],
        "fargate_arch": "arm" if task["RuntimePlatform"]["CpuArchitecture"] == "ARM64" else "x86",
        "fargate_spot": any(s["CapacityProvider"] == "FARGATE_SPOT" for s in strategy),
        "fargate_on_demand_base": sum(s.get("Base", 0) for s in strategy if s["CapacityProvider"] == "FARGATE" and len(strategy) > 1),
        "dashboard_always_on": not (clock and closed), "wake_function": bool(clock and of("AWS::Lambda::Function")),
        "own_alb": bool(albs),
        "public_ipv4_addresses": nat + sum(0 if a.get("IpAddressType") == "dualstack-without-public-ipv4" else len(a["Subnets"]) for a in albs),
        "task_public_ip": service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "ENABLED",
        "nat_gateways": nat, "interface_endpoints": sum(len(e["SubnetIds"]) for e in interface),
        "alarms": len(of("AWS::CloudWatch::Alarm")),
        "realtime_endpoint": '"sagemaker:InvokeEndpoint"' in json.dumps([*of("AWS::IAM::Role"), *of("AWS::IAM::Policy")]),
        "autostop_every_minutes": sum(int(re.fullmatch(r"rate\((\d+) minutes\)", s["ScheduleExpression"]).group(1)) for s in autostops),
        "endpoint_schedule": len(tasks) > 1,
        "secrets": len(of("AWS::SecretsManager::Secret")) + (1 if "resolve:secretsmanager" in json.dumps(template) else 0),
    }


def default_context() -> dict:
    return json.loads((INFRA / "cdk.json").read_text())["context"]


@dataclass
class Synthesized:
    config: object  # tagger_infra.config.InfraConfig
    registry: object  # RegistryStack
    app: object  # AppStack
    outdir: Path

    def template_files(self) -> list[Path]:
        return sorted(self.outdir.glob("*.template.json"))


def synth(outdir: Path, overrides: dict | None = None, *, nag: bool = False) -> Synthesized:
    """nag: run cdk-nag's AwsSolutions pack as app.py does (findings land in the stacks' annotations)."""
    import aws_cdk as cdk

    from tagger_infra.config import CONTEXT_KEY, InfraConfig
    from tagger_infra.nag import add_checks
    from tagger_infra.stacks import build

    context = default_context()
    context[CONTEXT_KEY] = {**context[CONTEXT_KEY], **(overrides or {})}
    app = cdk.App(context=context, outdir=str(outdir))
    config = InfraConfig.from_context(context[CONTEXT_KEY])
    registry, stack = build(app, config)
    if nag:
        add_checks(app)
    app.synth()
    return Synthesized(config, registry, stack, outdir)
