"""cdk-nag's AwsSolutions pack on both stacks, and every finding we accept, each with its reason, here only.

`cdk synth` runs the pack (app.py adds it as an Aspect) and fails on a finding that is neither fixed in the
stacks nor accepted below; tests/test_cdk_nag.py asserts zero unaccepted findings on the shipped and the
variant deployment. Checkov's accepted findings (checks.py, on the same resources) give the same reasons
in checkov's terms.

IAM5 (wildcards) is accepted per wildcard pattern, not per role: a new statement with a new wildcard is a
new finding. Resource "*" is accepted only for the actions in UNSCOPED_ACTIONS (tests/test_cdk_nag.py
fails on any other action granted on "*").
"""

from __future__ import annotations

from aws_cdk import Aspects, Stack
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions
from constructs import IConstruct

from tagger_infra.permissions import APP_PREFIXES, TRANSFORM_JOB_PREFIX


# Actions granted on Resource "*", and why they cannot be scoped.
UNSCOPED_ACTIONS = {
    "ecr:GetAuthorizationToken": "the registry login token is account-wide by design (no resource-level permission)",
    "sagemaker:ListEndpointConfigs": "List calls have no resource-level permission",
    "cloudwatch:GetMetricStatistics": "no resource-level permission",
    "cloudwatch:PutMetricData": "no resource-level permission; the grant is limited to SageMaker's namespaces by a "
                                "cloudwatch:namespace condition",
    "application-autoscaling:RegisterScalableTarget": "scalable-target ARNs carry an id AWS generates at registration, "
                                                      "unknown to the stack",
    "application-autoscaling:DeregisterScalableTarget": "scalable-target ARNs carry an id AWS generates at registration, "
                                                        "unknown to the stack",
    "application-autoscaling:PutScalingPolicy": "scaling-policy ARNs carry an id AWS generates, unknown to the stack",
    "application-autoscaling:DeleteScalingPolicy": "scaling-policy ARNs carry an id AWS generates, unknown to the stack",
    "application-autoscaling:DescribeScalableTargets": "Describe calls have no resource-level permission",
    "application-autoscaling:DescribeScalingPolicies": "Describe calls have no resource-level permission",
    "elasticloadbalancing:DescribeRules": "Describe calls have no resource-level permission (the business-hours wake "
                                          "function reads its closed-page rule; it may modify only that rule)",
}

# Where SageMaker (execution role) and deploy-model.yml read and write, besides the dashboard's own prefixes.
SAGEMAKER_PREFIXES = ("models/", "async/input/", "async/output/", "async/failure/")


def add_checks(app: IConstruct) -> None:
    """The AwsSolutions pack on everything under `app`: findings become synth errors/warnings."""
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))


def acknowledge(registry: Stack, app: Stack) -> None:
    """Accept, with their reasons, the findings the stacks keep on purpose (called by stacks.build)."""
    wildcards = _wildcards(app)
    for stack in (registry, app):
        _accept_wildcards(stack, wildcards)
    _accept_app_findings(app)


# --- IAM5: wildcards, one reason per pattern ----------------------------------------------------------

def _wildcards(app: Stack) -> list[tuple[str, str]]:
    """(regular expression over cdk-nag's finding id, reason). Ids look like `Resource::<Logical.Arn>/uploads/*`."""
    config = app.config
    bucket = f"<{app.get_logical_id(app.storage.bucket.node.default_child)}.Arn>"
    table = f"<{app.get_logical_id(app.storage.table.node.default_child)}.Arn>"
    arn = r"arn:<AWS::Partition>:{service}:(<AWS::Region>|[a-z0-9-]+):(<AWS::AccountId>|\d{{12}}):"  # literal or pseudo-parameter
    endpoint = _literal(config.endpoint_name.lower())
    prefixes = "|".join(_literal(p) for p in sorted(set(APP_PREFIXES + SAGEMAKER_PREFIXES)))
    unscoped = "; ".join(f"{action}: {why}" for action, why in UNSCOPED_ACTIONS.items())
    patterns = [
        (r"^Resource::\*$",
         f"Resource '*' is granted only for actions that cannot be scoped ({unscoped}). tests/test_cdk_nag.py fails on any "
         "other action granted on '*'."),
        (rf"^Resource::{_literal(bucket)}/({prefixes})\*$",
         "Objects under this stack's bucket, one application prefix at a time (uploads/, normalized/, thumbnails/, "
         "async/, transform/, models/): keys are content hashes and request ids made at run time, so the prefix is "
         "the narrowest grant."),
        (rf"^Resource::{_literal(table)}/index/\*$",
         "The secondary indexes of this stack's table (the store queries GSI1): index ARNs are <table>/index/<name>."),
        (rf"^Resource::{arn.format(service='sagemaker')}(endpoint-config|model)/{endpoint}-\*$",
         "Models and endpoint configs of this endpoint only: sagemaker/deploy.py makes a new <endpoint>-<mode>-<hash> "
         "one per deploy, so the endpoint's name is the prefix."),
        (rf"^Resource::{arn.format(service='sagemaker')}transform-job/{_literal(TRANSFORM_JOB_PREFIX)}\*$",
         f"Batch transform jobs of this app: pipeline/batches/batch_transform.py names them {TRANSFORM_JOB_PREFIX}<batch>-..., "
         "one per batch."),
        (rf"^Resource::{arn.format(service='logs')}log-group:/aws/sagemaker/\*$",
         "SageMaker's own log groups (/aws/sagemaker/Endpoints/<name>, /aws/sagemaker/TransformJobs) for the containers "
         "it runs for this endpoint."),
        (rf"^Resource::{arn.format(service='ecs')}task-definition/{_literal(app.dashboard.task_definition.family)}:\*$",
         "Any revision of the dashboard's task definition family (every deploy registers a new revision); RunTask is "
         "also limited to this cluster by an ecs:cluster condition."),
        (rf"^Resource::{arn.format(service='ecs')}service/{_literal(app.stack_name)}-\*/\*$",
         "Read-only ecs:DescribeServices on the services of this app stack's cluster (CloudFormation names it "
         "<stack>-DashboardCluster…), for deploy-app.yml's wait until the rollout is stable."),
        (rf"^Resource::{arn.format(service='cloudformation')}stack/{_literal(app.stack_name)}/\*$",
         "Read-only cloudformation:DescribeStacks on this app stack (any stack id), for deploy-app.yml to read its outputs."),
    ]
    external = {b: "a bucket merchandisers tag photos from (cdk.json s3_source_buckets): read-only, any key"
                for b in config.s3_source_buckets}
    if config.model_data_url:
        external.setdefault(config.model_data_url.removeprefix("s3://").split("/", 1)[0],
                            "the bucket of the model package named in cdk.json model_data_url: read-only")
    for name, why in external.items():
        patterns.append((rf"^Resource::arn:aws:s3:::{_literal(name)}/\*$", f"Objects of {name}, {why}."))
    return patterns


