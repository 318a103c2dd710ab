import io
import json
from dataclasses import astuple

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from pipeline import blip_core
from pipeline.attributes import load_attribute_schema
from pipeline.captioners.local import LocalCaptioner
from pipeline.captioners.sagemaker_runtime import SageMakerCaptioner
from pipeline.errors import BadInputError, ConfigError, ServiceError
from pipeline.images.normalize import normalize_image
from support.images import jpeg_bytes
from support.servers import AwsError, FakeSageMakerRuntime

SCHEMA = load_attribute_schema()


@pytest.fixture(scope="module")
def photo():
    return normalize_image(jpeg_bytes(color=(30, 90, 200)))


def test_local_captioner_answers_every_attribute(local_captioner, photo):
    result, usage = local_captioner.caption(photo, SCHEMA.attributes)
    assert result.caption and set(result.answers) == set(SCHEMA.names())
    assert result.model_id == local_captioner.model_id
    assert usage.kind == "local" and usage.latency_ms > 0
    again, _ = local_captioner.caption(photo, SCHEMA.attributes)
    assert (again.caption, again.answers) == (result.caption, result.answers)  # deterministic decoding


def test_batched_generate_matches_one_generate_per_prompt(local_captioner, photo):
    """The shared-vision batched path must give exactly what the model's own generate gives per prompt."""
    loaded = local_captioner._model()
    image = Image.open(io.BytesIO(photo.jpeg))
    questions = [blip_core.Question(s.name, s.question, s.prefix) for s in SCHEMA.attributes]
    batched = blip_core.caption_and_answer(loaded, image, questions, max_new_tokens=8)
    singles = []
    for prompt in blip_core.blip2_prompts("", questions):
        inputs = loaded.processor(images=image, text=prompt, return_tensors="pt")
        output = loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        singles.append(loaded.processor.tokenizer.decode(output[0], skip_special_tokens=True).strip())
    assert [batched.caption, *batched.answers.values()] == singles
    assert len(set(singles)) > 1  # the prompts really differ in what they produce


def test_unloadable_model_is_a_clear_config_error(tmp_path):
    captioner = LocalCaptioner(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="Could not load the captioning model.*CAPTION_MODEL"):
        captioner.warm_up()


def container(model_server):
    """The model container behind the runtime API: the handler inside the published serving stack."""
    return lambda body, content_type: astuple(model_server.invoke(body, content_type, "application/json"))[:2]


def runtime_client(url: str):
    config = Config(region_name="us-east-1", retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=10)
    return boto3.client("sagemaker-runtime", endpoint_url=url, config=config)


def test_sagemaker_captioner_gets_the_same_answers_as_local(local_captioner, model_server, photo):
    with FakeSageMakerRuntime(container(model_server)) as runtime:
        remote = SageMakerCaptioner(runtime_client(runtime.url), "blip2-endpoint", max_new_tokens=8)
        result, usage = remote.caption(photo, SCHEMA.attributes)
        assert runtime.calls[0]["content_type"] == "application/json"
    local, _ = local_captioner.caption(photo, SCHEMA.attributes)
    assert (result.caption, result.answers) == (local.caption, local.answers)
    assert result.model_id == "sagemaker:blip2-endpoint"
    assert usage.kind == "endpoint" and usage.invocations == 1 and usage.model == "tiny/blip2"


@pytest.mark.parametrize(
    "errors, expected, message",
    [
        ([AwsError(400, "ModelNotReadyException", "Model not ready")] * 6, ServiceError, "still starting up"),
        ([AwsError(400, "ThrottlingException", "Rate exceeded")] * 6, ServiceError, "busy"),
        ([AwsError(500, "InternalFailure", "boom")] * 6, ServiceError, "failed"),
        ([AwsError(400, "AccessDeniedException", "no")], ConfigError, "not allowed"),
    ],
)
def test_sagemaker_errors_become_clear_messages(photo, errors, expected, message):
    with FakeSageMakerRuntime(lambda body, ct: (200, b"{}")) as runtime:
        runtime.errors = list(errors)
        with pytest.raises(expected, match=message):
            SageMakerCaptioner(runtime_client(runtime.url), "blip2-endpoint").caption(photo, SCHEMA.attributes)


def test_throttling_is_retried_then_succeeds(model_server, photo):
    with FakeSageMakerRuntime(container(model_server)) as runtime:
        runtime.errors = [AwsError(400, "ThrottlingException", "Rate exceeded")]
        result, _ = SageMakerCaptioner(runtime_client(runtime.url), "blip2-endpoint").caption(photo, SCHEMA.attributes)
        assert result.caption and len(runtime.calls) == 2


def test_stopped_endpoint_says_so(photo):
    with FakeSageMakerRuntime(lambda body, ct: (200, b"{}"), endpoints=()) as runtime:
        with pytest.raises(ServiceError, match="not running .*Admin page"):
            SageMakerCaptioner(runtime_client(runtime.url), "blip2-endpoint").caption(photo, SCHEMA.attributes)


def test_handler_refusing_an_image_is_a_bad_input(model_server):
    broken = normalize_image(jpeg_bytes())
    broken.jpeg = b"\xff\xd8 truncated"
    with FakeSageMakerRuntime(container(model_server)) as runtime:
        with pytest.raises(BadInputError, match="refused this photo: The image could not be decoded."):
            SageMakerCaptioner(runtime_client(runtime.url), "blip2-endpoint").caption(broken, SCHEMA.attributes)


def test_sagemaker_captioner_through_moto_and_the_real_handler(local_captioner, model_server, photo):
    """boto3's request, as moto's sagemaker-runtime received it, is answered by the handler inside the published
    serving stack; that answer, handed back by moto, gives the tiny model's own caption and answers (issue 20:
    this test used to assert back the canned body it had queued)."""
    import base64

    import requests
    from moto import mock_aws
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    def queue(body: str) -> None:  # moto's documented way to set what invoke_endpoint answers next
        requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
                      json={"account_id": "123456789012", "region": "us-east-1",
                            "results": [{"Body": body, "ContentType": "application/json"}]})

    with mock_aws():
        client = boto3.client("sagemaker-runtime", region_name="us-east-1")
        queue(json.dumps({"caption": "not looked at", "answers": {}}))
        SageMakerCaptioner(client, "probe", max_new_tokens=8).caption(photo, SCHEMA.attributes)
        backend = sagemakerruntime_backends["123456789012"]["us-east-1"]
        [answered] = backend.results.values()  # by endpoint (moto 5.2 files them all under None), then request
        [received] = answered
        request = json.loads(base64.b64decode(received))
        backend.results.clear()  # moto answers a repeated request with its first answer
        assert request["Accept"] == "application/json"

        reply = model_server.invoke(request["Body"].encode(), "application/json", request["Accept"])
        assert reply.status == 200, reply.body
        queue(reply.body.decode())
        result, usage = SageMakerCaptioner(client, "blip2-endpoint", max_new_tokens=8).caption(photo, SCHEMA.attributes)
    local, _ = local_captioner.caption(photo, SCHEMA.attributes)
    assert (result.caption, result.answers) == (local.caption, local.answers)
    assert set(result.answers) == set(SCHEMA.names())
    assert usage.kind == "endpoint" and usage.model == "tiny/blip2"
