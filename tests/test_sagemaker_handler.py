"""The SageMaker handler, packaged and loaded the way the container loads it, on the tiny BLIP-2."""

import base64
import io
import json
import subprocess
import sys
import tarfile
import threading
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from pipeline.attributes import load_attribute_schema
from pipeline.captioners.contract import build_request
from pipeline.captioners.sagemaker_runtime import SageMakerCaptioner
from pipeline.normalize import normalize_image
from support.images import encode, jpeg_bytes, product_photo
from support.scripts import load_script
from support.servers import FakeSageMakerRuntime

REPO = Path(__file__).resolve().parent.parent
SCHEMA = load_attribute_schema()


package = load_script("package")
serve_local = load_script("serve_local")


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    """model.tar.gz built by package.py with the tiny weights, unpacked like /opt/ml/model."""
    out = tmp_path_factory.mktemp("dist")
    archive = package.build_archive(out, tiny_model)
    target = tmp_path_factory.mktemp("opt-ml-model")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="module")
def handler(model_dir):
    return serve_local.load_handler(model_dir / "code")


@pytest.fixture(scope="module")
def service(handler, model_dir):
    return serve_local.HandlerService(handler, str(model_dir))


def test_archive_layout_and_reproducibility(tiny_model, tmp_path):
    code_only = package.build_archive(tmp_path / "a")
    with tarfile.open(code_only) as tar:
        assert sorted(tar.getnames()) == ["code/blip_core.py", "code/inference.py", "code/requirements.txt"]
    with_weights = package.build_archive(tmp_path / "b", tiny_model)
    with tarfile.open(with_weights) as tar:
        names = set(tar.getnames())
    assert {"code/inference.py", "code/blip_core.py", "code/requirements.txt", "config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    again = package.build_archive(tmp_path / "c", tiny_model)
    assert again.read_bytes() == with_weights.read_bytes()
    assert (REPO / "pipeline" / "blip_core.py").read_bytes() == tarfile.open(with_weights).extractfile("code/blip_core.py").read()


def test_handler_uses_its_packaged_model_code(handler, model_dir):
    assert Path(handler.blip_core.__file__).resolve() == (model_dir / "code" / "blip_core.py").resolve()


def test_raw_image_end_to_end(handler, service):
    request = handler.input_fn(jpeg_bytes(), "image/jpeg")
    body, content_type = handler.output_fn(handler.predict_fn(request, service.model), "application/json")
    result = json.loads(body)
    assert content_type == "application/json"
    assert set(result) == {"caption", "answers", "model_id", "revision", "latency_ms"}
    assert set(result["answers"]) == {"category", "color", "material", "pattern", "style"}
    assert isinstance(result["caption"], str) and result["latency_ms"] > 0


def test_json_contract_matches_the_local_captioner(handler, service, local_captioner):
    image = normalize_image(jpeg_bytes(color=(20, 160, 60)))
    body = build_request(image.jpeg, SCHEMA.attributes, max_new_tokens=8)
    result = json.loads(handler.output_fn(handler.predict_fn(handler.input_fn(body, "application/json"), service.model))[0])
    local, _ = local_captioner.caption(image, SCHEMA.attributes)
    assert (result["caption"], result["answers"]) == (local.caption, local.answers)


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"hello", "text/plain", "Unsupported content type"),
        (b"not an image", "image/jpeg", "could not be decoded"),
        (b"", "image/png", "empty"),
        (b"{not json", "application/json", "not valid JSON"),
        (json.dumps({"image": "%%%"}).encode(), "application/json", "not valid base64"),
        (json.dumps({"picture": "x"}).encode(), "application/json", 'needs "image"'),
        (json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), "questions": [{"q": 1}]}).encode(), "application/json", '"questions" must be'),
    ],
)
def test_bad_requests_are_plain_4xx(service, body, content_type, message):
    status, payload, _ = service.invoke(body, content_type, "application/json")
    error = json.loads(payload)["error"]
    assert status == 400 and message in error and "Traceback" not in error


def test_oversize_request_is_refused(handler, monkeypatch):
    monkeypatch.setattr(handler, "MAX_REQUEST_BYTES", 1000)
    with pytest.raises(handler.RequestError, match="larger than"):
        handler.input_fn(b"x" * 2000, "image/jpeg")


def test_local_server_round_trip(service):
    server = serve_local.make_server(service, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert urllib.request.urlopen(base + "/ping", timeout=10).status == 200
        request = urllib.request.Request(base + "/invocations", data=encode(product_photo((300, 300)), "PNG"), headers={"Content-Type": "image/png"})
        result = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert set(result["answers"]) == {"category", "color", "material", "pattern", "style"}
        bad = urllib.request.Request(base + "/invocations", data=b"x", headers={"Content-Type": "text/csv"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=10)
        assert caught.value.code == 400 and "Unsupported content type" in json.loads(caught.value.read())["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_pipeline_sagemaker_captioner_through_the_runtime_api_matches_local(service, local_captioner):
    """boto3 -> runtime REST API -> the real handler: same answers as the in-process captioner."""
    image = normalize_image(jpeg_bytes(color=(200, 200, 30), seed=5))

    def container(body: bytes, content_type: str):
        status, payload, _ = service.invoke(body, content_type, "application/json")
        return status, payload

    with FakeSageMakerRuntime(container) as runtime:
        client = boto3.client("sagemaker-runtime", endpoint_url=runtime.url, config=Config(region_name="us-east-1"))
        remote, _ = SageMakerCaptioner(client, "blip2-endpoint", max_new_tokens=8).caption(image, SCHEMA.attributes)
        # an image the handler refuses comes back as a clear per-item error
        broken = normalize_image(jpeg_bytes())
        broken.jpeg = b"garbage"
        with pytest.raises(Exception, match="refused this image: The image could not be decoded"):
            SageMakerCaptioner(client, "blip2-endpoint").caption(broken, SCHEMA.attributes)
    local, _ = local_captioner.caption(image, SCHEMA.attributes)
    assert (remote.caption, remote.answers) == (local.caption, local.answers)


def test_serve_local_cli_starts_and_answers(model_dir):
    process = subprocess.Popen([sys.executable, str(REPO / "sagemaker" / "serve_local.py"), "--model-dir", str(model_dir), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving "), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert urllib.request.urlopen(url + "/ping", timeout=10).status == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_local_cli_reports_a_missing_model(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "sagemaker" / "serve_local.py"), "--model-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: could not load the model") and "Traceback" not in result.stderr
