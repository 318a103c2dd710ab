"""The SageMaker handler inside the published serving stack (toolkit + model server), on the tiny BLIP-2.

`make test` runs this file twice: in .venv (the local captioner's transformers) and in
.venv-container (the serving container's transformers, sagemaker/container.json).
"""

import base64
import json
import os
import shutil
import tarfile
import time
from dataclasses import astuple
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from pipeline.attributes import load_attribute_schema
from pipeline.captioners.contract import build_request, endpoint_error, parse_response
from pipeline.captioners.sagemaker_async import _failure as read_async_failure_file
from pipeline.captioners.sagemaker_runtime import SageMakerCaptioner
from pipeline.errors import BadInputError, ServiceError
from pipeline.images.normalize import normalize_image
from support.images import encode, jpeg_bytes, product_photo
from support.model_server import ModelServer
from support.scripts import load_script
from support.servers import FakeSageMakerRuntime

REPO = Path(__file__).resolve().parent.parent
SCHEMA = load_attribute_schema()
CONTAINER = json.loads((REPO / "sagemaker" / "container.json").read_text())
package = load_script("package")


def json_request(**fields) -> bytes:
    return json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), **fields}).encode()


def test_tests_run_on_the_pinned_transformers():
    import transformers

    if os.environ.get("SERVING_CONTAINER_VENV"):
        assert transformers.__version__ == CONTAINER["transformers"]
    else:
        pins = (REPO / "requirements-local.txt").read_text()
        assert f"transformers=={transformers.__version__}" in pins


def test_archive_layout_and_reproducibility(tiny_model, tmp_path, monkeypatch):
    code_only = package.build_archive(tmp_path / "a")
    with tarfile.open(code_only) as tar:
        # no code/requirements.txt: the toolkit would pip-install it over the container's transformers
        assert sorted(tar.getnames()) == ["code/blip_core.py", "code/inference.py"]
    with_weights = package.build_archive(tmp_path / "b", tiny_model)
    with tarfile.open(with_weights) as tar:
        names = set(tar.getnames())
    assert {"code/inference.py", "code/blip_core.py", "config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # built at another moment
    again = package.build_archive(tmp_path / "c", tiny_model)
    assert again.read_bytes() == with_weights.read_bytes()
    assert (REPO / "pipeline" / "blip_core.py").read_bytes() == tarfile.open(with_weights).extractfile("code/blip_core.py").read()


def test_the_toolkit_runs_our_four_functions_with_the_packaged_model_code(model_server, model_dir):
    handler = model_server.handler
    assert Path(handler.__file__).resolve() == (model_dir / "code" / "inference.py").resolve()
    assert Path(handler.blip_core.__file__).resolve() == (model_dir / "code" / "blip_core.py").resolve()
    service = model_server.service._entry_point.__self__  # HuggingFaceHandlerService
    assert (service.preprocess, service.predict, service.postprocess) == (handler.input_fn, handler.predict_fn, handler.output_fn)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_raw_image_answers_one_json_object(model_server, accept):
    reply = model_server.invoke(jpeg_bytes(), "image/jpeg", accept)
    assert reply.status == 200 and reply.content_type == "application/json"
    result = reply.json()
    assert isinstance(result, dict), result  # not [body, content_type]
    assert set(result) == {"caption", "answers", "model_id", "revision", "latency_ms"}
    assert set(result["answers"]) == {"category", "color", "material", "pattern", "style"}
    assert (result["model_id"], result["revision"]) == ("tiny/blip2", "0" * 40)


def test_png_and_json_requests_answer_like_the_local_captioner(model_server, local_captioner):
    assert model_server.invoke(encode(product_photo((300, 300)), "PNG"), "image/png").status == 200
    image = normalize_image(jpeg_bytes(color=(20, 160, 60)))
    reply = model_server.invoke(build_request(image.jpeg, SCHEMA.attributes, max_new_tokens=8), "application/json", "application/json")
    remote = parse_response(reply.body)  # what the real-time, async and batch-transform readers use
    local, _ = local_captioner.caption(image, SCHEMA.attributes)
    assert (remote["caption"], remote["answers"]) == (local.caption, local.answers)
    assert remote["model_id"] == "tiny/blip2"


TOO_DEEP = json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), "questions": [[[[[{"name": "x"}]]]]]}).encode()


