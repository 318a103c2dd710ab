"""Endpoint start / stop / status / auto-stop against moto, with endpoints made by sagemaker/deploy.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends

from pipeline.admin.endpoint import Actor, EndpointController, NotAllowed
from pipeline.models import Usage
from pipeline.store.sqlite_store import SqliteStore
from support import moto_sagemaker
from support.scripts import load_script

deploy = load_script("deploy")
NAME = "blip2-endpoint"
ADMIN = Actor("boss@example.com", True)
MERCH = Actor("ana@example.com", False)


@pytest.fixture
def aws(monkeypatch):
    moto_sagemaker.install(monkeypatch)
    with mock_aws():
        yield deploy.make_clients("us-east-1")


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "db.sqlite3")


def deploy_endpoint(clients, mode="realtime"):
    moto_sagemaker.deploy_test_endpoint(clients, mode, NAME)


def controller(clients, store, mode="realtime", clock=None):
    return EndpointController(endpoint_name=NAME, mode=mode, clients=clients, store=store, warmup_minutes=10,
                              **({"clock": clock} if clock else {}))


def moto_endpoint():
    return sagemaker_backends["123456789012"]["us-east-1"].endpoints[NAME]


def test_not_deployed_cannot_be_started(aws, store):
    control = controller(aws, store)
    assert control.status().state == "not_deployed"
    result = control.start(ADMIN)
    assert (result.result, result.changed) == ("refused", False)
    assert "deploy it first" in result.message
    assert [(e.who, e.action, e.result) for e in store.audit_log()] == [("boss@example.com", "start", "refused")]


def test_realtime_stop_keeps_model_and_config_and_start_brings_it_back(aws, store):
    deploy_endpoint(aws)
    control = controller(aws, store)
    running = control.status()
    assert (running.state, running.instance_type, running.instance_count) == ("in_service", "ml.g4dn.xlarge", 1)
    assert running.billing and running.since is not None

    stopped = control.stop(ADMIN)
    assert stopped.result == "stopped" and stopped.changed
    status = control.status()
    assert (status.state, status.instance_count, status.billing) == ("stopped", 0, False)
    assert status.config_name == running.config_name
    sm = aws["sagemaker"]
    assert sm.list_endpoints()["Endpoints"] == []
    assert len(sm.list_models()["Models"]) == 1 and len(sm.list_endpoint_configs()["EndpointConfigs"]) == 1
    assert control.stop(ADMIN).result == "already stopped"  # idempotent

    started = control.start(ADMIN)
    assert started.result == "started" and "about 10 minutes" in started.message
    assert control.status().state == "in_service"
    assert control.start(ADMIN).result == "already running"
    assert [(e.action, e.result) for e in reversed(store.audit_log())] == [
        ("stop", "stopped"), ("stop", "already stopped"), ("start", "started"), ("start", "already running")]


def test_second_start_while_creating_is_refused(aws, store):
    deploy_endpoint(aws)
    control = controller(aws, store)
    moto_endpoint().endpoint_status = "Creating"
    result = control.start(ADMIN)
    assert result.result == "refused" and "creating" in result.message
    assert control.stop(ADMIN).result == "refused"  # cannot delete mid-creation either


def test_only_admins_may_start_or_stop(aws, store):
    deploy_endpoint(aws)
    control = controller(aws, store)
    with pytest.raises(NotAllowed, match="Only admins"):
        control.stop(MERCH)
    with pytest.raises(NotAllowed):
        control.start(MERCH)
    assert control.status().state == "in_service"  # nothing happened
    assert [(e.who, e.result, e.detail) for e in store.audit_log()] == [("ana@example.com", "refused", "not an admin")] * 2


def put_invocations(clients, when: datetime, count: float = 3) -> None:
    clients["cloudwatch"].put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
        "MetricName": "Invocations", "Timestamp": when, "Value": count,
        "Dimensions": [{"Name": "EndpointName", "Value": NAME}, {"Name": "VariantName", "Value": "AllTraffic"}],
    }])


def test_autostop_stops_only_after_the_idle_time(aws, store):
    deploy_endpoint(aws)
    started = controller(aws, store).status().since  # when it came up, as AWS reports it
    now = [started + timedelta(minutes=20)]
    control = controller(aws, store, clock=lambda: now[0])
    kept = control.autostop(idle_minutes=30)
    assert kept.result == "kept running" and "20 min ago" in kept.message  # never invoked: idle since it came up

    now[0] = started + timedelta(minutes=45)
    put_invocations(aws, now[0] - timedelta(minutes=5))  # CloudWatch saw traffic 5 minutes ago
    assert control.autostop(idle_minutes=30).result == "kept running"

    now[0] = started + timedelta(minutes=90)  # 50 idle minutes since that traffic
    result = control.autostop(idle_minutes=30)
    assert result.result == "stopped" and "idle" in result.message
    assert control.status().state == "stopped"
    assert store.audit_log()[0].who == "autostop" and store.audit_log()[0].action == "autostop"
    assert control.autostop(idle_minutes=30).result == "already stopped"


def test_autostop_counts_calls_recorded_in_the_usage_ledger(aws, store, tmp_path):
    deploy_endpoint(aws)
    from pipeline.ingest.sources import collect_sources
    from pipeline.ingest.sources import IngestLimits
    from support.images import jpeg_bytes

    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes())
    batch = store.create_batch("b", "t", collect_sources([photo], IngestLimits()))
    [item] = store.list_items(batch.id)
    store.record_usage(item.id, [Usage(kind="endpoint", model=NAME)])
    recorded = datetime.fromisoformat(store.last_usage_at("endpoint"))
    control = controller(aws, store, clock=lambda: recorded + timedelta(minutes=10))
    assert control.status().last_invocation == recorded
    assert control.autostop(idle_minutes=30).result == "kept running"


def test_async_start_and_stop_move_the_minimum_capacity(aws, store):
    deploy_endpoint(aws, mode="async")
    control = controller(aws, store, mode="async")
    targets = lambda: aws["application-autoscaling"].describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]  # noqa: E731
    assert control.status().state == "in_service"
    assert control.start(ADMIN).result == "started"
    assert targets()[0]["MinCapacity"] == 1 and targets()[0]["MaxCapacity"] == 2
    assert control.start(ADMIN).result == "already running"
    assert control.stop(ADMIN).result == "stopped"
    assert targets()[0]["MinCapacity"] == 0
    status = control.status()
    assert (status.state, status.instance_count) == ("stopped", 0)
    assert control.stop(ADMIN).result == "already stopped"


def test_cli_status_stop_start_against_a_moto_server(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    from moto.server import ThreadedMotoServer

    moto_sagemaker.install(monkeypatch)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deploy_endpoint(deploy.make_clients("us-east-1", url))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "DATA_DIR": str(tmp_path / "data"), "USER": "ops"}

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "pipeline", "endpoint", *args, "--endpoint-url", url],
                                  capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

        status = cli("status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("blip2-endpoint (realtime): in_service, 1 × ml.g4dn.xlarge")
        stop = cli("stop")
        assert (stop.returncode, stop.stdout.split(".")[0]) == (0, "stop: stopped")
        assert "stopped, 0 × ml.g4dn.xlarge" in cli("status").stdout
        assert cli("autostop", "--idle-minutes", "5").stdout.startswith("autostop: already stopped")
        assert cli("start").stdout.startswith("start: started. Starting ml.g4dn.xlarge")
        audit = SqliteStore(tmp_path / "data" / "pipeline.sqlite3").audit_log()
        assert [(e.who, e.result) for e in reversed(audit)] == [("ops (cli)", "stopped"), ("ops (cli)", "started")]
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_without_an_endpoint_stop_and_autostop_have_nothing_to_do_and_call_no_aws(store, mode):
    """ENDPOINT_ENABLED=false (review item 9): no clients at all, so any AWS call would raise KeyError; stop is audited."""
    from pipeline.admin.endpoint import NO_ENDPOINT

    control = EndpointController(endpoint_name=NAME, mode=mode, clients={}, store=store, warmup_minutes=10, enabled=False)
    stopped = control.stop(Actor("ana", True))
    assert (stopped.action, stopped.result, stopped.message) == ("stop", "nothing to do", NO_ENDPOINT)
    idle = control.autostop(30)
    assert (idle.action, idle.result, idle.message) == ("autostop", "nothing to do", NO_ENDPOINT)
    assert [(e.action, e.result) for e in store.audit_log(limit=5)] == [("stop", "nothing to do")]
    with pytest.raises(NotAllowed):  # still admins only
        control.stop(Actor("bob", False))
