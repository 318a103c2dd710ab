"""SageMaker's side: its execution role, async completion notices (SNS → SQS), and — when a model
package is named in cdk.json — the model and an endpoint config the admin page can start.

The endpoint itself is not a CloudFormation resource: admins start and stop it (pipeline/admin/endpoint.py),
and sagemaker/deploy.py (deploy-model.yml) rolls out new model code. An endpoint owned by a stack would
be recreated or fight those changes on every deploy.
"""

from __future__ import annotations

import hashlib
import json

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from pipeline.admin.endpoint import VARIANT
from tagger_infra.checks import accept_findings
from tagger_infra.config import InfraConfig
from tagger_infra.permissions import Scope, sagemaker_execution_statements

# As sagemaker/deploy.py (tests/test_iam_coverage.py checks they agree): the ~16 GB model needs longer than
# SageMaker's defaults to download and to answer the first /ping (allowed: 60-3600 s).
STARTUP_HEALTH_CHECK_TIMEOUT_S = 1800
MODEL_DATA_DOWNLOAD_TIMEOUT_S = 1800


class Captioning(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, *, bucket_arn: str, bucket_name: str,
                 table_arn: str) -> None:
        super().__init__(scope, construct_id)
        self.queue: sqs.Queue | None = None
        self.dead_letters: sqs.Queue | None = None
        topics: list[sns.Topic] = []
        if config.async_inference:
            topics = [sns.Topic(self, name, enforce_ssl=True) for name in ("AsyncSuccess", "AsyncError")]
            # Notices nobody collects (their task was replaced) end here instead of circling for a day. A task
            # hands other tasks' notices back (sagemaker_async.py), so the owner gets a notice within a few
            # receives; 14 per possible task keeps the chance of a misrouted notice below 1e-6.
            self.dead_letters = sqs.Queue(self, "AsyncNoticesDlq", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                                          retention_period=Duration.days(14))
            self.queue = sqs.Queue(self, "AsyncNotices", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                                   retention_period=Duration.days(1), visibility_timeout=Duration.seconds(60),
                                   dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=min(1000, 14 * config.max_count), queue=self.dead_letters))
            for topic in topics:
                topic.add_subscription(subscriptions.SqsSubscription(self.queue, raw_message_delivery=True))
                accept_findings(topic, {"CKV_AWS_26": "SageMaker publishes here and cannot use the AWS-managed SNS key; "
                                                      "messages carry the S3 location of a result, not the result."})
            for queue in (self.queue, self.dead_letters):
                accept_findings(queue, {"CKV_AWS_27": "Encrypted with SQS-managed SSE (checkov counts KMS only); SNS cannot "
                                                      "deliver to a queue under the AWS-managed SQS KMS key."})
        self.topics = topics

        self.scope = Scope(stack=Stack.of(self), endpoint_name=config.endpoint_name, bucket_arn=bucket_arn, table_arn=table_arn,
                           queue_arn=self.queue.queue_arn if self.queue else None, source_buckets=tuple(config.s3_source_buckets),
                           endpoint=config.realtime_endpoint)
        model_bucket = config.model_data_url.removeprefix("s3://").split("/", 1)[0] if config.model_data_url else None
        self.execution_role = iam.Role(
            self, "ExecutionRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker endpoint and transform jobs of the product-tagging dashboard",
            inline_policies={"endpoint": iam.PolicyDocument(statements=sagemaker_execution_statements(
                self.scope, f"arn:aws:s3:::{model_bucket}" if model_bucket and model_bucket != bucket_name else None,
                [t.topic_arn for t in topics]))},
        )
        self.endpoint_config_name: str | None = None
        if config.model_data_url:
            self._model_and_config(config, bucket_name)

    def _model_and_config(self, config: InfraConfig, bucket_name: str) -> None:
        """Names follow deploy.py's convention (<endpoint>-<mode>-<hash>) so `endpoint start` finds the config."""
        environment = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "LOAD_IN_8BIT": "false"}  # as deploy.py's container_definition
        if config.hf_model_id:  # code-only package: inference.py loads the Hub model at the pinned commit
            # Not HF_MODEL_ID: with it the toolkit downloads the model itself and never imports code/inference.py.
            environment |= {"BLIP2_MODEL_ID": config.hf_model_id, "BLIP2_MODEL_REVISION": config.hf_model_revision}
        body = {"image": config.image_uri, "data": config.model_data_url, "env": environment, "mode": config.sagemaker_mode,
                "instance": config.instance_type,  # the timeouts are in the hash: a changed config needs a new name
                "timeouts": [STARTUP_HEALTH_CHECK_TIMEOUT_S, MODEL_DATA_DOWNLOAD_TIMEOUT_S]}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
        model_name = f"{config.endpoint_name}-cdk-{digest}"
        model = sagemaker.CfnModel(
            self, "Model", model_name=model_name, execution_role_arn=self.execution_role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=config.image_uri, model_data_url=config.model_data_url, environment=environment))
        async_config = None
        if config.async_inference:
            async_config = sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
                output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                    s3_output_path=f"s3://{bucket_name}/async/output/", s3_failure_path=f"s3://{bucket_name}/async/failure/",
                    notification_config=sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                        success_topic=self.topics[0].topic_arn, error_topic=self.topics[1].topic_arn)),
                client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(max_concurrent_invocations_per_instance=4))
        self.endpoint_config_name = f"{config.endpoint_name}-{config.sagemaker_mode}-cdk-{digest}"
        endpoint_config = sagemaker.CfnEndpointConfig(
            self, "EndpointConfig", endpoint_config_name=self.endpoint_config_name,
            production_variants=[sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT, model_name=model_name, instance_type=config.instance_type, initial_instance_count=1,
                container_startup_health_check_timeout_in_seconds=STARTUP_HEALTH_CHECK_TIMEOUT_S,
                model_data_download_timeout_in_seconds=MODEL_DATA_DOWNLOAD_TIMEOUT_S)],
            async_inference_config=async_config)
        endpoint_config.node.add_dependency(model)
        accept_findings(model, {"CKV_AWS_370": "No network isolation: with a code-only artifact the handler downloads the "
                                               "pinned BLIP-2 revision from the Hugging Face Hub at start-up."})