@pytest.mark.parametrize(
    "body, content_type, accept, reason",
    [
        (b"hello", "text/plain", None, "Unsupported content type"),
        (b"not an image", "image/jpeg", None, "could not be decoded"),
        (b"", "image/png", None, "empty"),
        (b"{not json", "application/json", None, "not valid JSON"),
        (json.dumps({"image": "%%%"}).encode(), "application/json", None, "not valid base64"),
        (json.dumps({"picture": "x"}).encode(), "application/json", None, 'needs "image"'),
        (json_request(questions=[{"q": 1}]), "application/json", None, '"questions" must be'),
        (json_request(questions=[{"name": f"q{i}", "question": "Colour?"} for i in range(17)]), "application/json", None, "At most 16 questions"),
        (json_request(caption_prompt="a " * 200_000), "application/json", None, '"caption_prompt" is longer than 300'),
        (json_request(questions=[{"name": "c", "question": "x" * 301}]), "application/json", None, '"question" is longer than 300'),
        (json_request(max_new_tokens=65), "application/json", None, "from 1 to 64"),
        (json_request(max_new_tokens=0), "application/json", None, "from 1 to 64"),
        (json_request(max_new_tokens="30"), "application/json", None, "from 1 to 64"),
        (TOO_DEEP, "application/json", None, "nested more than 4 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", None, "nested more than 4 levels"),
        # brackets inside an unterminated string are text, not nesting: the body is simply not JSON
        (b'{"image": "' + b'\\"' * 2000 + b"[[[[[[[[", "application/json", None, "not valid JSON"),
        (jpeg_bytes(), "image/jpeg", "text/csv", "Unsupported Accept"),
    ],
)
def test_refused_requests_are_plain_sentences_through_the_toolkit(model_server, body, content_type, accept, reason):
    reply = model_server.invoke(body, content_type, accept)
    assert reply.status == 400
    answer = reply.json()  # the model server's error document
    assert answer["code"] == 400 and answer["message"].startswith("[refused] ")
    error = endpoint_error(reply.body, reply.status)
    assert isinstance(error, BadInputError) and reason in str(error) and "Traceback" not in str(error)
    assert str(error).startswith("The captioning model refused this photo: ")


def test_oversize_request_is_refused(model_server, monkeypatch):
    monkeypatch.setattr(model_server.handler, "MAX_REQUEST_BYTES", 1000)
    reply = model_server.invoke(b"x" * 2000, "image/jpeg")
    assert isinstance(endpoint_error(reply.body), BadInputError) and "larger than" in reply.json()["message"]


def test_a_model_fault_is_a_retryable_service_error_on_every_path(model_server, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model_server.handler.blip_core, "caption_and_answer", out_of_memory)
    reply = model_server.invoke(json_request(), "application/json", "application/json")
    assert reply.status == 400  # the toolkit answers 400 for every exception; the marker tells them apart
    for error in (endpoint_error(reply.body, reply.status), read_async_failure_file(reply.body)):
        assert isinstance(error, ServiceError) and "can be retried" in str(error) and "CUDA" not in str(error)
    with FakeSageMakerRuntime(lambda body, ct: astuple(model_server.invoke(body, ct, "application/json"))[:2]) as runtime:
        client = boto3.client("sagemaker-runtime", endpoint_url=runtime.url, config=Config(region_name="us-east-1", retries={"max_attempts": 1}))
        with pytest.raises(ServiceError, match="can be retried"):
            SageMakerCaptioner(client, "blip2-endpoint").caption(normalize_image(jpeg_bytes()), SCHEMA.attributes)


def test_the_runtime_api_client_reads_answers_and_refusals(model_server, local_captioner):
    """boto3 -> runtime REST API -> toolkit -> handler: same answers as in-process; a refusal is the photo's error."""
    image = normalize_image(jpeg_bytes(color=(200, 200, 30), seed=5))
    with FakeSageMakerRuntime(lambda body, ct: astuple(model_server.invoke(body, ct, "application/json"))[:2]) as runtime:
        client = boto3.client("sagemaker-runtime", endpoint_url=runtime.url, config=Config(region_name="us-east-1"))
        remote, usage = SageMakerCaptioner(client, "blip2-endpoint", max_new_tokens=8).caption(image, SCHEMA.attributes)
        broken = normalize_image(jpeg_bytes())
        broken.jpeg = b"garbage"
        with pytest.raises(BadInputError, match=r"^The captioning model refused this photo: The image could not be decoded\.$"):
            SageMakerCaptioner(client, "blip2-endpoint").caption(broken, SCHEMA.attributes)
    local, _ = local_captioner.caption(image, SCHEMA.attributes)
    assert (remote.caption, remote.answers) == (local.caption, local.answers)
    assert usage.model == "tiny/blip2"


def test_code_only_artifact_loads_the_pinned_model_and_reports_it(tiny_model, tmp_path):
    from support.model_server import unpacked_artifact

    code_only = unpacked_artifact(tmp_path)
    server = ModelServer(code_only, env={"BLIP2_MODEL_ID": str(tiny_model), "BLIP2_MODEL_REVISION": "main"})
    answer = server.invoke(jpeg_bytes(), "image/jpeg").json()
    assert (answer["model_id"], answer["revision"]) == (str(tiny_model), "main")


def test_code_only_artifact_without_a_model_fails_every_request_as_a_service_error(tmp_path):
    from support.model_server import unpacked_artifact

    code_only = unpacked_artifact(tmp_path)
    server = ModelServer(code_only, env={"BLIP2_MODEL_ID": "", "BLIP2_MODEL_REVISION": ""})  # MMS logs the load error
    reply = server.invoke(jpeg_bytes(), "image/jpeg")  # the toolkit tries to load again, per request
    assert reply.status >= 400 and "BLIP2_MODEL_ID" in reply.json()["message"]
    assert isinstance(endpoint_error(reply.body, reply.status), ServiceError)


def test_a_processor_without_image_tokens_fails_at_load(tiny_model, tmp_path):
    from pipeline.blip_core import ModelLoadError, load_captioning_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    processor_config = broken / "processor_config.json"
    config = json.loads(processor_config.read_text())
    config.pop("num_query_tokens", None)
    processor_config.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="inserts 0 image tokens but the model reads"):
        load_captioning_model(str(broken))
