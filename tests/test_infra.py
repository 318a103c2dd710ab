"""The CDK app (infra/): synthesized here, its security-relevant properties asserted with
aws_cdk.assertions, and its templates put through cfn-lint and checkov; the workflows through actionlint.

Two deployments are synthesized once each: cdk.json as shipped, and VARIANT (async, private subnets
with interface endpoints, OIDC, Fargate Spot, GitHub roles, model defined by CDK).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.infra import INFRA, SHARED_ALB, VARIANT, fixed_shape, profile_overrides, synth

from aws_cdk.assertions import Match, Template

from pipeline.admin.costs import PROFILES_FIXED_FIELDS, PriceTable, fixed_infra_costs, profile_assumptions
from pipeline.store.dynamo_store import table_definition

ROOT = INFRA.parent


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("cdk-variant"), VARIANT)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    """Every deployment profile, synthesized once (the shared one against SHARED_ALB)."""
    from tagger_infra.config import PROFILES

    return {name: synth(tmp_path_factory.mktemp(f"cdk-{name}"), profile_overrides(name)) for name in PROFILES}


@pytest.fixture(scope="module")
def app(shipped):
    return Template.from_stack(shipped.app)


@pytest.fixture(scope="module")
def app_variant(variant):
    return Template.from_stack(variant.app)


def resources(template: Template, kind: str) -> dict[str, dict]:
    return template.find_resources(kind)


def only(template: Template, kind: str) -> dict:
    found = list(resources(template, kind).values())
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]["Properties"]


def statements_of(template: Template, role_logical_prefix: str) -> list[dict]:
    """All statements of a role's inline policies and of the AWS::IAM::Policy resources attached to it."""
    out = []
    for logical_id, role in resources(template, "AWS::IAM::Role").items():
        if logical_id.startswith(role_logical_prefix):
            for policy in role["Properties"].get("Policies", []):
                out += policy["PolicyDocument"]["Statement"]
            for policy in resources(template, "AWS::IAM::Policy").values():
                if {"Ref": logical_id} in policy["Properties"]["Roles"]:
                    out += policy["Properties"]["PolicyDocument"]["Statement"]
    assert out, f"no role {role_logical_prefix}"
    return out


def as_list(value):
    return value if isinstance(value, list) else [value]


# --- storage -------------------------------------------------------------------------------------

