from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

# Never reach real AWS from a test, whatever the machine has configured.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
}.items():
    os.environ[_key] = _value
os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture(autouse=True, scope="session")
def moto_dynamodb_applies_one_request_at_a_time():
    """moto's in-memory DynamoDB is not thread-safe (a transaction deep-copies tables while another
    worker or a lease heartbeat writes: "dictionary changed size during iteration"). Real DynamoDB
    applies each request atomically, so moto's request handler is serialized, here, once for all tests."""
    try:
        from moto.dynamodb.responses import DynamoHandler
    except ImportError:  # .venv-container (the serving container's packages) has no moto and needs none
        yield
        return
    original, lock = DynamoHandler.call_action, threading.RLock()

    def call_action(self):
        with lock:
            return original(self)

    DynamoHandler.call_action = call_action
    yield
    DynamoHandler.call_action = original


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from pipeline.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("tiny-blip2"))


@pytest.fixture(scope="session")
def local_captioner(tiny_model):
    from pipeline.captioners.local import LocalCaptioner

    captioner = LocalCaptioner(str(tiny_model), max_new_tokens=8)
    captioner.warm_up()
    return captioner


@pytest.fixture(scope="session")
def model_dir(tiny_model, tmp_path_factory) -> Path:
    """/opt/ml/model as SageMaker unpacks package.py's archive: code/ + the tiny weights."""
    from support.model_server import unpacked_artifact

    return unpacked_artifact(tmp_path_factory.mktemp("artifact"), tiny_model)


@pytest.fixture(scope="session")
def model_server(model_dir):
    """The handler inside the published SageMaker Hugging Face serving stack, on the tiny model."""
    from support.model_server import ModelServer

    return ModelServer(model_dir, env={"BLIP2_MODEL_ID": "tiny/blip2", "BLIP2_MODEL_REVISION": "0" * 40})


@pytest.fixture(scope="session")
def responder(model_server):
    """The real SageMaker handler on the tiny model, for the emulated async endpoint and batch jobs."""
    from support.sagemaker_emulator import handler_responder

    return handler_responder(model_server)


@pytest.fixture
def make_settings(tmp_path, tiny_model):
    from pipeline.settings import Settings

    def factory(**overrides):
        values = dict(data_dir=tmp_path / "data", caption_model=str(tiny_model), summarizer="offline", max_new_tokens=8, concurrency=2)
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return factory


@pytest.fixture
def stages(make_settings, local_captioner):
    from pipeline.service import build_stages

    return build_stages(make_settings(), captioner=local_captioner)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path):
    """Each test that asks for `store` runs on both stores: SQLite, and DynamoDB on moto (a file may define its own)."""
    import boto3
    from moto import mock_aws

    from pipeline.store.dynamo_store import DynamoStore
    from pipeline.store.sqlite_store import SqliteStore

    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "store.sqlite3")
        return
    with mock_aws():
        dynamo = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "tagging-test")
        dynamo.create_table()
        yield dynamo
