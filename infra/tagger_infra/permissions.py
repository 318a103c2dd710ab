"""Least-privilege IAM statements, as plain functions of the names they are scoped to.

Each statement names the pipeline call that needs it, so a new AWS call in `pipeline/` shows up here
as a missing permission in review rather than as AccessDenied in production. "*" appears only where the
API has no resource-level permissions (listed in docs/deploy.md with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

# What the dashboard writes under the shared bucket (pipeline/store/s3_images.py, async and transform jobs).
APP_PREFIXES = ("uploads/", "normalized/", "thumbnails/", "async/", "transform/")
TRANSFORM_JOB_PREFIX = "tag-b"  # pipeline/batches/batch_transform.py names jobs tag-b<batch>-…
MODEL_PREFIX = "models/"  # deploy-model.yml: sagemaker/package.py --prefix models/<sha>/
BACKLOG_ALARM_SUFFIX = "-HasBacklogWithoutCapacity"  # sagemaker/deploy.py backlog_alarm_name()
# Application Auto Scaling creates this role the first time anyone registers a SageMaker variant in the
# account (deploy.py's first async deploy): the caller needs iam:CreateServiceLinkedRole for it.
SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
SCALING_SERVICE_LINKED_ROLE = f"aws-service-role/{SCALING_SERVICE}/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"


@dataclass(frozen=True)
class Scope:
    """The resources one deployment's roles may touch."""

    stack: Stack
    endpoint_name: str
    bucket_arn: str
    table_arn: str
    queue_arn: str | None = None
    source_buckets: tuple[str, ...] = ()
    endpoint: bool = True  # False (realtime_endpoint false): no endpoint to invoke, start, stop or scale; batch transform only

    def sagemaker_arn(self, resource: str, name: str) -> str:
        # SageMaker ARNs carry resource names in lower case.
        return self.stack.format_arn(service="sagemaker", resource=resource, resource_name=name.lower())

    @property
    def endpoint_arn(self) -> str:
        return self.sagemaker_arn("endpoint", self.endpoint_name)

    @property
    def endpoint_configs_arn(self) -> str:
        return self.sagemaker_arn("endpoint-config", f"{self.endpoint_name}-*")

    @property
    def models_arn(self) -> str:
        return self.sagemaker_arn("model", f"{self.endpoint_name}-*")

    @property
    def backlog_alarm_arn(self) -> str:
        return self.stack.format_arn(service="cloudwatch", resource="alarm", arn_format=ArnFormat.COLON_RESOURCE_NAME,
                                     resource_name=f"{self.endpoint_name}{BACKLOG_ALARM_SUFFIX}")

    @property
    def scaling_service_linked_role_arn(self) -> str:
        return self.stack.format_arn(service="iam", region="", resource="role", resource_name=SCALING_SERVICE_LINKED_ROLE)


