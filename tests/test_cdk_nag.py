"""cdk-nag's AwsSolutions pack on the CDK app (infra/): zero findings that are neither fixed in the stacks nor
accepted with a reason in infra/tagger_infra/nag.py, on every stack of the shipped and the variant deployment;
the check bites without the acceptances; and `cdk synth` works from a shell without the venv on PATH.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.infra import INFRA, VARIANT, Synthesized, profile_overrides, synth

from aws_cdk.assertions import Annotations, Match

NAG = Match.string_like_regexp("AwsSolutions-|CdkNagValidationFailure")
ACKNOWLEDGED = {"AwsSolutions-IAM5", "AwsSolutions-S1", "AwsSolutions-ELB2", "AwsSolutions-ECS2", "AwsSolutions-ECS4",
                "AwsSolutions-SMG4", "AwsSolutions-EC23", "AwsSolutions-VPC7", "AwsSolutions-COG2", "AwsSolutions-COG8"}
FIXED = {"AwsSolutions-SQS3", "AwsSolutions-SNS3", "AwsSolutions-COG1"}  # DLQ, SSL-only topics, password policy


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("nag-default"), nag=True)


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("nag-variant"), VARIANT, nag=True)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    """The deployment profiles other than the shipped one (issue 17), with the pack."""
    from tagger_infra.config import PROFILES

    return {name: synth(tmp_path_factory.mktemp(f"nag-{name}"), profile_overrides(name), nag=True) for name in PROFILES if name != "own-alb"}


def findings(deployed: Synthesized) -> dict[str, list[str]]:
    """Unaccepted cdk-nag errors and warnings, per stack: "path: message"."""
    out = {}
    for stack in (deployed.registry, deployed.app):
        annotations = Annotations.from_stack(stack)
        messages = annotations.find_error("*", NAG) + annotations.find_warning("*", NAG)
        out[stack.stack_name] = [f"{m.id}: {str(m.entry.data).splitlines()[0]}" for m in messages]
    return out


def rule_ids(messages: list[str]) -> set[str]:
    return {m.split(": ", 1)[1].split("[", 1)[0].split(":", 1)[0] for m in messages}


def report_rows(deployed: Synthesized) -> list[dict[str, str]]:
    """cdk-nag's compliance report (one CSV per stack in the cloud assembly)."""
    reports = sorted(deployed.outdir.glob("AwsSolutions-*-NagReport.csv"))
    assert len(reports) == 2, reports
    return [row for report in reports for row in csv.DictReader(report.read_text().splitlines())]


@pytest.mark.parametrize("deployment", ["shipped", "variant"])
def test_every_stack_has_no_unaccepted_findings(deployment, request):
    deployed = request.getfixturevalue(deployment)
    found = findings(deployed)
    assert found.keys() == {"ProductTaggingRegistry", "ProductTagging"}
    assert not any(found.values()), json.dumps(found, indent=1)
    rows = report_rows(deployed)  # the pack did run, on both stacks
    assert {r["Resource ID"].split("/")[0] for r in rows} == {"ProductTaggingRegistry", "ProductTagging"}
    assert {r["Compliance"] for r in rows} <= {"Compliant", "Suppressed", "Not Applicable"}
    assert sum(r["Compliance"] == "Compliant" for r in rows) > 50


def test_every_profile_has_no_unaccepted_findings(profiles):
    """Business hours (wake function, its roles, the closed page), dual-stack ALB, the shared ALB and the batch-only
    profile (the key from an SSM parameter, no endpoint): clean too."""
    assert len(profiles) == 4 and "own-alb-ipv6-batch" in profiles
    for name, deployed in profiles.items():
        found = findings(deployed)
        assert not any(found.values()), (name, json.dumps(found, indent=1))
        assert {r["Compliance"] for r in report_rows(deployed)} <= {"Compliant", "Suppressed", "Not Applicable"}, name


def test_without_the_acknowledgements_the_check_fails_and_the_fixes_hold(tmp_path, monkeypatch):
    """Every acceptance in nag.py is needed (the pack reports those rules without it); the fixed rules stay quiet."""
    import tagger_infra.stacks

    monkeypatch.setattr(tagger_infra.stacks, "acknowledge", lambda registry, app: None)
    everything = {**VARIANT, "auth": "cognito", "vpc_flow_logs": "off"}  # + the Cognito pool and the VPC7 default
    found = findings(synth(tmp_path, everything, nag=True))
    rules = rule_ids(sum(found.values(), []))
    assert ACKNOWLEDGED <= rules, ACKNOWLEDGED - rules
    assert not rules & FIXED, rules & FIXED
    assert "AwsSolutions-IAM5" in rule_ids(found["ProductTaggingRegistry"])


