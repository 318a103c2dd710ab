"""Which AWS permissions the code really uses, and whether the synthesized IAM policies allow them.

- `Recorder` hooks every botocore client created while it is installed (`provide-client-params.*.*`, which
  fires for API calls, waiters, paginators and presigned URLs alike) and turns each call into the IAM
  requests AWS authorizes for it (`requests_for_call`): action, resource ARN, condition keys. A client
  belongs to the role that was active when it was created (`acting_as`), as real credentials do.
- `sagemaker_service_requests` derives what SageMaker itself does with the execution role from the recorded
  CreateModel / CreateEndpointConfig / InvokeEndpointAsync / CreateTransformJob calls.
- `Resolver` turns the CloudFormation template's Ref / Fn::GetAtt / Fn::Join / Fn::Sub into the values moto
  uses here; `role_statements` collects a role's inline and attached policies; `evaluate` is a small IAM
  evaluator (explicit Deny, Allow, Action/NotAction and Resource/NotResource wildcards, the condition
  operators our policies use).

Only identity policies are evaluated: bucket policies, SCPs and permission boundaries are not modelled.
"""

from __future__ import annotations

import hashlib
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlparse

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
SCALING_ROLE = f"role/aws-service-role/{SCALING_SERVICE}/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"

# boto3 client name -> IAM service prefix, where they differ.
IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "cloudwatch": "cloudwatch", "logs": "logs"}


@dataclass(frozen=True)
class Request:
    action: str  # "sagemaker:CreateEndpoint"
    resource: str  # ARN, or "*" for actions without resource-level permissions
    context: tuple[tuple[str, str], ...] = ()  # condition keys, e.g. (("s3:prefix", "uploads/"),)
    via: str = ""  # the API call (or SageMaker's own work) that needs it

    def __str__(self) -> str:
        extra = f" {dict(self.context)}" if self.context else ""
        return f"{self.action} on {self.resource}{extra} (for {self.via})"


@dataclass(frozen=True)
class Call:
    service: str  # boto3 client name
    operation: str  # API operation name, e.g. CreateEndpoint
    params: dict
    region: str


class UnmappedCall(Exception):
    pass


# --- ARNs --------------------------------------------------------------------------------------------

def _arn(service: str, region: str, resource: str, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def sagemaker_arn(region: str, kind: str, name: str) -> str:
    return _arn("sagemaker", region, f"{kind}/{name.lower()}")  # SageMaker ARNs carry names in lower case


def s3_object(bucket: str, key: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}/{key}"


def s3_bucket(bucket: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}"


def s3_uri_object(uri: str) -> str:
    parsed = urlparse(uri)
    return s3_object(parsed.netloc, parsed.path.lstrip("/"))


def queue_arn(url: str, region: str) -> str:
    parts = urlparse(url).path.strip("/").split("/")
    return _arn("sqs", region, parts[-1], parts[-2] if len(parts) > 1 else ACCOUNT)


def scalable_target_arn(region: str, resource_id: str) -> str:
    # AWS gives a registered target a generated id; any stable id stands in for it here.
    return _arn("application-autoscaling", region, f"scalable-target/sgm{hashlib.sha1(resource_id.encode()).hexdigest()[:20]}")


def ecr_repository_arn(image_uri: str) -> str | None:
    match = re.match(r"^(\d+)\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)", image_uri)
    return _arn("ecr", match[2], f"repository/{match[3]}", match[1]) if match else None


# --- API call -> IAM requests ---------------------------------------------------------------------------

SAGEMAKER_RESOURCE = {  # operation -> [(ARN kind, parameter)]
    "CreateModel": [("model", "ModelName")], "DescribeModel": [("model", "ModelName")],
    "CreateEndpointConfig": [("endpoint-config", "EndpointConfigName")],
    "DescribeEndpointConfig": [("endpoint-config", "EndpointConfigName")],
    # Creating / switching an endpoint is checked against the endpoint and the config it runs (stricter
    # than needed if AWS checks the endpoint only; our statements grant both).
    "CreateEndpoint": [("endpoint", "EndpointName"), ("endpoint-config", "EndpointConfigName")],
    "UpdateEndpoint": [("endpoint", "EndpointName"), ("endpoint-config", "EndpointConfigName")],
    "DescribeEndpoint": [("endpoint", "EndpointName")], "DeleteEndpoint": [("endpoint", "EndpointName")],
    "UpdateEndpointWeightsAndCapacities": [("endpoint", "EndpointName")],
    "InvokeEndpoint": [("endpoint", "EndpointName")], "InvokeEndpointAsync": [("endpoint", "EndpointName")],
    "CreateTransformJob": [("transform-job", "TransformJobName"), ("model", "ModelName")],
    "DescribeTransformJob": [("transform-job", "TransformJobName")],
}
UNSCOPED = {  # actions without resource-level permissions: requested on "*"
    ("sagemaker", "ListEndpointConfigs"), ("sagemaker", "ListModels"), ("sagemaker", "ListEndpoints"),
    ("application-autoscaling", "DescribeScalableTargets"), ("application-autoscaling", "DescribeScalingPolicies"),
    ("cloudwatch", "GetMetricStatistics"), ("cloudwatch", "GetMetricData"), ("cloudwatch", "ListMetrics"),
}
SCALABLE_TARGET_OPERATIONS = {"RegisterScalableTarget", "DeregisterScalableTarget", "PutScalingPolicy", "DeleteScalingPolicy"}
S3_ACTION = {"GetObject": "GetObject", "HeadObject": "GetObject", "PutObject": "PutObject", "CreateMultipartUpload": "PutObject",
             "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject", "AbortMultipartUpload": "AbortMultipartUpload",
             "DeleteObject": "DeleteObject"}
DYNAMODB_TABLE_OPERATIONS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable"}
DYNAMODB_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem",
                     "Get": "GetItem"}