def dashboard_task_statements(scope: Scope) -> list[iam.PolicyStatement]:
    """What the dashboard task (and the scheduled `python -m pipeline endpoint …` tasks) may do."""
    s = scope
    endpoint = [
        iam.PolicyStatement(  # captioners/sagemaker.py, sagemaker_async.py
            sid="InvokeThisEndpoint", actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"],
            resources=[s.endpoint_arn]),
        iam.PolicyStatement(  # endpoint.py: status, start (CreateEndpoint from a saved config), stop, async scale-to-zero
            sid="StartStopThisEndpoint",
            actions=["sagemaker:DescribeEndpoint", "sagemaker:CreateEndpoint", "sagemaker:DeleteEndpoint",
                     "sagemaker:UpdateEndpointWeightsAndCapacities"],
            resources=[s.endpoint_arn, s.endpoint_configs_arn]),
    ]
    statements = [
        iam.PolicyStatement(  # endpoint.py: saved_config() reads the newest config deploy.py made (batch transform: its model)
            sid="ReadThisEndpointsConfigs", actions=["sagemaker:DescribeEndpointConfig"], resources=[s.endpoint_configs_arn]),
        iam.PolicyStatement(  # ListEndpointConfigs has no resource-level permissions
            sid="ListEndpointConfigs", actions=["sagemaker:ListEndpointConfigs"], resources=["*"]),
        iam.PolicyStatement(  # batch_transform.py: jobs run on this endpoint's model only; tags need AddTags
            sid="TransformJobsOnThisModel",
            actions=["sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:AddTags"],
            resources=[s.sagemaker_arn("transform-job", f"{TRANSFORM_JOB_PREFIX}*"), s.models_arn]),
        iam.PolicyStatement(  # s3_images.py, async requests/results, transform inputs/outputs
            sid="AppObjects", actions=["s3:GetObject", "s3:PutObject"],
            resources=[f"{s.bucket_arn}/{prefix}*" for prefix in APP_PREFIXES]),
        iam.PolicyStatement(  # listing transform outputs; also turns a missing object into 404 instead of 403
            sid="ListAppPrefixes", actions=["s3:ListBucket"], resources=[s.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in APP_PREFIXES]}}),
        iam.PolicyStatement(  # store/dynamo_store.py (transactions need the per-item actions)
            sid="ThisTable",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                     "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem",
                     "dynamodb:DescribeTable"],
            resources=[s.table_arn, f"{s.table_arn}/index/*"]),
    ]
    if s.endpoint:
        endpoint += [
            iam.PolicyStatement(  # endpoint.py: async min capacity 0 ↔ 1. Scalable-target ARNs carry a generated id.
                sid="EndpointCapacity",
                actions=["application-autoscaling:RegisterScalableTarget", "application-autoscaling:DescribeScalableTargets"],
                resources=["*"]),
            iam.PolicyStatement(  # endpoint.py: last invocation (GetMetricStatistics has no resource-level permissions)
                sid="ReadEndpointMetrics", actions=["cloudwatch:GetMetricStatistics"], resources=["*"]),
        ]
        statements = endpoint[:2] + statements[:3] + endpoint[2:] + statements[3:]  # the order the policy always had
    if s.queue_arn:
        statements.append(iam.PolicyStatement(  # sagemaker_async.py: SNS → SQS completion notices
            sid="AsyncNotices", actions=["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
            resources=[s.queue_arn]))
    if s.source_buckets:
        statements.append(iam.PolicyStatement(  # fetch.py: s3:// rows of a CSV, from the allowed buckets only
            sid="ReadSourcePhotos", actions=["s3:GetObject"], resources=[f"arn:aws:s3:::{b}/*" for b in s.source_buckets]))
    return statements


def model_deploy_statements(scope: Scope, *, execution_role_arn: str) -> list[iam.PolicyStatement]:
    """What deploy-model.yml may do: sagemaker/package.py uploads under models/, sagemaker/deploy.py creates or
    switches this endpoint (tests/test_iam_coverage.py records deploy.py's calls and checks them against this)."""
    s = scope
    return [
        iam.PolicyStatement(  # package.py: upload_file (PutObject / multipart) under models/ only
            sid="UploadPackage", actions=["s3:PutObject"], resources=[f"{s.bucket_arn}/{MODEL_PREFIX}*"]),
        iam.PolicyStatement(  # deploy.py: plan (describe) + create model/config, create or switch the endpoint, keep
            # its instance count after a switch (UpdateEndpointWeightsAndCapacities)
            sid="DeployThisEndpoint",
            actions=["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:CreateEndpointConfig",
                     "sagemaker:DescribeEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint",
                     "sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities"],
            resources=[s.endpoint_arn, s.endpoint_configs_arn, s.models_arn]),
        iam.PolicyStatement(  # CreateModel hands the execution role to SageMaker
            sid="PassExecutionRole", actions=["iam:PassRole"], resources=[execution_role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
        iam.PolicyStatement(  # Describe* have no resource-level permissions. The write actions do take a scalable-target
            # ARN, but its id is generated by AWS at registration (unknown here) and there is no condition key for the
            # resource id or namespace: unscoped (docs/deploy.md: unscoped actions).
            sid="AsyncScaling",
            actions=["application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies",
                     "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget",
                     "application-autoscaling:PutScalingPolicy", "application-autoscaling:DeleteScalingPolicy"],
            resources=["*"]),
        iam.PolicyStatement(  # the first registration in an account creates Application Auto Scaling's SageMaker role
            sid="ScalingServiceLinkedRole", actions=["iam:CreateServiceLinkedRole"], resources=[s.scaling_service_linked_role_arn],
            conditions={"StringEquals": {"iam:AWSServiceName": SCALING_SERVICE}}),
        iam.PolicyStatement(  # deploy.py: the scale-from-zero alarm (put for async; deleted when switching to real-time)
            sid="BacklogAlarm", actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"], resources=[s.backlog_alarm_arn]),
    ]


def sagemaker_execution_statements(scope: Scope, model_data_bucket_arn: str | None, topic_arns: list[str]) -> list[iam.PolicyStatement]:
    """What the endpoint and transform jobs (SageMaker itself) may do with this deployment's data."""
    s = scope
    stack = s.stack
    dlc_repository = f"arn:aws:ecr:{stack.region}:763104351884:repository/huggingface-pytorch-inference"
    statements = [
        iam.PolicyStatement(sid="ReadModelAndRequests", actions=["s3:GetObject"],
                            resources=[f"{s.bucket_arn}/{MODEL_PREFIX}*", f"{s.bucket_arn}/async/input/*", f"{s.bucket_arn}/transform/*"]),
        iam.PolicyStatement(sid="WriteResults", actions=["s3:PutObject"],
                            resources=[f"{s.bucket_arn}/async/output/*", f"{s.bucket_arn}/async/failure/*", f"{s.bucket_arn}/transform/*"]),
        iam.PolicyStatement(sid="PullInferenceImage", actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                            resources=[dlc_repository]),
        iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),  # account-wide by design
        iam.PolicyStatement(sid="ContainerLogs", actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                                          "logs:DescribeLogStreams"],
                            resources=[stack.format_arn(service="logs", resource="log-group", arn_format=ArnFormat.COLON_RESOURCE_NAME,
                                                        resource_name="/aws/sagemaker/*")]),
        iam.PolicyStatement(sid="ContainerMetrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
                            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}}),
    ]
    # An uncompressed model (ModelDataSource S3Prefix) and a transform job's S3Prefix input are listed before they are read.
    statements.append(iam.PolicyStatement(sid="ListModelAndTransformInputs", actions=["s3:ListBucket"], resources=[s.bucket_arn],
                                          conditions={"StringLike": {"s3:prefix": [f"{MODEL_PREFIX}*", "transform/*"]}}))
    if model_data_bucket_arn:
        statements.append(iam.PolicyStatement(sid="ReadModelPackage", actions=["s3:GetObject"], resources=[f"{model_data_bucket_arn}/*"]))
        statements.append(iam.PolicyStatement(sid="ListModelPackage", actions=["s3:ListBucket"], resources=[model_data_bucket_arn]))
    if topic_arns:
        statements.append(iam.PolicyStatement(sid="AsyncNotices", actions=["sns:Publish"], resources=topic_arns))
    return statements