def test_every_acknowledgement_is_used_and_has_a_reason(shipped, variant):
    """No stale acceptance: each reason written into a template is the reason of some suppressed finding."""
    used = " | ".join(r["Exception Reason"] for d in (shipped, variant) for r in report_rows(d) if r["Compliance"] == "Suppressed")
    declared = {}
    for deployed in (shipped, variant):
        for template in deployed.template_files():
            body = json.loads(template.read_text())
            metadata = [body.get("Metadata", {})] + [r.get("Metadata", {}) for r in body["Resources"].values()]
            for rule in (m for meta in metadata for m in meta.get("cdk_nag", {}).get("rules_to_suppress", [])):
                # cdk-nag base64-encodes a reason with characters beyond Latin-1
                reason = base64.b64decode(rule["reason"]).decode() if rule.get("is_reason_encoded") else rule["reason"]
                declared[reason] = rule["id"]
    assert len(declared) >= 15
    for reason, rule in declared.items():
        assert len(reason) >= 40, (rule, reason)
        assert reason in used, f"{rule} accepted but never reported: {reason[:80]}"


def test_resource_star_only_for_actions_that_cannot_be_scoped(shipped, variant, profiles):
    from tagger_infra.nag import UNSCOPED_ACTIONS

    seen = set()
    for deployed in (shipped, variant, *profiles.values()):
        for template in deployed.template_files():
            for logical_id, resource in json.loads(template.read_text())["Resources"].items():
                documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])] \
                    if resource["Type"] == "AWS::IAM::Role" else \
                    [resource["Properties"]["PolicyDocument"]] if resource["Type"] == "AWS::IAM::Policy" else []
                for statement in (s for d in documents for s in d["Statement"] if s["Effect"] == "Allow"):
                    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                    assert not [a for a in actions if "*" in a], (logical_id, actions)
                    if "*" in (statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]):
                        assert set(actions) <= UNSCOPED_ACTIONS.keys(), (logical_id, set(actions) - UNSCOPED_ACTIONS.keys())
                        seen |= set(actions)
    assert {"ecr:GetAuthorizationToken", "sagemaker:ListEndpointConfigs", "elasticloadbalancing:DescribeRules"} <= seen


def test_async_queue_has_an_encrypted_ssl_only_dead_letter_queue(variant):
    from aws_cdk.assertions import Template

    app = Template.from_stack(variant.app)
    queues = app.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2
    [(source_id, source)] = [(k, q) for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    [(dlq_id, dlq)] = [(k, q) for k, q in queues.items() if k != source_id]
    redrive = source["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert redrive["maxReceiveCount"] == 14 * variant.config.max_count
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True and dlq["Properties"]["MessageRetentionPeriod"] == 14 * 86400
    ssl_only = [p["Properties"] for p in app.find_resources("AWS::SQS::QueuePolicy").values()
                if {"Ref": dlq_id} in p["Properties"]["Queues"]]
    assert ssl_only and ssl_only[0]["PolicyDocument"]["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    for topic_policy in app.find_resources("AWS::SNS::TopicPolicy").values():
        deny = [s for s in topic_policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert len(app.find_resources("AWS::SNS::TopicPolicy")) == 3  # alerts + async success + async error


def test_flow_logs_are_an_option_with_the_dashboards_retention(shipped, variant):
    from aws_cdk.assertions import Template

    Template.from_stack(shipped.app).resource_count_is("AWS::EC2::FlowLog", 0)  # default "off": no ingestion charge
    app = Template.from_stack(variant.app)
    [flow_log] = app.find_resources("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "ALL" and flow_log["Properties"]["LogDestinationType"] == "cloud-watch-logs"
    retention = {g["Properties"].get("RetentionInDays") for g in app.find_resources("AWS::Logs::LogGroup").values()}
    assert retention == {variant.config.log_retention_days}


def test_cdk_synth_works_from_a_shell_without_the_venv(tmp_path):
    """cdk.json's "app", run the way the CDK CLI runs it (`npx cdk synth` when infra/node_modules has the CLI), with
    the venv's bin/ off PATH: the command finds the repository's .venv itself."""
    cdk_json = json.loads((INFRA / "cdk.json").read_text())
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env |= {"PATH": path, "CDK_DISABLE_CLI_TELEMETRY": "true", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    out = tmp_path / "cdk.out"
    cli = INFRA / "node_modules" / ".bin" / "cdk"
    if cli.exists() and shutil.which("node", path=path):
        command = [str(cli), "synth", "--no-notices", "--quiet", "--output", str(out)]
    else:
        command = ["sh", "-c", cdk_json["app"]]  # what the CLI hands the app: the output folder and cdk.json's context
        env |= {"CDK_OUTDIR": str(out), "CDK_CONTEXT_JSON": json.dumps(cdk_json["context"])}
    result = subprocess.run(command, cwd=INFRA, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {p.name for p in out.glob("*.template.json")} == {"ProductTaggingRegistry.template.json", "ProductTagging.template.json"}
    assert len(list(out.glob("AwsSolutions-*-NagReport.csv"))) == 2  # cdk-nag ran
