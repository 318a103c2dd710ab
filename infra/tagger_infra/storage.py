"""The shared bucket (photos, async and transform traffic, model packages) and the DynamoDB table."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from pipeline.store.dynamo_store import table_definition
from tagger_infra.checks import accept_findings
from tagger_infra.config import InfraConfig


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self, "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                # Browser uploads are only the raw input of a batch: normalized copies are kept instead.
                s3.LifecycleRule(id="expire-uploads", prefix="uploads/", expiration=Duration.days(config.upload_expiry_days)),
                s3.LifecycleRule(id="expire-async", prefix="async/", expiration=Duration.days(config.transfer_expiry_days)),
                s3.LifecycleRule(id="expire-transform", prefix="transform/", expiration=Duration.days(config.transfer_expiry_days)),
                s3.LifecycleRule(id="abort-multipart", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
        )
        accept_findings(self.bucket, {
            "CKV_AWS_18": "No server access logs: every writer is this stack's task role; CloudTrail data events are the audit "
                          "trail when needed, without a second bucket and per-request log objects.",
            "CKV_AWS_21": "No versioning: photos are keyed by content hash (a new photo is a new key), uploads must really "
                          "disappear at their expiry, and old versions would be paid for silently.",
        })
        self.table = self._table(config.dynamodb_table)
        accept_findings(self.table, {
            "CKV_AWS_119": "Encrypted with the AWS-managed KMS key (aws/dynamodb). A customer key costs $1/month plus "
                           "requests for captions and tags that are internal, not personal data.",
        })

    def _table(self, name: str) -> dynamodb.Table:
        """The same keys and index the store creates for itself in tests (`table_definition`), plus PITR."""
        spec = table_definition(name)
        keys = {k["KeyType"]: k["AttributeName"] for k in spec["KeySchema"]}
        string = dynamodb.AttributeType.STRING
        table = dynamodb.Table(
            self, "Table", table_name=name,
            partition_key=dynamodb.Attribute(name=keys["HASH"], type=string),
            sort_key=dynamodb.Attribute(name=keys["RANGE"], type=string),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for index in spec["GlobalSecondaryIndexes"]:
            index_keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            table.add_global_secondary_index(
                index_name=index["IndexName"],
                partition_key=dynamodb.Attribute(name=index_keys["HASH"], type=string),
                sort_key=dynamodb.Attribute(name=index_keys["RANGE"], type=string),
                projection_type=dynamodb.ProjectionType[index["Projection"]["ProjectionType"]],
            )
        return table