SQS_ACTION = {"ReceiveMessage": "ReceiveMessage", "DeleteMessage": "DeleteMessage", "DeleteMessageBatch": "DeleteMessage",
              "ChangeMessageVisibility": "ChangeMessageVisibility", "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
              "SendMessage": "SendMessage", "SendMessageBatch": "SendMessage", "GetQueueAttributes": "GetQueueAttributes"}


def requests_for_call(call: Call) -> list[Request]:
    service, op, p, region = call.service, call.operation, call.params, call.region
    prefix = IAM_PREFIX.get(service, service)
    via = f"{service}.{op}"

    def req(action: str, resource: str, **context: str) -> Request:
        return Request(f"{prefix}:{action}" if ":" not in action else action, resource,
                       tuple(sorted((k.replace("__", ":"), v) for k, v in context.items())), via)

    if (prefix, op) in UNSCOPED:
        return [req(op, "*")]
    if prefix == "sagemaker" and op in SAGEMAKER_RESOURCE:
        out = [req(op, sagemaker_arn(region, kind, p[param])) for kind, param in SAGEMAKER_RESOURCE[op]]
        if op == "CreateModel":  # handing the execution role to SageMaker
            out.append(req("iam:PassRole", p["ExecutionRoleArn"], iam__PassedToService="sagemaker.amazonaws.com"))
        if p.get("Tags"):
            out.append(req("AddTags", out[0].resource))
        return out
    if service == "application-autoscaling" and op in SCALABLE_TARGET_OPERATIONS:
        return [req(op, scalable_target_arn(region, p["ResourceId"]))]
    if service == "cloudwatch" and op in ("PutMetricAlarm", "DeleteAlarms", "DescribeAlarms"):
        names = [p["AlarmName"]] if op == "PutMetricAlarm" else p.get("AlarmNames") or []
        return [req(op, _arn("cloudwatch", region, f"alarm:{name}")) for name in names] or [req(op, "*")]
    if service == "cloudwatch" and op == "PutMetricData":
        return [req(op, "*", cloudwatch__namespace=p["Namespace"])]
    if service == "s3" and op in S3_ACTION:
        return [req(S3_ACTION[op], s3_object(p["Bucket"], p["Key"]))]
    if service == "s3" and op in ("ListObjectsV2", "ListObjects"):
        return [req("ListBucket", s3_bucket(p["Bucket"]), s3__prefix=p.get("Prefix", ""))]
    if service == "s3" and op == "CopyObject":
        source = p["CopySource"] if isinstance(p["CopySource"], dict) else dict(zip(("Bucket", "Key"), p["CopySource"].split("/", 1)))
        return [req("PutObject", s3_object(p["Bucket"], p["Key"])), req("GetObject", s3_object(source["Bucket"], source["Key"]))]
    if service == "dynamodb":
        table = lambda name: _arn("dynamodb", region, f"table/{name}")  # noqa: E731
        if op in DYNAMODB_TABLE_OPERATIONS:
            resource = table(p["TableName"]) + (f"/index/{p['IndexName']}" if p.get("IndexName") else "")
            return [req(op, resource)]
        if op in ("BatchGetItem", "BatchWriteItem"):
            return [req(op, table(name)) for name in p["RequestItems"]]
        if op in ("TransactWriteItems", "TransactGetItems"):  # authorized as the per-item actions
            return [req(DYNAMODB_TRANSACT[kind], table(body["TableName"])) for item in p["TransactItems"] for kind, body in item.items()]
    if service == "sqs" and op in SQS_ACTION:
        return [req(SQS_ACTION[op], queue_arn(p["QueueUrl"], region))]
    if service == "sns" and op == "Publish":
        return [req("Publish", p["TopicArn"])]
    raise UnmappedCall(f"{via}: add its IAM action and resource to tests/support/iam_coverage.py")


