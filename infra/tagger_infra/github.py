"""GitHub Actions' way in: an OIDC identity provider and roles the workflows assume (no long-lived keys).

Each role trusts only this repository, and only the branch or protected environment its workflow runs in.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

GITHUB_OIDC = "token.actions.githubusercontent.com"


def github_provider_arn(scope: Construct, existing: str | None) -> str:
    if existing:
        return existing
    # L1 resource: the L2 OpenIdConnectProvider deploys a Lambda-backed custom resource for the same thing.
    provider = iam.CfnOIDCProvider(scope, "GithubOidc", url=f"https://{GITHUB_OIDC}", client_id_list=["sts.amazonaws.com"])
    return provider.attr_arn


def github_role(scope: Construct, construct_id: str, *, provider_arn: str, repo: str, subject: str, description: str) -> iam.Role:
    """`subject`: e.g. "ref:refs/heads/main" or "environment:model-production"."""
    return iam.Role(scope, construct_id, description=description, max_session_duration=None,
                    assumed_by=iam.FederatedPrincipal(provider_arn, assume_role_action="sts:AssumeRoleWithWebIdentity", conditions={
                        "StringEquals": {f"{GITHUB_OIDC}:aud": "sts.amazonaws.com", f"{GITHUB_OIDC}:sub": f"repo:{repo}:{subject}"}}))


def cdk_bootstrap_roles(scope: Construct) -> list[str]:
    """The roles `cdk deploy` assumes (CDK's default bootstrap): CloudFormation does the deploying."""
    stack = Stack.of(scope)
    return [f"arn:{stack.partition}:iam::{stack.account}:role/cdk-hnb659fds-{kind}-role-{stack.account}-{stack.region}"
            for kind in ("deploy", "file-publishing", "image-publishing", "lookup")]