def _accept_wildcards(stack: Stack, patterns: list[tuple[str, str]]) -> None:
    NagSuppressions.add_stack_suppressions(stack, [
        NagPackSuppression(id="AwsSolutions-IAM5", reason=reason, applies_to=[{"regex": f"/{pattern}/"}])
        for pattern, reason in patterns])


def _literal(text: str) -> str:
    """A regular-expression literal that reads the same in Python and JavaScript (cdk-nag runs JavaScript's)."""
    return "".join(f"\\{c}" if c in "\\^$.|?*+()[]{}/" else c for c in text)


# --- everything else, on the resource it is about ------------------------------------------------------

def _accept_app_findings(app: Stack) -> None:
    network, dashboard = app.network, app.dashboard
    if network.flow_log is None and not network.imported:
        _accept(network.vpc, "AwsSolutions-VPC7",
                "Flow logs are off by default (cdk.json vpc_flow_logs: \"reject\" or \"all\" turns them on): CloudWatch "
                "bills $0.50 per GB ingested, and the only inbound path is the ALB, whose metrics feed the alarms.")
    for endpoint in network.interface_endpoints:
        _accept(endpoint, "AwsSolutions-EC23",
                "CDK's interface-endpoint security group: HTTPS from the VPC's own CIDR only, not 0.0.0.0/0 (cdk-nag "
                "cannot read the CIDR, an Fn::GetAtt of the VPC).")
    _accept(app.storage.bucket, "AwsSolutions-S1",
            "No server access logs: every writer is this stack's task or SageMaker role; CloudTrail data events are the "
            "audit trail when needed, without a second bucket and per-request log objects.")
    if dashboard.openai_key is not None:  # openai_key_store ssm: no secret in this stack
        _accept(dashboard.openai_key, "AwsSolutions-SMG4",
                "An OpenAI API key: it is rotated in OpenAI's console and pasted here; a rotation Lambda cannot create one.")
    _accept(dashboard.cluster, "AwsSolutions-ECS4",
            "Container Insights is billed per metric; the alarms use the service and ALB metrics AWS publishes free.")
    _accept(dashboard.task_definition, "AwsSolutions-ECS2",
            "The environment holds settings only (resource names, modes, limits); the one secret, OPENAI_API_KEY, comes "
            "from Secrets Manager (or an SSM SecureString parameter) through the task's `secrets`.")
    _accept(dashboard.alb_security_group, "AwsSolutions-EC23",
            "The dashboard's front door: 443 (and 80, answered with a redirect) from cdk.json allowed_cidrs, default "
            "anywhere; the ALB signs every request in (Cognito or OIDC) before it reaches a task.")
    _accept(dashboard.load_balancer, "AwsSolutions-ELB2",
            "No ALB access logs: they need a log bucket and are billed per stored request; the ALB's metrics feed the "
            "alarms, and the dashboard logs who did what.")
    if dashboard.user_pool is not None:
        _accept(dashboard.user_pool, "AwsSolutions-COG2",
                "MFA (TOTP) is offered, not required: Cognito sets 'required' only when a pool is created, so turning it "
                "on replaces the pool and every account in it; accounts are created by admins (no self sign-up).")
        _accept(dashboard.user_pool, "AwsSolutions-COG8",
                "The Plus feature plan (threat protection) is billed per monthly active user with no free tier; the pool "
                "has admin-created accounts only, a strong password policy and optional TOTP.")


def _accept(construct: IConstruct, rule: str, reason: str) -> None:
    NagSuppressions.add_resource_suppressions(construct, [NagPackSuppression(id=rule, reason=reason)], apply_to_children=True)
