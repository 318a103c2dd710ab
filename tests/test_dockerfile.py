"""The Dockerfile checked statically (no Docker engine here): what `docker build` would do is read
from the file itself, instruction by instruction."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)  # line continuations
    rows = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def args() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)


def test_multi_stage_on_a_pinned_slim_python():
    stages = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert len(stages) >= 2
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args()[m.group(1)], image)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image) or "@sha256:" in image, image


def test_runs_as_a_non_root_user():
    users = [rest for keyword, rest in instructions() if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0")
    final_stage = [k for k, _ in instructions()][max(i for i, (k, _) in enumerate(instructions()) if k == "FROM"):]
    assert "USER" in final_stage


def test_only_the_dashboard_requirements_are_installed():
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    copies = " ".join(rest for keyword, rest in instructions() if keyword == "COPY")
    assert "requirements.txt" in runs and "requirements-local" not in runs + copies and "torch" not in runs
    assert "tests" not in copies.split() and "bench" not in copies.split()


def test_health_check_and_port():
    [health] = [rest for keyword, rest in instructions() if keyword == "HEALTHCHECK"]
    assert "/_stcore/health" in health and "--interval" in health
    assert [rest for keyword, rest in instructions() if keyword == "EXPOSE"] == ["8501"]
    [cmd] = [rest for keyword, rest in instructions() if keyword == "CMD"]
    # Exec form (the server is PID 1 and gets SIGTERM itself), through dashboard/serve.py: JSON lines only.
    assert json.loads(cmd)[:3] == ["python", "-m", "dashboard.serve"] and "--server.port=8501" in json.loads(cmd)
    assert (REPO / "dashboard" / "serve.py").is_file()


def test_no_secrets_in_the_image():
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            for word in shlex.split(rest):
                name = word.split("=", 1)[0]
                assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD)", name, re.I), f"{keyword} {name} would bake a secret in"
    assert "OPENAI_API_KEY" not in (REPO / "Dockerfile").read_text()


def test_dockerignore_keeps_data_tests_and_venvs_out():
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # deny by default, then allow only what the build copies
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"Dockerfile", "requirements.txt", "pyproject.toml", "pipeline", "dashboard", ".streamlit"}
    copied = {rest.split()[0].rstrip("/") for keyword, rest in instructions() if keyword == "COPY" and not rest.startswith("--from")}
    assert copied <= allowed  # everything the build copies is in the context
    assert ".streamlit/secrets.toml" in rules


def test_the_image_logs_json_lines_and_emits_emf_metrics():
    """CloudWatch Logs gets one JSON object per line (searchable fields) and EMF documents it turns into the
    metrics the alarms watch (docs/operations.md "Logs and metrics"); a terminal keeps text by default."""
    from pipeline.settings import Settings

    env = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(rest) if "=" in word)
    assert env["LOG_FORMAT"] == "json" and env["METRICS_FORMAT"] == "emf" and env["LOG_LEVEL"] == "INFO"
    defaults = Settings(_env_file=None)
    assert (defaults.log_format, defaults.metrics_format) == ("text", "off")
    image = Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k in ("LOG_FORMAT", "METRICS_FORMAT", "LOG_LEVEL")})
    assert (image.log_format, image.metrics_format, image.log_level) == ("json", "emf", "INFO")
