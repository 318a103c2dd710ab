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
