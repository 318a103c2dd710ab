"""Checkov findings we accept, recorded on the resource itself (template Metadata.checkov.skip), each
with its reason: `make test` runs checkov on the synthesized templates and fails on anything else."""

from __future__ import annotations

from aws_cdk import CfnResource
from constructs import IConstruct


def accept_findings(construct: IConstruct, reasons: dict[str, str]) -> None:
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to annotate")
    existing = (resource.get_metadata("checkov") or {}).get("skip", [])
    resource.add_metadata("checkov", {"skip": existing + [{"id": key, "comment": why} for key, why in reasons.items()]})