def sagemaker_service_requests(calls: Iterable[Call]) -> list[Request]:
    """What SageMaker does as the execution role, for the models, configs, invocations and jobs recorded."""
    out: list[Request] = []
    images: dict[str, str] = {}  # model name -> image
    for call in calls:
        p, region = call.params, call.region
        via = f"SageMaker, after {call.service}.{call.operation}"
        if call.operation == "CreateModel":
            container = p["PrimaryContainer"]
            images[p["ModelName"]] = container["Image"]
            if container.get("ModelDataUrl"):
                out.append(Request("s3:GetObject", s3_uri_object(container["ModelDataUrl"]), (), via))
            source = container.get("ModelDataSource", {}).get("S3DataSource")
            if source:
                out += _prefix_read(source["S3Uri"], via)
            repository = ecr_repository_arn(container["Image"])
            if repository:
                out += [Request(f"ecr:{a}", repository, (), via) for a in ("BatchGetImage", "GetDownloadUrlForLayer")]
            out.append(Request("ecr:GetAuthorizationToken", "*", (), via))
        elif call.operation == "CreateEndpointConfig":
            name = p["EndpointConfigName"]
            out += _logs(region, f"/aws/sagemaker/Endpoints/{name}", via)
            out.append(Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", "/aws/sagemaker/Endpoints"),), via))
            output = (p.get("AsyncInferenceConfig") or {}).get("OutputConfig")
            if output:
                out.append(Request("s3:PutObject", s3_uri_object(output["S3OutputPath"].rstrip("/") + "/0123abcd.out"), (), via))
                if output.get("S3FailurePath"):
                    out.append(Request("s3:PutObject", s3_uri_object(output["S3FailurePath"].rstrip("/") + "/0123abcd-error.out"), (), via))
                for topic in (output.get("NotificationConfig") or {}).values():
                    out.append(Request("sns:Publish", topic, (), via))
        elif call.operation == "InvokeEndpointAsync":
            out.append(Request("s3:GetObject", s3_uri_object(p["InputLocation"]), (), via))
        elif call.operation == "CreateTransformJob":
            out += _prefix_read(p["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"], via)
            out.append(Request("s3:PutObject", s3_uri_object(p["TransformOutput"]["S3OutputPath"].rstrip("/") + "/x.json.out"), (), via))
            out += _logs(region, f"/aws/sagemaker/TransformJobs/{p['TransformJobName']}", via)
    return out


def _prefix_read(uri: str, via: str) -> list[Request]:
    parsed = urlparse(uri)
    prefix = parsed.path.lstrip("/")
    return [Request("s3:ListBucket", s3_bucket(parsed.netloc), (("s3:prefix", prefix),), via),
            Request("s3:GetObject", s3_object(parsed.netloc, prefix.rstrip("/") + "/part-0.json"), (), via)]


def _logs(region: str, group: str, via: str) -> list[Request]:
    group_arn = _arn("logs", region, f"log-group:{group}")
    return [Request("logs:CreateLogGroup", group_arn, (), via),
            *(Request(f"logs:{a}", f"{group_arn}:log-stream:AllTraffic/i-0123", (), via) for a in ("CreateLogStream", "PutLogEvents"))]


# --- recording -----------------------------------------------------------------------------------------

@dataclass
class Recorder:
    calls: dict[str, list[Call]] = field(default_factory=dict)  # role -> calls
    implied: dict[str, list[Request]] = field(default_factory=dict)  # role -> requests AWS makes on the caller's behalf
    unmapped: list[str] = field(default_factory=list)
    scaling_role_exists: bool = False  # Application Auto Scaling's service-linked role (fresh account: no)
    role: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, monkeypatch) -> "Recorder":
        import botocore.session

        original = botocore.session.Session.create_client
        recorder = self

        def create_client(session, service_name, *args, **kwargs):
            client = original(session, service_name, *args, **kwargs)
            role = recorder.role
            if role is not None:  # clients made outside a role (test setup) are not recorded
                client.meta.events.register("provide-client-params.*.*", recorder._hook(role, service_name, client.meta.region_name))
            return client

        monkeypatch.setattr(botocore.session.Session, "create_client", create_client)
        return self

    @contextmanager
    def acting_as(self, role: str):
        previous, self.role = self.role, role
        try:
            yield self
        finally:
            self.role = previous

    def _hook(self, role: str, service: str, region: str):
        def hook(params, model, **_):
            call = Call(service, model.name, dict(params), region)
            with self._lock:
                self.calls.setdefault(role, []).append(call)
                if model.name == "RegisterScalableTarget" and params.get("ServiceNamespace") == "sagemaker" and not self.scaling_role_exists:
                    self.scaling_role_exists = True  # the first registration in the account creates it, as the caller
                    self.implied.setdefault(role, []).append(Request(
                        "iam:CreateServiceLinkedRole", f"arn:{PARTITION}:iam::{ACCOUNT}:{SCALING_ROLE}", (("iam:AWSServiceName", SCALING_SERVICE),),
                        "application-autoscaling.RegisterScalableTarget (the first in the account)"))
            return None

        return hook

    def requests(self, role: str) -> list[Request]:
        out: list[Request] = []
        for call in self.calls.get(role, []):
            try:
                out += requests_for_call(call)
            except UnmappedCall as error:
                self.unmapped.append(str(error))
        return out + self.implied.get(role, [])

    def all_calls(self) -> list[Call]:
        return [c for calls in self.calls.values() for c in calls]


