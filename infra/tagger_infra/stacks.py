"""Two stacks: the registry (ECR + the app-deploy role) exists before the first image is pushed; the app
stack runs that image. `python -m pipeline estimate` and docs/deploy.md price what they keep running."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from tagger_infra.captioning import Captioning
from tagger_infra.checks import accept_findings
from tagger_infra.config import InfraConfig
from tagger_infra.dashboard import Dashboard
from tagger_infra.github import cdk_bootstrap_roles, github_provider_arn, github_role
from tagger_infra.monitoring import Monitoring, metrics_namespace
from tagger_infra.nag import acknowledge
from tagger_infra.network import Network
from tagger_infra.permissions import model_deploy_statements
from tagger_infra.schedules import EndpointSchedules
from tagger_infra.storage import Storage


class RegistryStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        Tags.of(self).add("app", config.app_name)
        self.repository = ecr.Repository(
            self, "Images", repository_name=f"{config.app_name}/dashboard", image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,  # tags are commit SHAs: one tag, one image, forever
            encryption=ecr.RepositoryEncryption.AES_256, removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[ecr.LifecycleRule(description="keep the 20 newest images", max_image_count=20)])
        accept_findings(self.repository, {
            "CKV_AWS_136": "Encrypted at rest with AES-256 (ECR's default); the image holds code, no secrets or data.",
        })
        self.provider_arn = None
        if config.github_repo:
            self.provider_arn = github_provider_arn(self, config.github_oidc_provider_arn)
            role = github_role(self, "AppDeployRole", provider_arn=self.provider_arn, repo=config.github_repo,
                               subject="ref:refs/heads/main", description="deploy-app.yml: push the image, cdk deploy the app stack")
            self.repository.grant_push(role)
            role.add_to_policy(iam.PolicyStatement(sid="CdkDeploy", actions=["sts:AssumeRole"], resources=cdk_bootstrap_roles(self)))
            # deploy-app.yml reads the app stack's outputs, then waits for its service. The cluster has no name of its
            # own: CloudFormation names it <app stack>-DashboardCluster…, hence the stack-name prefix.
            app_stack = _title(config.app_name)
            role.add_to_policy(iam.PolicyStatement(sid="ReadAppStack", actions=["cloudformation:DescribeStacks"], resources=[
                self.format_arn(service="cloudformation", resource="stack", resource_name=f"{app_stack}/*")]))
            role.add_to_policy(iam.PolicyStatement(sid="WaitForService", actions=["ecs:DescribeServices"], resources=[
                self.format_arn(service="ecs", resource="service", resource_name=f"{app_stack}-*/*")]))
            self.app_deploy_role = role
            CfnOutput(self, "AppDeployRoleArn", value=role.role_arn)
        CfnOutput(self, "RepositoryUri", value=self.repository.repository_uri)


class AppStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, *, repository: ecr.IRepository,
                 provider_arn: str | None, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        Tags.of(self).add("app", config.app_name)
        self.config = config
        self.network = Network(self, "Network", config)
        self.storage = Storage(self, "Storage", config)
        bucket = self.storage.bucket
        self.captioning = Captioning(self, "Captioning", config, bucket_arn=bucket.bucket_arn, bucket_name=bucket.bucket_name,
                                     table_arn=self.storage.table.table_arn)
        self.dashboard = Dashboard(self, "Dashboard", config, network=self.network, repository=repository,
                                   permissions=self.captioning.scope, environment=self._app_environment())
        # The endpoint's clock (auto-stop, business-hours start/stop); none without an endpoint (realtime_endpoint false)
        self.schedules = (EndpointSchedules(self, "EndpointSchedules", config, dashboard=self.dashboard, network=self.network)
                          if config.realtime_endpoint else None)
        self.monitoring = Monitoring(self, "Monitoring", config, dashboard=self.dashboard)
        if config.github_repo and provider_arn:
            self._model_deploy_role(provider_arn)
        self._outputs()

    def _outputs(self) -> None:
        """What people and workflows need after a deploy (docs/deploy.md says where each goes)."""
        d = self.dashboard
        outputs = {
            "DashboardUrl": f"https://{self.config.domain_name}",
            "ClusterName": d.cluster.cluster_name, "ServiceName": d.service.service_name,
            "BucketName": self.storage.bucket.bucket_name, "SageMakerRoleArn": self.captioning.execution_role.role_arn,
        }
        if d.openai_key is not None:
            outputs["OpenAiSecretArn"] = d.openai_key.secret_arn
        else:  # openai_key_store ssm: the parameter the operator created before deploying
            outputs["OpenAiKeyParameter"] = self.config.openai_key_parameter_name
        if self.captioning.queue is not None:
            outputs["AsyncSuccessTopic"], outputs["AsyncErrorTopic"] = (t.topic_arn for t in self.captioning.topics)
        if getattr(self, "model_deploy_role", None) is not None:
            outputs["ModelDeployRoleArn"] = self.model_deploy_role.role_arn
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

    def _app_environment(self) -> dict[str, str]:
        """The dashboard's Settings (docs/settings.md), pointing at this stack's resources."""
        c, bucket = self.config, self.storage.bucket.bucket_name
        env = {
            "AUTH_MODE": "alb", "ADMIN_EMAILS": json.dumps(c.admin_emails),  # list settings are JSON
            "STORE": "dynamodb", "DYNAMODB_TABLE": c.dynamodb_table, "IMAGE_BUCKET": bucket, "DATA_DIR": "/app/data",
            "CAPTIONER": "sagemaker-async" if c.async_inference else "sagemaker",
            "SAGEMAKER_ENDPOINT": c.endpoint_name, "SAGEMAKER_MODE": c.sagemaker_mode, "SAGEMAKER_INSTANCE_TYPE": c.instance_type,
            "SAGEMAKER_ASYNC_S3": f"s3://{bucket}/async", "SAGEMAKER_TRANSFORM_S3": f"s3://{bucket}/transform",
            "TRANSFORM_INSTANCE_TYPE": c.instance_type, "AUTOSTOP_IDLE_MINUTES": str(c.autostop_idle_minutes),
            "AWS_REGION": self.region, "S3_ALLOWED_BUCKETS": json.dumps(c.s3_source_buckets),
            # EMF metrics for the pipeline alarms and dashboard (custom metrics are billed: none without them)
            "METRICS_FORMAT": "emf" if c.pipeline_monitoring else "off", "METRICS_NAMESPACE": metrics_namespace(c),
        }
        if self.captioning.queue is not None:
            env["ASYNC_SQS_QUEUE_URL"] = self.captioning.queue.queue_url
        if not c.realtime_endpoint:  # no endpoint: nothing to start on the Admin page, every batch a transform job
            env["ENDPOINT_ENABLED"] = "false"
            env["TRANSFORM_THRESHOLD"] = "1"
        if c.openai_batch_deadline_hours is not None:
            env["OPENAI_BATCH_DEADLINE_S"] = str(round(c.openai_batch_deadline_hours * 3600))
        if c.profile:
            env["DEPLOYMENT_PROFILE"] = c.profile  # the Admin page prices this deployment's always-on shape
        return env

    def _model_deploy_role(self, provider_arn: str) -> None:
        """deploy-model.yml: upload the package under models/ and run sagemaker/deploy.py, behind an approval."""
        c, scope = self.config, self.captioning.scope
        role = github_role(self, "ModelDeployRole", provider_arn=provider_arn, repo=c.github_repo, subject="environment:model-production",
                           description="deploy-model.yml: package + sagemaker/deploy.py for this endpoint only")
        for statement in model_deploy_statements(scope, execution_role_arn=self.captioning.execution_role.role_arn):
            role.add_to_policy(statement)
        accept_findings(role.node.find_child("DefaultPolicy"), {
            "CKV_AWS_111": "Only application-autoscaling actions are unscoped (scalable targets and policies have ARNs with "
                           "AWS-generated ids); deploy.py uses them for this endpoint's async scale-to-zero."})
        self.model_deploy_role = role


def build(app, config: InfraConfig) -> tuple[RegistryStack, AppStack]:
    from aws_cdk import Environment

    env = Environment(account=config.account, region=config.region) if config.account else Environment(region=config.region)
    registry = RegistryStack(app, f"{_title(config.app_name)}Registry", config, env=env)
    stack = AppStack(app, _title(config.app_name), config, repository=registry.repository, provider_arn=registry.provider_arn, env=env)
    acknowledge(registry, stack)  # cdk-nag findings kept on purpose, with reasons (tagger_infra/nag.py)
    return registry, stack


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
