import json
import re
from pathlib import Path

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text()


def test_every_setting_is_documented_in_the_settings_table():
    section = SETTINGS_DOC.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} == documented


def test_summarizer_defaults_follow_the_openai_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert Settings(_env_file=None).summarizer == "offline"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings(_env_file=None)
    assert settings.summarizer == "openai"
    assert "sk-test" not in repr(settings) and "sk-test" not in str(settings.model_dump())
    monkeypatch.setenv("SUMMARIZER", "offline")
    assert Settings(_env_file=None).summarizer == "offline"


def test_env_file_and_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text('CAPTIONER=sagemaker\nS3_ALLOWED_BUCKETS=["a","b"]\nMAX_SIDE=512\n')
    settings = Settings()
    assert settings.captioner == "sagemaker" and settings.s3_allowed_buckets == ["a", "b"] and settings.max_side == 512
    assert settings.db_path == Path("data/pipeline.sqlite3")


def test_quick_start_has_exactly_the_two_commands_and_ci_calls_make_test():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_streamlit_upload_limit_fits_the_pipeline_limits():
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    upload_bytes = config["server"]["maxUploadSize"] * 1024 * 1024
    settings = Settings(_env_file=None)
    assert settings.max_file_bytes <= upload_bytes <= settings.zip_max_total_bytes
    # Streamlit keeps uploads in memory: one may take at most a fifth of the dashboard task's memory.
    cdk = json.loads((Path(__file__).resolve().parent.parent / "infra" / "cdk.json").read_text())
    task_memory_mib = cdk["context"]["product-tagging"]["memory_mib"]
    assert config["server"]["maxUploadSize"] * 5 <= task_memory_mib
    assert config["server"]["enableXsrfProtection"] is True and config["browser"]["gatherUsageStats"] is False


def test_readme_is_short_and_every_link_it_gives_exists():
    assert len(README.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert "docs/settings.md" in links and "docs/deploy.md" in links
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert missing == []
    for page in (ROOT / "docs").glob("*.md"):  # links between docs pages too
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).exists(), (page.name, link)


def test_every_cli_line_in_the_readme_parses_as_written():
    """A newcomer copies these lines: each `python -m pipeline ...` example must be accepted by the CLI's parser
    (`a|b|c` alternatives and `[--optional]` parts are tried one by one; an UPPER_CASE placeholder stands for 1)."""
    import shlex
    from itertools import product

    from pipeline.cli import build_parser

    lines = [line.split("#")[0].strip() for line in README.splitlines() if line.strip().startswith("python -m pipeline ")]
    assert len(lines) >= 5, lines
    parser = build_parser()
    for line in lines:
        optional = re.findall(r"\[([^\]]+)\]", line)
        words = ["1" if re.fullmatch(r"[A-Z_]+", w) else w for w in shlex.split(re.sub(r"\s*\[[^\]]+\]", "", line))[3:]]  # BATCH_ID
        choices = [word.split("|") if "|" in word and not word.startswith("-") else [word] for word in words]
        for variant in product(*choices):
            for extra in ([], *(shlex.split(o) for o in optional)):
                try:
                    parser.parse_args([*variant, *extra])
                except SystemExit as exc:
                    raise AssertionError(f"README line does not parse: {line!r} as {[*variant, *extra]}") from exc