# --- the synthesized policies ------------------------------------------------------------------------------

class Resolver:
    """CloudFormation intrinsics -> the values this test's moto world uses (physical names made from logical ids)."""

    def __init__(self, template: dict, *, region: str = REGION, account: str = ACCOUNT) -> None:
        self.resources = template.get("Resources", {})
        self.region, self.account = region, account

    def name(self, logical: str) -> str:
        resource = self.resources[logical]
        props, kind = resource.get("Properties", {}), resource["Type"]
        explicit = {"AWS::S3::Bucket": "BucketName", "AWS::DynamoDB::Table": "TableName", "AWS::SQS::Queue": "QueueName",
                    "AWS::SNS::Topic": "TopicName", "AWS::IAM::Role": "RoleName", "AWS::ECS::Cluster": "ClusterName",
                    "AWS::ECR::Repository": "RepositoryName"}.get(kind)
        value = props.get(explicit) if explicit else None
        if isinstance(value, str):
            return value
        return logical.lower()[:63] if kind == "AWS::S3::Bucket" else logical

    def ref(self, logical: str) -> str:
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": self.region, "AWS::AccountId": self.account,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "stack"}
        if logical in pseudo:
            return pseudo[logical]
        kind = self.resources[logical]["Type"]
        name = self.name(logical)
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
        if kind == "AWS::SNS::Topic":
            return _arn("sns", self.region, name, self.account)
        return name

    def get_att(self, logical: str, attribute: str) -> str:
        kind, name = self.resources[logical]["Type"], self.name(logical)
        arns = {"AWS::S3::Bucket": s3_bucket(name), "AWS::DynamoDB::Table": _arn("dynamodb", self.region, f"table/{name}", self.account),
                "AWS::SQS::Queue": _arn("sqs", self.region, name, self.account), "AWS::SNS::Topic": _arn("sns", self.region, name, self.account),
                "AWS::IAM::Role": f"arn:{PARTITION}:iam::{self.account}:role/{name}",
                "AWS::ECS::Cluster": _arn("ecs", self.region, f"cluster/{name}", self.account),
                "AWS::ECR::Repository": _arn("ecr", self.region, f"repository/{name}", self.account)}
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute in ("QueueName", "TopicName", "BucketName"):
            return name
        if attribute == "QueueUrl":
            return self.ref(logical)
        return f"<unresolved {logical}.{attribute}>"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            [(key, arg)] = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Join":
                return arg[0].join(str(self.resolve(part)) for part in self.resolve(arg[1]))
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

                def substitute(match: re.Match) -> str:
                    token = match[1]
                    if token in variables:
                        return str(variables[token])
                    if "." in token and not token.startswith("AWS::"):
                        return self.get_att(*token.split(".", 1))
                    return self.ref(token)

                return re.sub(r"\$\{([^}!]+)\}", substitute, text)
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(arg[0])]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if key.startswith("Fn::"):
                return f"<unresolved {key}>"
        return {k: self.resolve(v) for k, v in value.items()}