def test_bucket_is_private_encrypted_tls_only_and_expires_uploads(app, shipped):
    bucket = only(app, "AWS::S3::Bucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["Prefix"]: r for r in bucket["LifecycleConfiguration"]["Rules"] if "Prefix" in r}
    assert rules["uploads/"]["ExpirationInDays"] == shipped.config.upload_expiry_days == 7
    assert rules["async/"]["ExpirationInDays"] == rules["transform/"]["ExpirationInDays"] == 14
    assert "normalized/" not in rules  # the photos people review stay
    [policy] = resources(app, "AWS::S3::BucketPolicy").values()
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and deny[0]["Principal"] == {"AWS": "*"}
    assert not [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow" and s.get("Principal") == "*"]


def test_upload_expiry_comes_from_the_context(tmp_path):
    deployed = synth(tmp_path, {"upload_expiry_days": 2})
    bucket = only(Template.from_stack(deployed.app), "AWS::S3::Bucket")
    assert {r.get("Prefix"): r.get("ExpirationInDays") for r in bucket["LifecycleConfiguration"]["Rules"]}["uploads/"] == 2


def test_table_matches_the_store_on_demand_with_point_in_time_recovery(app):
    table = only(app, "AWS::DynamoDB::Table")
    spec = table_definition("product-tagging")
    assert table["TableName"] == "product-tagging"
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["KeySchema"] == spec["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(spec["AttributeDefinitions"], key=str)
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "GSI1" and index["KeySchema"] == spec["GlobalSecondaryIndexes"][0]["KeySchema"]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert table["SSESpecification"]["SSEEnabled"] is True and table["DeletionProtectionEnabled"] is True


# --- network -------------------------------------------------------------------------------------

def test_default_network_has_no_nat_and_tasks_in_public_subnets(app):
    app.resource_count_is("AWS::EC2::NatGateway", 0)
    app.resource_count_is("AWS::EC2::VPCEndpoint", 2)  # S3 + DynamoDB gateway endpoints (free)
    gateway = [e["Properties"] for e in resources(app, "AWS::EC2::VPCEndpoint").values()]
    assert all(e.get("VpcEndpointType", "Gateway") == "Gateway" for e in gateway)
    service = only(app, "AWS::ECS::Service")
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "ENABLED"


def test_private_layouts_cost_what_they_say(app_variant, tmp_path):
    interface = [e for e in resources(app_variant, "AWS::EC2::VPCEndpoint").values() if e["Properties"].get("VpcEndpointType") == "Interface"]
    assert len(interface) == 10  # 9 APIs + SQS for async notices
    assert only(app_variant, "AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    app_variant.resource_count_is("AWS::EC2::NatGateway", 0)
    nat = Template.from_stack(synth(tmp_path, {"network": "private-nat"}).app)
    nat.resource_count_is("AWS::EC2::NatGateway", 1)


# --- the dashboard service -----------------------------------------------------------------------

def test_task_is_arm64_half_vcpu_read_only_and_gets_the_key_as_a_secret(app):
    task = only(app, "AWS::ECS::TaskDefinition")
    assert task["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
    assert (task["Cpu"], task["Memory"]) == ("512", "1024")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    [container] = task["ContainerDefinitions"]
    assert container["ReadonlyRootFilesystem"] is True
    assert [s["Name"] for s in container["Secrets"]] == ["OPENAI_API_KEY"]
    assert "OPENAI_API_KEY" not in {e["Name"] for e in container["Environment"]}
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["AUTH_MODE"] == "alb" and env["STORE"] == "dynamodb" and env["CAPTIONER"] == "sagemaker"
    assert json.loads(env["ADMIN_EMAILS"]) == ["admin@example.com"]
    assert container["PortMappings"][0]["ContainerPort"] == 8501
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert only(app, "AWS::Logs::LogGroup")["RetentionInDays"] == 30


def test_settings_the_stack_sets_are_real_settings(app_variant):
    from pipeline.settings import Settings

    [container] = only(app_variant, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    known = {name.upper() for name in Settings.model_fields} | {"HOME", "AWS_REGION"}
    names = {e["Name"] for e in container["Environment"]} | {s["Name"] for s in container["Secrets"]}
    assert names <= known, names - known
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["CAPTIONER"] == "sagemaker-async" and "ASYNC_SQS_QUEUE_URL" in env


def test_service_capacity_spot_option_and_autoscaling(app, app_variant):
    assert only(app, "AWS::ECS::Service")["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE", "Weight": 1}]
    assert only(app_variant, "AWS::ECS::Service")["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    target = only(app, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    assert only(app, "AWS::ECS::Service")["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}


def test_alb_keeps_websockets_open_redirects_http_and_signs_users_in(app, app_variant):
    lb = only(app, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    assert int(attributes["idle_timeout.timeout_seconds"]) >= 300
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    listeners = {l["Properties"]["Port"]: l["Properties"] for l in resources(app, "AWS::ElasticLoadBalancingV2::Listener").values()}
    assert listeners.keys() == {80, 443}
    assert listeners[80]["DefaultActions"] == [{"Type": "redirect", "RedirectConfig": {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"}}]
    assert listeners[443]["Protocol"] == "HTTPS"
    assert [a["Type"] for a in listeners[443]["DefaultActions"]] == ["authenticate-cognito", "forward"]
    oidc = {l["Properties"]["Port"]: l["Properties"] for l in resources(app_variant, "AWS::ElasticLoadBalancingV2::Listener").values()}[443]
    assert [a["Type"] for a in oidc["DefaultActions"]] == ["authenticate-oidc", "forward"]
    assert "resolve:secretsmanager:tagging/oidc" in json.dumps(oidc)  # client secret resolved by CloudFormation, not in the template
    group = only(app, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert group["HealthCheckPath"] == "/_stcore/health" and group["TargetType"] == "ip"
    sticky = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
    assert sticky["stickiness.enabled"] == "true" and sticky["stickiness.type"] == "lb_cookie"
    app.has_resource_properties("AWS::CertificateManager::Certificate", {"DomainName": "tagging.example.com", "ValidationMethod": "DNS"})
    app.has_resource_properties("AWS::Cognito::UserPoolClient", {"CallbackURLs": ["https://tagging.example.com/oauth2/idpresponse"],
                                                                 "GenerateSecret": True})
    assert only(app, "AWS::Cognito::UserPool")["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True


def test_only_the_alb_reaches_the_tasks(app):
    groups = resources(app, "AWS::EC2::SecurityGroupIngress")
    task_rules = [g["Properties"] for g in groups.values() if g["Properties"].get("FromPort") == 8501]
    assert task_rules and all("SourceSecurityGroupId" in r for r in task_rules)
    for group in resources(app, "AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("FromPort") in (80, 443), rule  # nothing else is open to an address range


# --- least privilege ------------------------------------------------------------------------------

UNSCOPED_OK = {"sagemaker:ListEndpointConfigs", "application-autoscaling:RegisterScalableTarget",
               "application-autoscaling:DescribeScalableTargets", "cloudwatch:GetMetricStatistics"}


def test_task_role_is_scoped_to_this_endpoint_bucket_prefixes_and_table(app):
    statements = statements_of(app, "DashboardTaskRole")
    for statement in statements:
        actions = set(as_list(statement["Action"]))
        assert not any(a.endswith(":*") or a == "*" for a in actions), actions
        if as_list(statement["Resource"]) == ["*"]:
            assert actions <= UNSCOPED_OK, actions
    by_sid = {s["Sid"]: s for s in statements}
    invoke = json.dumps(by_sid["InvokeThisEndpoint"]["Resource"])
    assert ":endpoint/blip2-endpoint" in invoke and "*" not in invoke
    assert set(as_list(by_sid["InvokeThisEndpoint"]["Action"])) == {"sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"}
    lifecycle = json.dumps(by_sid["StartStopThisEndpoint"]["Resource"])
    assert ":endpoint/blip2-endpoint" in lifecycle and ":endpoint-config/blip2-endpoint-*" in lifecycle
    objects = [json.dumps(r) for r in as_list(by_sid["AppObjects"]["Resource"])]
    assert len(objects) == 5 and all(re.search(r'"/(uploads|normalized|thumbnails|async|transform)/\*"', r) for r in objects)
    assert by_sid["ListAppPrefixes"]["Condition"]["StringLike"]["s3:prefix"] == [
        "uploads/*", "normalized/*", "thumbnails/*", "async/*", "transform/*"]
    table = json.dumps(by_sid["ThisTable"]["Resource"])
    assert "StorageTable" in table and "/index/*" in table
    transform = json.dumps(by_sid["TransformJobsOnThisModel"]["Resource"])
    assert ":transform-job/tag-b*" in transform and ":model/blip2-endpoint-*" in transform


def test_variant_roles_add_only_their_own_scoped_grants(app_variant):
    statements = {s["Sid"]: s for s in statements_of(app_variant, "DashboardTaskRole")}
    assert "AsyncNotices" in statements and "Fn::GetAtt" in json.dumps(statements["AsyncNotices"]["Resource"])
    assert statements["ReadSourcePhotos"]["Resource"] == "arn:aws:s3:::acme-product-photos/*"
    execution = {s["Sid"]: s for s in statements_of(app_variant, "CaptioningExecutionRole")}
    assert execution["ReadModelPackage"]["Resource"] == "arn:aws:s3:::acme-models/*"
    assert "huggingface-pytorch-inference" in json.dumps(execution["PullInferenceImage"]["Resource"])
    model_deploy = {s.get("Sid"): s for s in statements_of(app_variant, "ModelDeployRole")}
    assert model_deploy["PassExecutionRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    role = next(r for k, r in resources(app_variant, "AWS::IAM::Role").items() if k.startswith("ModelDeployRole"))
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
    assert trust["token.actions.githubusercontent.com:sub"] == "repo:acme/tagging:environment:model-production"


def test_app_deploy_role_trusts_only_main_of_this_repo(variant):
    registry = Template.from_stack(variant.registry)
    role = next(r for k, r in resources(registry, "AWS::IAM::Role").items() if k.startswith("AppDeployRole"))
    condition = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
    assert condition == {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                         "token.actions.githubusercontent.com:sub": "repo:acme/tagging:ref:refs/heads/main"}
    repo = only(registry, "AWS::ECR::Repository")
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True} and repo["ImageTagMutability"] == "IMMUTABLE"
    assert json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"])["rules"][0]["selection"]["countNumber"] == 20


# --- SageMaker, schedules, alarms, budget -------------------------------------------------------------

def test_model_and_config_follow_the_names_the_admin_page_starts(app, app_variant):
    app.resource_count_is("AWS::SageMaker::Model", 0)  # default: sagemaker/deploy.py owns the model
    config = only(app_variant, "AWS::SageMaker::EndpointConfig")
    assert config["EndpointConfigName"].startswith("blip2-endpoint-async-")  # EndpointController.saved_config's prefix
    output = config["AsyncInferenceConfig"]["OutputConfig"]
    assert output["S3OutputPath"]["Fn::Join"][1][-1] == "/async/output/" and "NotificationConfig" in output
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
    environment = only(app_variant, "AWS::SageMaker::Model")["PrimaryContainer"]["Environment"]
    assert environment["BLIP2_MODEL_ID"] == "Salesforce/blip2-flan-t5-xl" and environment["BLIP2_MODEL_REVISION"] == "c" * 40
    assert not {"HF_MODEL_ID", "HF_TASK"} & set(environment)  # the toolkit would bypass code/inference.py


def test_schedules_run_the_cli_in_the_dashboard_image(app, app_variant):
    schedules = {json.loads(s["Properties"]["Target"]["Input"])["containerOverrides"][0]["command"][4]: s["Properties"]
                 for s in resources(app, "AWS::Scheduler::Schedule").values()}
    assert schedules.keys() == {"autostop", "start", "stop"}
    assert schedules["autostop"]["ScheduleExpression"] == "rate(15 minutes)"
    assert json.loads(schedules["autostop"]["Target"]["Input"])["containerOverrides"][0]["command"] == [
        "python", "-m", "pipeline", "endpoint", "autostop", "--idle-minutes", "30"]
    assert schedules["start"]["ScheduleExpression"] == "cron(0 8 ? * MON-FRI *)"
    assert schedules["stop"]["ScheduleExpression"] == "cron(0 18 ? * MON-FRI *)"
    assert schedules["start"]["ScheduleExpressionTimezone"] == "UTC"
    assert len(resources(app_variant, "AWS::Scheduler::Schedule")) == 1  # async scales to zero itself: autostop only


def test_alarms_and_budget_are_what_the_estimator_counts(app, app_variant, shipped, variant):
    assert len(resources(app, "AWS::CloudWatch::Alarm")) == shipped.config.cost_assumptions().alarms == 5
    assert len(resources(app_variant, "AWS::CloudWatch::Alarm")) == variant.config.cost_assumptions().alarms == 6
    app.has_resource_properties("AWS::CloudWatch::Alarm", {"AlarmName": "product-tagging-endpoint-running-long",
                                                           "AlarmActions": Match.any_value()})
    budget = only(app, "AWS::Budgets::Budget")
    assert budget["Budget"]["BudgetLimit"] == {"Amount": 300, "Unit": "USD"}
    assert {n["Notification"]["NotificationType"] for n in budget["NotificationsWithSubscribers"]} == {"ACTUAL", "FORECASTED"}


# --- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"domain_name": None}, "set domain_name"),
    ({"cpu": 512, "memory_mib": 512}, "not a Fargate size"),
    ({"auth": "oidc"}, "oidc provider block is missing"),
    ({"model_data_url": "s3://b/m.tar.gz"}, "needs image_uri"),
    ({"model_data_url": "s3://b/m.tar.gz", "image_uri": "i"}, "needs hf_model_revision"),
    ({"nonsense": 1}, "nonsense"),
])
def test_bad_context_is_one_clear_line(overrides, message):
    from support.infra import default_context
    from tagger_infra.config import CONTEXT_KEY, InfraConfig, InfraConfigError

    with pytest.raises(InfraConfigError, match=message):
        InfraConfig.from_context({**default_context()[CONTEXT_KEY], **overrides})


def test_cdk_app_entry_point_refuses_bad_context_without_a_traceback():
    bad = json.dumps({"domain_name": None})
    result = subprocess.run([sys.executable, "app.py"], cwd=INFRA, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CDK_CONTEXT_JSON": json.dumps({"product-tagging": json.loads(bad)}),
                                 "CDK_OUTDIR": "/nonexistent"})
    assert result.returncode != 0
    assert "set domain_name" in result.stderr and "Traceback" not in result.stderr


# --- the fixed monthly cost in docs/deploy.md ---------------------------------------------------------

def test_deploy_doc_shows_the_fixed_cost_of_every_profile(shipped):
    """docs/deploy.md's table: one column per profile (the shipped deployment first), each cell the estimator's."""
    from pipeline.admin.costs import PROFILES

    prices = PriceTable.load()
    readme = (ROOT / "docs" / "deploy.md").read_text()
    section = readme[readme.index("### Fixed monthly cost"):]
    section = section[:section.index("\n### ")]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]  # the |---| line is not one
    columns = [c.strip().strip("`").split("`")[0] for c in header.strip("|").split("|")][1:]
    assert columns == list(PROFILES)
    table = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in rows}
    assert fixed_infra_costs(shipped.config.cost_assumptions(), prices) == fixed_infra_costs(profile_assumptions("own-alb"), prices)
    for i, name in enumerate(PROFILES):
        costs = fixed_infra_costs(profile_assumptions(name), prices)
        for component, usd in costs.items():
            assert table[f"`{component}`"][i] == f"{usd:,.2f}", (name, component, round(usd, 2))
        assert table["**total**"][i] == f"**{sum(costs.values()):,.2f}**", name


# --- linters on the synthesized templates and the workflows ------------------------------------------

def _tool(name: str) -> Path:
    path = Path(sys.executable).parent / name if name == "cfn-lint" else ROOT / ".venv-checkov" / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install-dev` (the README's test command installs it)")
    return path


def _checkov(*templates: Path) -> subprocess.CompletedProcess:
    args = [str(_tool("checkov")), "--framework", "cloudformation", "--compact", "--quiet", "--skip-download", "--output", "json"]
    for template in templates:
        args += ["-f", str(template)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("deployment", ["shipped", "variant"])
def test_cfn_lint_passes_on_the_templates(deployment, request):
    files = request.getfixturevalue(deployment).template_files()
    assert len(files) == 2
    result = subprocess.run([str(_tool("cfn-lint")), *map(str, files)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("deployment", ["shipped", "variant"])
def test_checkov_passes_and_every_skip_has_a_reason(deployment, request):
    files = request.getfixturevalue(deployment).template_files()
    result = _checkov(*files)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, failed
    assert sum(r["summary"]["skipped"] for r in reports) >= 11, "the documented skips should be seen by checkov"
    for template in files:
        for logical_id, resource in json.loads(template.read_text())["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert len(skip.get("comment", "")) >= 40, (logical_id, skip)


def test_checkov_would_catch_a_public_unencrypted_bucket(tmp_path):
    template = tmp_path / "bad.template.json"
    template.write_text(json.dumps({"Resources": {"Open": {"Type": "AWS::S3::Bucket", "Properties": {
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": False, "BlockPublicPolicy": False}}}}}))
    reports = json.loads(_checkov(template).stdout)
    failed = {c["check_id"] for c in reports["results"]["failed_checks"]}
    assert "CKV_AWS_53" in failed  # block public ACLs


def test_actionlint_passes_on_the_workflows_and_catches_mistakes(tmp_path):
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"ci.yml", "deploy-app.yml", "deploy-model.yml", "model-watch.yml"}
    actionlint = Path(sys.executable).parent / "actionlint"
    if not actionlint.exists():
        pytest.fail(f"{actionlint} is missing: run `make install-dev`")
    good = subprocess.run([str(actionlint), "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.no_such }}\n      - uses: actions/checkout@v6\n        with:\n          bogus: 1\n")
    bad = subprocess.run([str(actionlint), "-no-color", str(broken)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no_such" in bad.stdout and '"bogus" is not defined' in bad.stdout


# --- deployment profiles (issue 17) ----------------------------------------------------------------------

def test_every_profile_is_priced_from_what_it_synthesizes(profiles, tmp_path):
    """The estimator's always-on lines for a profile (pipeline.admin.costs.PROFILES, what `estimate --profile` and
    the Admin page use) come from the same shape the CDK app synthesizes for it, read back from the template."""
    from pipeline.admin.costs import PROFILES as PRICED

    assert profiles.keys() == PRICED.keys()
    prices = PriceTable.load()
    spot_base = synth(tmp_path, {"fargate_spot": True, "fargate_on_demand_base": 1})  # the on-demand base option
    for name, deployed in [*profiles.items(), ("spot with an on-demand base", spot_base)]:
        template = Template.from_stack(deployed.app).to_json()
        from_template = fixed_shape(template)
        from_config = {k: getattr(deployed.config.cost_assumptions(), k) for k in PROFILES_FIXED_FIELDS}
        assert from_template == from_config, name
        if name in PRICED:
            assert {k: getattr(profile_assumptions(name), k) for k in PROFILES_FIXED_FIELDS} == from_config, name
            assert fixed_infra_costs(profile_assumptions(name), prices) == fixed_infra_costs(deployed.config.cost_assumptions(), prices)
    assert fixed_shape(Template.from_stack(spot_base.app).to_json())["fargate_on_demand_base"] == 1
    strategy = only(Template.from_stack(spot_base.app), "AWS::ECS::Service")["CapacityProviderStrategy"]
    assert strategy == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}, {"Base": 1, "CapacityProvider": "FARGATE", "Weight": 0}]


def test_business_hours_profile_has_a_closed_page_a_wake_rule_and_a_clock(profiles, app):
    deployed = profiles["own-alb-business-hours"]
    t = Template.from_stack(deployed.app)
    task = only(t, "AWS::ECS::TaskDefinition")
    assert (task["Cpu"], task["Memory"]) == ("256", "1024")  # a whole run peaks ~563-625 MB (README 10b): 1 GB, 0.25 vCPU
    assert only(t, "AWS::ECS::Service")["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    rules = {r["Properties"]["Priority"]: r["Properties"] for r in resources(t, "AWS::ElasticLoadBalancingV2::ListenerRule").values()}
    assert rules.keys() == {1, 2}
    wake, closed = rules[1], rules[2]
    assert wake["Conditions"] == [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/wake"]}}]
    assert [a["Type"] for a in wake["Actions"]] == ["authenticate-cognito", "forward"]  # signed-in users only
    [lambda_group] = [k for k, g in resources(t, "AWS::ElasticLoadBalancingV2::TargetGroup").items() if g["Properties"].get("TargetType") == "lambda"]
    assert wake["Actions"][1]["TargetGroupArn"] == {"Ref": lambda_group}
    # Parked on a path nobody requests while open; the function moves it to /* (every path) when closing.
    assert closed["Conditions"] == [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/__open-until-0"]}}]
    assert [a["Type"] for a in closed["Actions"]] == ["authenticate-cognito", "fixed-response"]
    page = closed["Actions"][1]["FixedResponseConfig"]
    assert page["StatusCode"] == "503" and page["ContentType"] == "text/html" and len(page["MessageBody"]) <= 1024
    assert "MON-FRI 08:00-18:00 UTC" in page["MessageBody"] and '<form method="post" action="/wake">' in page["MessageBody"]
    [(fn_id, fn)] = resources(t, "AWS::Lambda::Function").items()
    env = fn["Properties"]["Environment"]["Variables"]
    [closed_id] = [k for k, r in resources(t, "AWS::ElasticLoadBalancingV2::ListenerRule").items() if r["Properties"]["Priority"] == 2]
    assert env["RULE_ARN"] == {"Ref": closed_id} and (env["MIN_TASKS"], env["MAX_TASKS"], env["WAKE_MINUTES"]) == ("1", "3", "120")
    assert json.loads(env["HOURS"]) == {"start": "08:00", "stop": "18:00", "days": "MON-FRI", "timezone": "UTC"}
    assert fn["Properties"]["Architectures"] == ["arm64"] and fn["Properties"]["Handler"] == "handler.handler"
    # Least privilege: the service's scaling and this one rule; unscoped only what has no resource-level permission.
    statements = statements_of(t, "DashboardWakeRole")
    granted = {(a, json.dumps(s["Resource"])) for s in statements for a in as_list(s["Action"])}
    assert {a for a, r in granted if r == '"*"'} == {"application-autoscaling:RegisterScalableTarget", "elasticloadbalancing:DescribeRules"}
    assert ("elasticloadbalancing:ModifyRule", json.dumps({"Ref": closed_id})) in granted
    assert {a for a, _ in granted} == {"application-autoscaling:RegisterScalableTarget", "elasticloadbalancing:DescribeRules",
                                       "elasticloadbalancing:ModifyRule", "ecs:DescribeServices", "ecs:UpdateService",
                                       "logs:CreateLogStream", "logs:PutLogEvents"}
    [clock] = [s["Properties"] for s in resources(t, "AWS::Scheduler::Schedule").values() if "EcsParameters" not in s["Properties"]["Target"]]
    assert clock["ScheduleExpression"] == "cron(0/15 * * * ? *)" and json.loads(clock["Target"]["Input"]) == {"action": "tick"}
    assert clock["Target"]["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert statements_of(t, "DashboardClockRole") == [{"Action": "lambda:InvokeFunction", "Effect": "Allow", "Resource": {"Fn::GetAtt": [fn_id, "Arn"]}}]
    app.resource_count_is("AWS::Lambda::Function", 0)  # the shipped (24x7) deployment has none of it
    app.resource_count_is("AWS::ElasticLoadBalancingV2::ListenerRule", 0)


def test_dualstack_profile_has_no_public_ipv4_on_the_alb(profiles):
    t = Template.from_stack(profiles["own-alb-ipv6-business-hours"].app)
    lb = only(t, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert lb["IpAddressType"] == "dualstack-without-public-ipv4" and lb["Scheme"] == "internet-facing"
    assert [c["Properties"].get("AmazonProvidedIpv6CidrBlock") for c in resources(t, "AWS::EC2::VPCCidrBlock").values()] == [True]
    records = [r["Properties"] for r in resources(t, "AWS::Route53::RecordSet").values()]
    assert [r["Type"] for r in records] == ["AAAA"]  # no public IPv4 to point an A record at
    ingress = [rule for g in resources(t, "AWS::EC2::SecurityGroup").values() for rule in g["Properties"].get("SecurityGroupIngress", [])]
    assert {(r.get("CidrIpv6"), r["FromPort"]) for r in ingress if r.get("CidrIpv6")} == {("::/0", 443), ("::/0", 80)}


def test_shared_alb_profile_adds_rules_to_the_existing_listener_and_creates_no_load_balancer(profiles):
    deployed = profiles["shared-alb-business-hours"]
    t = Template.from_stack(deployed.app)
    shared = SHARED_ALB["shared_alb"]
    for kind in ("AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::Listener", "AWS::EC2::VPC", "AWS::EC2::NatGateway"):
        t.resource_count_is(kind, 0)
    rules = {r["Properties"]["Priority"]: r["Properties"] for r in resources(t, "AWS::ElasticLoadBalancingV2::ListenerRule").values()}
    assert rules.keys() == {100, 101, 102}  # /wake, the closed page, the dashboard
    for rule in rules.values():
        assert rule["ListenerArn"] == shared["listener_arn"]
        assert {"Field": "host-header", "HostHeaderConfig": {"Values": ["tagging.example.com"]}} in rule["Conditions"]
        assert rule["Actions"][0]["Type"] == "authenticate-cognito"  # the sign-in is on every rule of this host
    [app_group] = [k for k, g in resources(t, "AWS::ElasticLoadBalancingV2::TargetGroup").items() if g["Properties"].get("TargetType") == "ip"]
    assert (rules[102]["Actions"][1]["Type"], rules[102]["Actions"][1]["TargetGroupArn"]) == ("forward", {"Ref": app_group})
    assert only(t, "AWS::ElasticLoadBalancingV2::ListenerCertificate")["ListenerArn"] == shared["listener_arn"]
    assert resources(t, "AWS::ElasticLoadBalancingV2::TargetGroup")[app_group]["Properties"]["VpcId"] == shared["vpc_id"]
    task_rules = [g["Properties"] for g in resources(t, "AWS::EC2::SecurityGroupIngress").values() if g["Properties"].get("FromPort") == 8501]
    assert [r["SourceSecurityGroupId"] for r in task_rules] == [shared["security_group_id"]]
    network = only(t, "AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets"] == shared["task_subnet_ids"] and network["AssignPublicIp"] == "ENABLED"
    env = {e["Name"]: e["Value"] for e in only(t, "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]["Environment"]}
    assert env["DEPLOYMENT_PROFILE"] == "shared-alb-business-hours"
    [fn] = resources(t, "AWS::Lambda::Function").values()
    assert fn["Properties"]["Environment"]["Variables"]["HOST"] == "tagging.example.com"


@pytest.mark.parametrize("overrides, message", [
    ({"load_balancer": "shared"}, "shared_alb block is missing"),
    ({"load_balancer": "shared", "network": "private-nat", **SHARED_ALB}, "set network 'public'"),
    ({"profile": "cheapest"}, "profile 'cheapest': choose one of own-alb"),
    ({"wake_minutes": 5}, "wake_minutes must be 15-720"),
])
def test_bad_profile_context_is_one_clear_line(overrides, message):
    from support.infra import default_context
    from tagger_infra.config import CONTEXT_KEY, InfraConfig, InfraConfigError

    with pytest.raises(InfraConfigError, match=message):
        InfraConfig.from_context({**default_context()[CONTEXT_KEY], **overrides})


def test_profile_templates_pass_cfn_lint_and_checkov(profiles):
    files = [f for name, d in profiles.items() if name != "own-alb" for f in d.template_files() if "Registry" not in f.name]
    assert len(files) == 4
    lint = subprocess.run([str(_tool("cfn-lint")), *map(str, files)], capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    reports = json.loads(_checkov(*files).stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, failed


# --- the wake function, against moto ------------------------------------------------------------------------

@pytest.fixture
def wake_world(profiles):
    """The ALB rule and the service's scalable target the function switches, in moto; the function's settings
    are the synthesized Lambda's environment with moto's names in place of the references."""
    import boto3
    from moto import mock_aws

    from tagger_infra.wake import handler as wake

    [fn] = resources(Template.from_stack(profiles["own-alb-business-hours"].app), "AWS::Lambda::Function").values()
    env = fn["Properties"]["Environment"]["Variables"]
    with mock_aws():
        ec2, elb = boto3.client("ec2", "us-east-1"), boto3.client("elbv2", "us-east-1")
        scaling, ecs = boto3.client("application-autoscaling", "us-east-1"), boto3.client("ecs", "us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
                   for i, z in ((1, "a"), (2, "b"))]
        lb = elb.create_load_balancer(Name="lb", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
        group = elb.create_target_group(Name="tg", Protocol="HTTP", Port=8501, VpcId=vpc, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                                       DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])["Listeners"][0]["ListenerArn"]
        rule = elb.create_rule(ListenerArn=listener, Priority=2, Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/__open-until-0"]}}],
                               Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}])["Rules"][0]["RuleArn"]
        ecs.create_cluster(clusterName="c")
        ecs.register_task_definition(family="f", containerDefinitions=[{"name": "dashboard", "image": "i", "memory": 512}])
        ecs.create_service(cluster="c", serviceName="s", taskDefinition="f", desiredCount=1)
        scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId="service/c/s", ScalableDimension="ecs:service:DesiredCount",
                                         MinCapacity=1, MaxCapacity=3)
        calls = []  # what the function calls, through its own clients (state() below reads with others)
        function_clients = {name: boto3.client(name, "us-east-1") for name in ("elbv2", "application-autoscaling", "ecs")}
        for client in function_clients.values():
            client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
        config = wake.Config.from_env({**env, "RESOURCE_ID": "service/c/s", "RULE_ARN": rule})

        def state():
            [r] = elb.describe_rules(RuleArns=[rule])["Rules"]
            [target] = scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
            [service] = ecs.describe_services(cluster="c", services=["s"])["services"]
            assert service["desiredCount"] == target["MinCapacity"]  # set, not left to a later scaling decision
            return r["Conditions"][-1]["PathPatternConfig"]["Values"][0], (target["MinCapacity"], target["MaxCapacity"])

        yield wake, config, function_clients, state, calls


def at(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_wake_function_sleeps_outside_hours_wakes_on_request_for_a_bounded_time(wake_world):
    wake, config, clients, state, calls = wake_world
    alb_request = {"requestContext": {"elb": {"targetGroupArn": "arn"}}, "path": "/wake", "headers": {}}
    wednesday_evening = at("2026-12-02T20:00:00+00:00")
    assert wake.handle({"action": "tick"}, clients, config, wednesday_evening) == {"open": False, "until": 0}
    assert state() == ("/*", (0, 0))  # every path gets the closed page; no task runs
    page = wake.handle({**alb_request, "httpMethod": "GET"}, clients, config, wednesday_evening)
    assert page["statusCode"] == 200 and "The dashboard is asleep" in page["body"] and 'method="post" action="/wake"' in page["body"]
    assert "MON-FRI 08:00-18:00 UTC" in page["body"] and state() == ("/*", (0, 0))  # looking does not wake it
    started = wake.handle({**alb_request, "httpMethod": "POST"}, clients, config, wednesday_evening)
    assert "Starting the dashboard" in started["body"] and 'http-equiv="refresh" content="120;url=/"' in started["body"]
    two_hours = int(at("2026-12-02T22:00:00+00:00").timestamp())
    assert state() == (f"/__open-until-{two_hours}", (1, 3))
    wake.handle({**alb_request, "httpMethod": "POST"}, clients, config, at("2026-12-02T20:30:00+00:00"))
    later = int(at("2026-12-02T22:30:00+00:00").timestamp())
    assert state() == (f"/__open-until-{later}", (1, 3))  # pressing again: 2 h from now, never stacked
    assert wake.handle({"action": "tick"}, clients, config, at("2026-12-02T22:15:00+00:00"))["open"] is True
    assert state() == (f"/__open-until-{later}", (1, 3))
    assert wake.handle({"action": "tick"}, clients, config, at("2026-12-02T22:45:00+00:00"))["open"] is False
    assert state() == ("/*", (0, 0))
    wake.handle({"action": "tick"}, clients, config, at("2026-12-03T08:00:00+00:00"))  # Thursday, opening time
    assert state() == ("/__open-until-0", (1, 3))
    wake.handle({"action": "tick"}, clients, config, at("2026-12-03T17:59:00+00:00"))
    assert state() == ("/__open-until-0", (1, 3))
    wake.handle({"action": "tick"}, clients, config, at("2026-12-05T10:00:00+00:00"))  # Saturday
    assert state() == ("/*", (0, 0))
    assert set(calls) == {"DescribeRules", "ModifyRule", "RegisterScalableTarget", "UpdateService"}  # what the Lambda role grants


def test_wake_function_keeps_a_shared_listeners_host_condition_and_local_time(wake_world):
    from dataclasses import replace as copy

    wake, config, clients, state, _ = wake_world
    shared = copy(config, host="tagging.example.com", hours=wake.Hours("08:00", "18:00", "MON-FRI", "Europe/Berlin"))
    wake.handle({"action": "tick"}, clients, shared, at("2026-12-02T07:30:00+00:00"))  # 08:30 in Berlin (CET)
    [rule] = clients["elbv2"].describe_rules(RuleArns=[config.rule_arn])["Rules"]
    assert {"Field": "host-header", "HostHeaderConfig": {"Values": ["tagging.example.com"]}} in [
        {"Field": c["Field"], "HostHeaderConfig": c["HostHeaderConfig"]} for c in rule["Conditions"] if c["Field"] == "host-header"]
    assert state() == ("/__open-until-0", (1, 3))
    wake.handle({"action": "tick"}, clients, shared, at("2026-12-02T17:30:00+00:00"))  # 18:30 in Berlin
    assert state() == ("/*", (0, 0))
    assert wake.Hours("09:00", "17:00", "MON,WED,FRI").contains(at("2026-12-04T10:00:00+00:00"))  # a Friday
    assert not wake.Hours("09:00", "17:00", "MON,WED,FRI").contains(at("2026-12-03T10:00:00+00:00"))  # a Thursday


def test_wake_can_be_kept_to_admins(wake_world):
    """wake_admins_only: the signed-in e-mail (the ALB's x-amzn-oidc-data claims) must be an admin's to wake it."""
    import base64
    from dataclasses import replace as copy

    wake, config, clients, state, calls = wake_world
    admins_only = copy(config, admins=("admin@example.com",))

    def request(email):
        claims = base64.urlsafe_b64encode(json.dumps({"email": email}).encode()).decode().rstrip("=")
        return {"requestContext": {"elb": {}}, "httpMethod": "POST", "path": "/wake", "headers": {"x-amzn-oidc-data": f"e30.{claims}.sig"}}

    evening = at("2026-12-02T20:00:00+00:00")
    wake.handle({"action": "tick"}, clients, admins_only, evening)
    before = len(calls)
    refused = wake.handle(request("merch@example.com"), clients, admins_only, evening)
    assert refused["statusCode"] == 403 and "Only admins can wake the dashboard" in refused["body"]
    assert state() == ("/*", (0, 0)) and calls[before:] == []  # refused before any AWS call
    assert wake.handle({**request("x"), "headers": {}}, clients, admins_only, evening)["statusCode"] == 403  # no token: refused
    assert wake.handle(request("Admin@Example.com"), clients, admins_only, evening)["statusCode"] == 200
    assert state()[1] == (1, 3)
    assert wake.handle(request("merch@example.com"), clients, config, evening)["statusCode"] == 200  # default: any signed-in user


# --- issue 17: the key in SSM Parameter Store, a deployment without an endpoint (profile own-alb-ipv6-batch) -----------

ENDPOINT_ACTIONS = {"sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync", "sagemaker:CreateEndpoint", "sagemaker:DeleteEndpoint",
                    "sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities",
                    "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DescribeScalableTargets",
                    "cloudwatch:GetMetricStatistics"}


def test_batch_profile_reads_the_key_from_one_ssm_parameter_and_creates_no_secret(profiles):
    t = Template.from_stack(profiles["own-alb-ipv6-batch"].app)
    t.resource_count_is("AWS::SecretsManager::Secret", 0)
    [container] = only(t, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    [secret] = container["Secrets"]
    parameter_arn = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":ssm:us-east-1:", {"Ref": "AWS::AccountId"},
                                        ":parameter/product-tagging/openai-api-key"]]}
    assert secret == {"Name": "OPENAI_API_KEY", "ValueFrom": parameter_arn}
    execution = statements_of(t, "DashboardTaskExecutionRole")
    [read] = [s for s in execution if any(a.startswith("ssm:") for a in as_list(s["Action"]))]
    assert "ssm:GetParameters" in as_list(read["Action"]) and read["Resource"] == parameter_arn  # that one parameter only
    assert all(a.startswith("ssm:Get") or a == "ssm:DescribeParameters" for a in as_list(read["Action"]))
    granted = {a for s in execution for a in as_list(s["Action"])}
    assert not {a for a in granted if a.startswith(("kms:", "secretsmanager:"))}  # aws/ssm needs no kms:Decrypt grant
    outputs = t.to_json()["Outputs"]
    assert outputs["OpenAiKeyParameter"]["Value"] == "/product-tagging/openai-api-key" and "OpenAiSecretArn" not in outputs
    # the shipped stack keeps its secret, and a parameter name of one's own is used as given
    shipped = Template.from_stack(profiles["own-alb"].app)
    assert [s["Name"] for s in only(shipped, "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]["Secrets"]] == ["OPENAI_API_KEY"]
    shipped.resource_count_is("AWS::SecretsManager::Secret", 1)


def test_a_deployment_without_endpoint_has_no_endpoint_alarms_schedules_or_permissions(profiles, tmp_path):
    from pipeline.settings import Settings

    deployed = profiles["own-alb-ipv6-batch"]
    t = Template.from_stack(deployed.app)
    alarms = sorted(a["Properties"]["AlarmName"] for a in resources(t, "AWS::CloudWatch::Alarm").values())
    assert alarms == ["product-tagging-alb-5xx", "product-tagging-dashboard-cpu-high", "product-tagging-unhealthy-tasks"]
    assert [s for s in resources(t, "AWS::Scheduler::Schedule").values() if "EcsParameters" in s["Properties"]["Target"]] == []
    task_role = {a for s in statements_of(t, "DashboardTaskRole") for a in as_list(s["Action"])}
    assert not task_role & ENDPOINT_ACTIONS, task_role & ENDPOINT_ACTIONS
    assert {"sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:DescribeEndpointConfig",
            "sagemaker:ListEndpointConfigs"} <= task_role  # batch transform jobs on the deployed model stay
    env = {e["Name"]: e["Value"] for e in only(t, "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]["Environment"]}
    assert (env["ENDPOINT_ENABLED"], env["TRANSFORM_THRESHOLD"], env["DEPLOYMENT_PROFILE"]) == ("false", "1", "own-alb-ipv6-batch")
    app_settings = Settings(_env_file=None, endpoint_enabled=env["ENDPOINT_ENABLED"], transform_threshold=env["TRANSFORM_THRESHOLD"],
                            openai_batch_deadline_s=env["OPENAI_BATCH_DEADLINE_S"])
    assert app_settings.endpoint_enabled is False and app_settings.transform_threshold == 1
    # same working day: a Batch API batch not back within 4 h is cancelled, the rest summarized in real time
    assert app_settings.openai_batch_deadline_s == 4 * 3600 and app_settings.openai_batch_fallback
    assert "OPENAI_BATCH_DEADLINE_S" not in {e["Name"] for e in only(Template.from_stack(profiles["own-alb"].app), "AWS::ECS::TaskDefinition")
                                             ["ContainerDefinitions"][0]["Environment"]}
    # the same shape with an endpoint has all of it: the difference is the option, not the profile
    with_endpoint = Template.from_stack(profiles["own-alb-ipv6-business-hours"].app)
    assert {a for s in statements_of(with_endpoint, "DashboardTaskRole") for a in as_list(s["Action"])} >= ENDPOINT_ACTIONS
    assert len(resources(with_endpoint, "AWS::CloudWatch::Alarm")) == 5
    assert deployed.config.cost_assumptions().alarms == 3 and deployed.config.cost_assumptions().secrets == 0


@pytest.mark.parametrize("overrides, message", [
    ({"openai_key_store": "ssm", "openai_key_parameter": "openai-key"}, "must be a parameter name starting with /"),
    ({"openai_key_parameter": "/x/openai"}, "openai_key_parameter is for openai_key_store 'ssm'"),
    ({"realtime_endpoint": False, "async_inference": True}, "async_inference needs an endpoint"),
])
def test_bad_key_store_or_endpoint_context_is_one_clear_line(overrides, message):
    from support.infra import default_context
    from tagger_infra.config import CONTEXT_KEY, InfraConfig, InfraConfigError

    with pytest.raises(InfraConfigError, match=message):
        InfraConfig.from_context({**default_context()[CONTEXT_KEY], **overrides})


def test_an_own_ssm_parameter_name_is_the_one_granted():
    from support.infra import default_context
    from tagger_infra.config import CONTEXT_KEY, InfraConfig

    config = InfraConfig.from_context({**default_context()[CONTEXT_KEY], "openai_key_store": "ssm", "openai_key_parameter": "/team/tagging/key"})
    assert config.openai_key_parameter_name == "/team/tagging/key"
    assert InfraConfig.from_context(default_context()[CONTEXT_KEY]).openai_key_parameter_name is None


def test_private_endpoints_follow_the_key_store_and_the_endpoint_option(tmp_path):
    """Tasks without internet reach AWS through interface endpoints: with the key in SSM they need `ssm`, not
    `secretsmanager`; without an endpoint, none of the endpoint-only APIs (runtime, metrics, autoscaling). The
    estimator prices what is synthesized."""
    deployed = synth(tmp_path, {"network": "private-endpoints", "openai_key_store": "ssm", "realtime_endpoint": False})
    t = Template.from_stack(deployed.app)
    services = sorted(json.dumps(e["Properties"]["ServiceName"]).split("com.amazonaws.")[-1].split(".", 1)[-1].strip('"]}')
                      for e in resources(t, "AWS::EC2::VPCEndpoint").values() if e["Properties"].get("VpcEndpointType") == "Interface")
    assert services == ["ecr.api", "ecr.dkr", "logs", "sagemaker.api", "ssm", "sts"], services
    assert fixed_shape(t.to_json())["interface_endpoints"] == deployed.config.cost_assumptions().interface_endpoints == 12
