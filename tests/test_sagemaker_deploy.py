"""sagemaker/deploy.py against moto (SageMaker, Application Auto Scaling, CloudWatch)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import boto3
import pytest
from moto import mock_aws

from support import moto_sagemaker
from support.scripts import REPO, load_script

deploy = load_script("deploy")

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/blip2-endpoint"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:test"
REVISION = "0123456789abcdef0123456789abcdef01234567"
NAME = "blip2-endpoint"
RID = f"endpoint/{NAME}/variant/AllTraffic"


@pytest.fixture
def aws(monkeypatch):
    moto_sagemaker.install(monkeypatch)
    with mock_aws():
        yield deploy.make_clients(REGION)


def options(**overrides) -> deploy.DeployOptions:
    values = dict(
        endpoint_name=NAME, model_data="s3://artifacts/blip2/blip2-endpoint.tar.gz", role_arn=ROLE,
        image_uri=IMAGE, region=REGION, hf_model_id="Salesforce/blip2-flan-t5-xl", hf_model_revision=REVISION,
    )
    values.update(overrides)
    return deploy.DeployOptions(**values)


def async_options(**overrides) -> deploy.DeployOptions:
    values = dict(mode="async", async_s3="s3://results/blip2-async", max_instances=2,
                  success_topic="arn:aws:sns:us-east-1:123456789012:ok", error_topic="arn:aws:sns:us-east-1:123456789012:failed")
    values.update(overrides)
    return options(**values)


def run(opts, clients):
    plan = deploy.plan_deployment(opts, clients)
    deploy.apply_plan(plan, clients, wait_delay_s=0, wait_attempts=2, log=lambda line: None)
    return plan


def operations(plan) -> list[str]:
    return [step.operation for step in plan.steps]


def scaling(clients):
    aas = clients["application-autoscaling"]
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = {p["PolicyName"]: p for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]}
    alarms = clients["cloudwatch"].describe_alarms()["MetricAlarms"]
    return targets, policies, alarms


def test_realtime_creates_model_config_and_endpoint(aws):
    run(options(), aws)
    sm = aws["sagemaker"]
    endpoint = sm.describe_endpoint(EndpointName=NAME)
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert endpoint["EndpointConfigName"].startswith(f"{NAME}-realtime-")
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == ("AllTraffic", "ml.g4dn.xlarge", 1)
    assert not config.get("AsyncInferenceConfig")
    model = sm.describe_model(ModelName=variant["ModelName"])
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == "s3://artifacts/blip2/blip2-endpoint.tar.gz"
    assert container["Environment"]["BLIP2_MODEL_ID"] == "Salesforce/blip2-flan-t5-xl"
    assert container["Environment"]["BLIP2_MODEL_REVISION"] == REVISION
    assert not {"HF_MODEL_ID", "HF_TASK"} & set(container["Environment"])  # the toolkit would bypass code/inference.py
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"
    assert model["ExecutionRoleArn"] == ROLE
    assert scaling(aws) == ([], {}, [])  # real-time endpoints are started and stopped by admins, not autoscaled


def test_async_endpoint_scales_to_zero_and_back_from_zero(aws):
    run(async_options(model_data="s3://artifacts/blip2/uncompressed/"), aws)
    sm = aws["sagemaker"]
    endpoint = sm.describe_endpoint(EndpointName=NAME)
    assert endpoint["EndpointConfigName"].startswith(f"{NAME}-async-")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": "s3://results/blip2-async/output/", "S3FailurePath": "s3://results/blip2-async/failure/",
            "NotificationConfig": {"SuccessTopic": "arn:aws:sns:us-east-1:123456789012:ok", "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:failed"},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    container = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
    assert container["ModelDataSource"] == {
        "S3DataSource": {"S3Uri": "s3://artifacts/blip2/uncompressed/", "S3DataType": "S3Prefix", "CompressionType": "None"}
    }

    targets, policies, alarms = scaling(aws)
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(RID, 0, 2)]
    tracking = policies[f"{NAME}-backlog-per-instance"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    assert tracking["TargetValue"] == 5.0
    step = policies[f"{NAME}-scale-from-zero"]
    assert step["PolicyType"] == "StepScaling"
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]
    [alarm] = alarms
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": NAME}]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    assert alarm["AlarmActions"] == [step["PolicyARN"]]  # the alarm drives the scale-from-zero policy


def test_same_inputs_again_create_nothing(aws):
    run(options(), aws)
    again = deploy.plan_deployment(options(), aws)
    assert again.steps == []
    assert any("already runs" in note for note in again.notes)
    assert len(aws["sagemaker"].list_endpoint_configs()["EndpointConfigs"]) == 1


def test_update_switches_the_endpoint_to_a_new_config_in_place(aws):
    run(options(), aws)
    sm = aws["sagemaker"]
    before = sm.describe_endpoint(EndpointName=NAME)
    plan = run(options(model_data="s3://artifacts/blip2/v2/blip2-endpoint.tar.gz", instance_type="ml.g4dn.2xlarge"), aws)
    assert operations(plan) == ["create_model", "create_endpoint_config", "update_endpoint", "wait:endpoint_in_service"]
    after = sm.describe_endpoint(EndpointName=NAME)
    assert after["EndpointArn"] == before["EndpointArn"] and after["CreationTime"] == before["CreationTime"]
    assert after["EndpointConfigName"] != before["EndpointConfigName"]
    new_config = sm.describe_endpoint_config(EndpointConfigName=after["EndpointConfigName"])
    assert new_config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.2xlarge"
    # The old config stays, so switching back is one more update.
    assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == 2


def test_updating_an_async_endpoint_deregisters_autoscaling_first_then_restores_it(aws):
    run(async_options(), aws)
    plan = run(async_options(max_concurrency_per_instance=2), aws)
    ops = operations(plan)
    assert ops.index("deregister_scalable_target") < ops.index("update_endpoint") < ops.index("register_scalable_target")
    targets, policies, alarms = scaling(aws)
    assert [t["MinCapacity"] for t in targets] == [0]
    assert len(policies) == 2 and len(alarms) == 1


@pytest.mark.parametrize("make", [options, async_options], ids=["realtime", "async"])
def test_variant_waits_long_enough_for_a_16_gb_model(aws, make):
    run(make(), aws)
    sm = aws["sagemaker"]
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName=NAME)["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == deploy.STARTUP_HEALTH_CHECK_TIMEOUT_S == 1800
    assert variant["ModelDataDownloadTimeoutInSeconds"] == deploy.MODEL_DATA_DOWNLOAD_TIMEOUT_S == 1800
    # a different timeout is a different config (its name carries the content hash), so a redeploy switches to it
    plan = run(make(startup_timeout_s=2400), aws)
    assert "update_endpoint" in operations(plan)
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName=NAME)["EndpointConfigName"])
    assert config["ProductionVariants"][0]["ContainerStartupHealthCheckTimeoutInSeconds"] == 2400


def admin_control(clients, tmp_path):
    from pipeline.admin.endpoint import EndpointController
    from pipeline.store.sqlite_store import SqliteStore

    return EndpointController(endpoint_name=NAME, mode="async", clients=clients, store=SqliteStore(tmp_path / "db.sqlite3"),
                              warmup_minutes=10)


def variant_count(clients) -> int:
    return clients["sagemaker"].describe_endpoint(EndpointName=NAME)["ProductionVariants"][0]["DesiredInstanceCount"]


@pytest.mark.parametrize("change", [{}, {"max_concurrency_per_instance": 2}], ids=["same inputs", "new config"])
def test_redeploy_keeps_an_admins_start(aws, tmp_path, change):
    from pipeline.admin.endpoint import Actor

    run(async_options(), aws)
    assert admin_control(aws, tmp_path).start(Actor("boss@example.com", True)).result == "started"  # min capacity 0 -> 1
    plan = run(async_options(**change), aws)
    [register] = [s for s in plan.steps if s.operation == "register_scalable_target"]
    assert "min 1 kept" in register.summary
    targets, policies, alarms = scaling(aws)
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 2)]  # still started; the old code set 0
    assert len(policies) == 2 and len(alarms) == 1
    assert variant_count(aws) == 1


def test_switching_a_stopped_async_endpoint_keeps_it_at_zero_instances(aws, tmp_path):
    from pipeline.admin.endpoint import Actor

    run(async_options(), aws)
    assert admin_control(aws, tmp_path).stop(Actor("boss@example.com", True)).result == "stopped"
    assert variant_count(aws) == 0
    plan = run(async_options(max_concurrency_per_instance=2), aws)
    ops = operations(plan)
    # the new config starts its InitialInstanceCount (1): that proves the new model loads, then the count goes back
    assert ops.index("update_endpoint") < ops.index("update_endpoint_weights_and_capacities") < ops.index("register_scalable_target")
    assert ops[ops.index("update_endpoint_weights_and_capacities") + 1] == "wait:endpoint_in_service"
    assert variant_count(aws) == 0
    targets, _, _ = scaling(aws)
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(0, 2)]


def test_switching_a_scaled_out_async_endpoint_keeps_its_instances_within_the_new_maximum(aws):
    run(async_options(max_instances=3), aws)
    aws["sagemaker"].update_endpoint_weights_and_capacities(  # autoscaling ran it up to 3
        EndpointName=NAME, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}])
    run(async_options(max_instances=3, max_concurrency_per_instance=2), aws)
    assert variant_count(aws) == 3
    run(async_options(max_instances=2, max_concurrency_per_instance=3), aws)  # a lower maximum caps what is kept
    assert variant_count(aws) == 2


def test_switching_async_to_realtime_removes_autoscaling(aws):
    run(async_options(), aws)
    run(options(), aws)
    assert aws["sagemaker"].describe_endpoint(EndpointName=NAME)["EndpointConfigName"].startswith(f"{NAME}-realtime-")
    targets, policies, alarms = scaling(aws)
    assert (targets, policies, alarms) == ([], {}, [])


def test_busy_or_failed_endpoint_is_refused_with_a_reason(aws):
    run(options(), aws)
    from moto.sagemaker.models import sagemaker_backends

    endpoint = sagemaker_backends["123456789012"][REGION].endpoints[NAME]
    endpoint.endpoint_status = "Updating"
    with pytest.raises(deploy.DeployError, match="is Updating; run again when it is InService"):
        deploy.plan_deployment(options(model_data="s3://artifacts/v3/blip2-endpoint.tar.gz"), aws)
    endpoint.endpoint_status, endpoint.failure_reason = "Failed", "CUDA out of memory"
    with pytest.raises(deploy.DeployError, match="Failed \\(CUDA out of memory\\).*delete it"):
        deploy.plan_deployment(options(model_data="s3://artifacts/v3/blip2-endpoint.tar.gz"), aws)


@pytest.mark.parametrize("overrides, message", [
    (dict(hf_model_revision=None), "SAGEMAKER_HF_MODEL_REVISION"),
    (dict(role_arn=""), "SAGEMAKER_ROLE_ARN"),
    (dict(mode="async", async_s3=None), "SAGEMAKER_ASYNC_S3"),
    (dict(model_data="/tmp/model.tar.gz"), "s3://"),
    (dict(endpoint_name="bad_name!"), "letters, digits or hyphens"),
    (dict(startup_timeout_s=30), "--startup-timeout must be between 60 and 3600"),
    (dict(download_timeout_s=3601), "--download-timeout must be between 60 and 3600"),
])
def test_invalid_options_are_explained(aws, overrides, message):
    with pytest.raises(deploy.DeployError, match=message):
        deploy.plan_deployment(options(**overrides), aws)


def test_packaged_weights_need_no_model_id(aws):
    run(options(hf_model_id=None, hf_model_revision=None), aws)
    [model] = aws["sagemaker"].list_models()["Models"]
    environment = aws["sagemaker"].describe_model(ModelName=model["ModelName"])["PrimaryContainer"]["Environment"]
    assert "BLIP2_MODEL_ID" not in environment and "HF_MODEL_ID" not in environment


def test_long_endpoint_names_give_valid_resource_names():
    name = "e" * 63
    model = deploy.model_request(options(endpoint_name=name))
    config = deploy.endpoint_config_request(options(endpoint_name=name, mode="async", async_s3="s3://b/x"), model["ModelName"])
    for generated in (model["ModelName"], config["EndpointConfigName"]):
        assert len(generated) <= 63 and deploy.NAME_PATTERN.match(generated)


def test_dry_run_prints_the_plan_and_changes_nothing(aws, capsys, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("SAGEMAKER_HF_MODEL_REVISION", REVISION)
    monkeypatch.setenv("SAGEMAKER_ASYNC_S3", "s3://results/blip2-async")
    code = deploy.main(["--model-data", "s3://artifacts/blip2/blip2-endpoint.tar.gz", "--mode", "async",
                        "--image-uri", IMAGE, "--dry-run", "--show-calls"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"Plan for endpoint {NAME} (async, ml.g4dn.xlarge, {REGION})" in out
    for expected in ("create model", "create endpoint config", "create endpoint", "register scalable target",
                     "HasBacklogWithoutCapacity", '"MinCapacity": 0', "dry run: nothing changed"):
        assert expected in out
    sm = aws["sagemaker"]
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_endpoints()["Endpoints"] == []
    assert scaling(aws) == ([], {}, [])


def test_cli_errors_are_one_line_without_traceback(aws, capsys, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_HF_MODEL_REVISION", raising=False)
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", ROLE)
    code = deploy.main(["--model-data", "s3://artifacts/blip2/blip2-endpoint.tar.gz", "--image-uri", IMAGE])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: set SAGEMAKER_HF_MODEL_REVISION") and "Traceback" not in err


def test_default_image_is_the_regions_hugging_face_pytorch_inference_container():
    uri = deploy.default_image_uri("eu-west-1", "ml.g4dn.xlarge")
    assert ".dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference:" in uri
    assert "-gpu-" in uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_script_deploys_against_a_moto_server(tmp_path, monkeypatch):
    """The script as an engineer runs it (a subprocess, settings from the environment)."""
    from moto.server import ThreadedMotoServer

    moto_sagemaker.install(monkeypatch)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "SAGEMAKER_ROLE_ARN": ROLE, "SAGEMAKER_HF_MODEL_REVISION": REVISION, "SAGEMAKER_IMAGE_URI": IMAGE,
               "AWS_REGION": REGION}
        command = [sys.executable, str(REPO / "sagemaker" / "deploy.py"), "--model-data", "s3://a/blip2-endpoint.tar.gz", "--endpoint-url", url]
        first = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "create endpoint blip2-endpoint" in first.stdout and first.stdout.rstrip().endswith("done: blip2-endpoint (realtime)")
        second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert second.returncode == 0 and "nothing to do" in second.stdout
        sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=url)
        assert sm.describe_endpoint(EndpointName=NAME)["EndpointStatus"] == "InService"
    finally:
        server.stop()


def test_default_image_is_the_pinned_serving_container():
    """sagemaker/container.json is the one pin: the image deploy.py picks carries its transformers version."""
    pin = json.loads((REPO / "sagemaker" / "container.json").read_text())
    uri = deploy.default_image_uri("us-east-1", "ml.g4dn.xlarge")
    assert uri == ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
                   f"2.6.0-transformers{pin['transformers']}-gpu-py312-cu124-ubuntu22.04")
    assert pin["image"]["base_framework_version"] == f"pytorch{pin['torch']}"