def role_statements(template: dict, logical_prefix: str) -> list[dict]:
    """Every statement of one role (inline policies + AWS::IAM::Policy resources attached to it), resolved."""
    resources = template["Resources"]
    [logical] = [k for k, r in resources.items() if r["Type"] == "AWS::IAM::Role" and k.startswith(logical_prefix)]
    role = resources[logical]["Properties"]
    assert not role.get("ManagedPolicyArns"), "managed policies are not evaluated here"
    statements = [s for policy in role.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": logical} in resource["Properties"].get("Roles", []):
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    return Resolver(template).resolve(statements)


# --- evaluation ------------------------------------------------------------------------------------------

def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    """IAM wildcards: `*` any run of characters (":" and "/" included), `?` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def _condition_holds(operator: str, key: str, expected, context: dict[str, str]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in context:
        return if_exists or base.startswith(("StringNot", "ArnNot"))
    actual = context[key]
    expected = [str(e) for e in _as_list(expected)]
    tests = {
        "StringEquals": lambda e: actual == e, "StringNotEquals": lambda e: actual != e,
        "StringEqualsIgnoreCase": lambda e: actual.lower() == e.lower(),
        "StringLike": lambda e: _wildcard(e, actual, case_sensitive=True),
        "StringNotLike": lambda e: not _wildcard(e, actual, case_sensitive=True),
        "ArnEquals": lambda e: actual == e, "ArnLike": lambda e: _wildcard(e, actual, case_sensitive=True),
        "Bool": lambda e: actual.lower() == e.lower(),
    }
    if base not in tests:
        raise NotImplementedError(f"condition operator {operator}")
    if base.startswith(("StringNot", "ArnNot")):
        return all(tests[base](e) for e in expected)
    return any(tests[base](e) for e in expected)


def statement_matches(statement: dict, request: Request) -> bool:
    if "Action" in statement:
        if not any(_wildcard(a, request.action, case_sensitive=False) for a in _as_list(statement["Action"])):
            return False
    elif any(_wildcard(a, request.action, case_sensitive=False) for a in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wildcard(r, request.resource, case_sensitive=True) for r in _as_list(statement["Resource"])):
            return False
    elif any(_wildcard(r, request.resource, case_sensitive=True) for r in _as_list(statement.get("NotResource", []))):
        return False
    context = dict(request.context)
    return all(_condition_holds(operator, key, expected, context)
               for operator, block in statement.get("Condition", {}).items() for key, expected in block.items())


def evaluate(statements: list[dict], request: Request) -> str:
    """"allow", "explicit deny" or "implicit deny"."""
    matching = [s for s in statements if statement_matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return "explicit deny"
    return "allow" if any(s["Effect"] == "Allow" for s in matching) else "implicit deny"


def denied(statements: list[dict], requests: Iterable[Request]) -> list[str]:
    """Each distinct request the statements do not allow, as a readable line."""
    seen, out = set(), []
    for request in requests:
        key = (request.action, request.resource, request.context)
        if key in seen:
            continue
        seen.add(key)
        decision = evaluate(statements, request)
        if decision != "allow":
            out.append(f"{decision}: {request}")
    return out


def actions(requests: Iterable[Request]) -> set[str]:
    return {r.action for r in requests}

