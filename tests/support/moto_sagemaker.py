"""UpdateEndpoint for moto, which (5.2.5) does not implement it.

Behaves like SageMaker as far as deploy.py can observe: the endpoint keeps its name and ARN and
now runs the new endpoint config (moto's endpoints are InService at once, as on create). The
call is rejected for an unknown endpoint or config, like the real API.
"""

from __future__ import annotations

from contextlib import contextmanager

from moto.core.responses import ActionResult
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from moto.core.utils import utcnow


def _update_endpoint(self: SageMakerResponse) -> ActionResult:
    backend = sagemaker_backends[self.current_account][self.region]
    name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        raise ValidationError(message=f"Could not find endpoint \"{name}\".")
    config = backend.endpoint_configs.get(config_name)
    if config is None:
        raise ValidationError(message=f"Could not find endpoint configuration \"{config_name}\".")
    endpoint.endpoint_config_name = config_name
    endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
    endpoint.last_modified_time = utcnow()
    return ActionResult({"EndpointArn": endpoint.arn})


def install(monkeypatch) -> None:
    if not hasattr(SageMakerResponse, "update_endpoint"):
        monkeypatch.setattr(SageMakerResponse, "update_endpoint", _update_endpoint, raising=False)


ENDPOINT_NAME = "blip2-endpoint"


def deploy_test_endpoint(clients, mode: str = "realtime", name: str = ENDPOINT_NAME) -> None:
    """An endpoint made the way production makes it: sagemaker/deploy.py's plan, applied to moto."""
    from support.scripts import load_script

    deploy = load_script("deploy")
    options = deploy.DeployOptions(
        endpoint_name=name, model_data="s3://a/blip2-endpoint.tar.gz", role_arn="arn:aws:iam::123456789012:role/r",
        image_uri="1.dkr.ecr.us-east-1.amazonaws.com/hf:1", region="us-east-1", mode=mode, hf_model_id=None,
        async_s3="s3://results/async", max_instances=2,
    )
    deploy.apply_plan(deploy.plan_deployment(options, clients), clients, wait_delay_s=0, wait_attempts=2, log=lambda _: None)


@contextmanager
def endpoint_in_moto(monkeypatch, mode: str = "realtime"):
    """moto with a deployed endpoint and the `results` bucket async outputs and batch jobs use."""
    import boto3
    from moto import mock_aws

    from support.scripts import load_script

    install(monkeypatch)
    with mock_aws():
        clients = load_script("deploy").make_clients("us-east-1")
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="results")
        deploy_test_endpoint(clients, mode)
        yield clients
