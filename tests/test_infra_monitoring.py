"""The pipeline's alarms and CloudWatch dashboard (infra/tagger_infra/monitoring.py), on the synthesized
template with aws_cdk.assertions: they read the metrics the tasks write as EMF (same namespace, names and
dimensions as pipeline/observability), and alarm to the existing alert topic."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template

from pipeline.observability import metrics as m
from pipeline.observability.metrics import EmfHandler, Observation, emf_document
from pipeline.observability.trace import STAGES
from pipeline.settings import Settings
from support.infra import VARIANT, synth


ON = {"pipeline_monitoring": True}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """cdk.json as shipped, with the pipeline monitoring switched on."""
    return synth(tmp_path_factory.mktemp("cdk-monitoring"), ON)


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("cdk-monitoring-async"), {**VARIANT, **ON})


@pytest.fixture(scope="module")
def off(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("cdk-monitoring-off"))


def alarm(template: Template, suffix: str) -> dict:
    [found] = [r["Properties"] for r in template.find_resources("AWS::CloudWatch::Alarm").values()
               if r["Properties"].get("AlarmName", "").endswith(suffix)]
    return found


def task_environment(template: Template) -> dict[str, str]:
    [task] = template.find_resources("AWS::ECS::TaskDefinition").values()
    [container] = task["Properties"]["ContainerDefinitions"]
    return {e["Name"]: e["Value"] for e in container["Environment"]}


def test_off_by_default_no_alarm_no_dashboard_and_the_tasks_write_no_metrics(off, shipped, variant):
    """Custom metrics, alarms and dashboards are billed: cdk.json's deployment (pipeline_monitoring false) has
    none of them, and the estimator counts the two alarms when they exist."""
    template = Template.from_stack(off.app)
    assert task_environment(template)["METRICS_FORMAT"] == "off"
    assert template.find_resources("AWS::CloudWatch::Dashboard") == {}
    names = [r["Properties"]["AlarmName"] for r in template.find_resources("AWS::CloudWatch::Alarm").values()]
    assert not any(n.endswith(("-item-failure-rate", "-caption-latency-p95")) for n in names)
    for deployed in (off, shipped, variant):
        t = Template.from_stack(deployed.app)
        assert len(t.find_resources("AWS::CloudWatch::Alarm")) == deployed.config.cost_assumptions().alarms
    assert task_environment(Template.from_stack(shipped.app))["METRICS_FORMAT"] == "emf"


def test_failure_rate_alarm_is_metric_math_over_the_emf_item_counters_to_the_alert_topic(shipped):
    template = Template.from_stack(shipped.app)
    namespace = task_environment(template)["METRICS_NAMESPACE"]
    assert namespace == shipped.config.app_name
    rate = alarm(template, "-item-failure-rate")
    queries = {q["Id"]: q for q in rate["Metrics"]}
    expression = next(q for q in rate["Metrics"] if "Expression" in q)
    assert expression["ReturnData"] is True and "100 * FILL(failed, 0)" in expression["Expression"]
    assert ">= 5" in expression["Expression"]  # a single failed photo out of one is no emergency
    for name, metric_name in (("ok", m.ITEMS_OK), ("failed", m.ITEMS_FAILED)):
        stat = queries[name]["MetricStat"]
        assert stat["Metric"] == {"Namespace": namespace, "MetricName": metric_name}  # the dimensionless EMF series
        assert stat["Stat"] == "Sum" and stat["Period"] == 300 and queries[name]["ReturnData"] is False
    assert rate["Threshold"] == 20 and rate["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert (rate["EvaluationPeriods"], rate["DatapointsToAlarm"]) == (3, 2) and rate["TreatMissingData"] == "notBreaching"
    [topic] = template.find_resources("AWS::SNS::Topic", {"Properties": {"DisplayName": Match.string_like_regexp("alerts")}})
    assert rate["AlarmActions"] == [{"Ref": topic}]


def test_caption_latency_alarm_watches_p95_of_the_caption_stage_with_a_mode_dependent_threshold(shipped, variant):
    realtime, asynchronous = (alarm(Template.from_stack(s.app), "-caption-latency-p95") for s in (shipped, variant))
    for props in (realtime, asynchronous):
        assert props["MetricName"] == m.STAGE_LATENCY and props["Dimensions"] == [{"Name": "Stage", "Value": "caption"}]
        assert props["ExtendedStatistic"] == "p95" and props["Period"] == 300 and props["EvaluationPeriods"] == 3
    assert realtime["Threshold"] == 15_000 and asynchronous["Threshold"] == 600_000  # async queues and may start from zero


def test_the_cloudwatch_dashboard_shows_throughput_failures_by_kind_stage_percentiles_and_tokens(shipped):
    template = Template.from_stack(shipped.app)
    [board] = template.find_resources("AWS::CloudWatch::Dashboard").values()
    assert board["Properties"]["DashboardName"] == f"{shipped.config.app_name}-pipeline"
    body = json.loads("".join(part if isinstance(part, str) else "REF" for part in board["Properties"]["DashboardBody"]["Fn::Join"][1]))
    widgets = {w["properties"]["title"]: w["properties"] for w in body["widgets"]}
    namespace = shipped.config.app_name

    def series(title: str) -> list[list]:
        return widgets[title]["metrics"]

    assert [s[:2] for s in series("Throughput (items per 5 minutes)")] == [[namespace, m.ITEMS_OK], [namespace, m.ITEMS_FAILED]]
    [search] = series("Failures by kind (error_kind)")
    assert "SEARCH(" in search[0]["expression"] and "ErrorKind" in search[0]["expression"] and m.ITEMS_FAILED in search[0]["expression"]
    for statistic in ("p50", "p95"):
        rows = series(f"Stage latency {statistic} (ms)")
        assert [row[3] for row in rows] == list(STAGES)  # Namespace, StageLatency, "Stage", <stage>
        assert all(row[1] == m.STAGE_LATENCY and row[2] == "Stage" and row[-1]["stat"] == statistic for row in rows)
    assert {row[1] for row in series("OpenAI tokens")} == {m.OPENAI_INPUT_TOKENS, m.OPENAI_OUTPUT_TOKENS}
    assert {row[1] for row in series("Caption cache and endpoint calls")} == {m.CAPTION_CACHE_HITS, m.CAPTION_CACHE_MISSES,
                                                                              m.ENDPOINT_INVOCATIONS}
    assert {"Item failure rate (%)", "Caption latency p95 (ms)"} <= set(widgets)


def test_what_the_tasks_write_is_what_the_alarms_read(shipped):
    """A task with the stack's environment writes EMF documents whose namespace, metric and dimensions are the
    ones the alarms name (a renamed metric or dimension on either side breaks this)."""
    template = Template.from_stack(shipped.app)
    env = task_environment(template)
    settings = Settings(_env_file=None, metrics_namespace=env["METRICS_NAMESPACE"], metrics_format="emf")
    handler = EmfHandler(settings.metrics_namespace)
    latency = emf_document(Observation(m.STAGE_LATENCY, 812.0, "Milliseconds", "histogram", {"Stage": "caption"}, (("Stage",),)),
                           namespace=handler.namespace, timestamp_ms=1_764_669_600_000)
    failed = emf_document(Observation(m.ITEMS_FAILED, 1, "Count", "counter", {"ErrorKind": "bad_image"}, ((), ("ErrorKind",))),
                          namespace=handler.namespace, timestamp_ms=1_764_669_600_000)
    p95 = alarm(template, "-caption-latency-p95")
    [directive] = latency["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == p95["Namespace"] and directive["Metrics"][0]["Name"] == p95["MetricName"]
    assert {d["Name"]: latency[d["Name"]] for d in p95["Dimensions"]} == {"Stage": "caption"}
    rate = alarm(template, "-item-failure-rate")
    failed_query = next(q for q in rate["Metrics"] if q["Id"] == "failed")["MetricStat"]["Metric"]
    [directive] = failed["_aws"]["CloudWatchMetrics"]
    assert [] in directive["Dimensions"]  # published without dimensions too: the series the alarm reads
    assert (directive["Namespace"], directive["Metrics"][0]["Name"]) == (failed_query["Namespace"], failed_query["MetricName"])


@pytest.fixture(scope="module")
def nagged(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("cdk-monitoring-nag"), {**VARIANT, **ON}, nag=True)


def test_cdk_nag_cfn_lint_and_checkov_stay_clean_with_the_pipeline_monitoring(nagged):
    import subprocess
    import sys
    from pathlib import Path

    from aws_cdk.assertions import Annotations

    nag = Match.string_like_regexp("AwsSolutions-|CdkNagValidationFailure")
    for stack in (nagged.registry, nagged.app):
        annotations = Annotations.from_stack(stack)
        found = annotations.find_error("*", nag) + annotations.find_warning("*", nag)
        assert not found, [f"{m.id}: {str(m.entry.data).splitlines()[0]}" for m in found]
    files = nagged.template_files()
    lint = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), *map(str, files)], capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    checkov = Path(__file__).resolve().parents[1] / ".venv-checkov" / "bin" / "checkov"
    if not checkov.exists():
        pytest.fail(f"{checkov} is missing: run `make install-dev`")
    args = [str(checkov), "--framework", "cloudformation", "--compact", "--quiet", "--skip-download", "--output", "json"]
    for template in files:
        args += ["-f", str(template)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, failed
    alarms = {r["Properties"]["AlarmName"] for r in Template.from_stack(nagged.app).find_resources("AWS::CloudWatch::Alarm").values()}
    assert {"product-tagging-item-failure-rate", "product-tagging-caption-latency-p95"} <= alarms  # what was checked
