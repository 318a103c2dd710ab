"""Mutation testing of the core modules with mutmut, one module at a time (`make mutants`, docs/mutation.md).

Each module is mutated in its own work folder (`.mutation/<module>/`: a copy of pipeline/ and tests/
and a generated pyproject.toml) so that each mutant runs only the fast tests listed for its module
below, not every test that happens to reach the function (the runner's tests reach fetch, say).
mutmut keeps its results there: a second run re-tests only the functions that changed.

    python tests/support/mutation.py                  # every module below, one after the other
    python tests/support/mutation.py fetch export     # some of them (by file stem)
    python tests/support/mutation.py export --names 'pipeline.batches.export.x_escape_formula*'
    python tests/support/mutation.py runner --tests tests/test_runner_rules.py tests/test_leases.py   # fast tests only

Prints killed / survived / timeout / no tests per module and the surviving mutants' diffs
(`.mutation/<module>/survivors.txt`), and writes `.mutation/scores.json`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"

# module -> the fast tests that exercise it directly (priority order of issue 20)
MODULES: dict[str, list[str]] = {
    "pipeline/ingest/fetch.py": ["tests/test_fetch.py", "tests/test_fetch_rules.py"],
    "pipeline/batches/export.py": ["tests/test_export_escaping.py", "tests/test_export_rules.py"],
    "pipeline/admin/identity.py": ["tests/test_identity.py", "tests/test_identity_rules.py"],
    "pipeline/store/sqlite_store.py": ["tests/test_store_contract.py", "tests/test_store_rules.py", "tests/test_leases.py"],
    "pipeline/store/dynamo_store.py": ["tests/test_store_contract.py", "tests/test_store_rules.py", "tests/test_leases.py"],
    # test_near_duplicates and test_openai_batch reach the runner too, but would add ~40 s to every surviving mutant
    # of _run_items: the runner's own rules (test_runner_rules) cover its near-duplicate and Batch API paths instead.
    "pipeline/batches/runner.py": ["tests/test_runner_rules.py", "tests/test_leases.py", "tests/test_store_runner_export.py",
                                   "tests/test_stop_and_limits.py", "tests/test_memory_budget.py"],
    "pipeline/summarizers/offline.py": ["tests/test_summarizers.py", "tests/test_summarizer_rules.py", "tests/test_offline_style.py",
                                        "tests/test_seo_fields.py"],
    "pipeline/summarizers/openai_summarizer.py": ["tests/test_summarizers.py", "tests/test_openai_failures.py",
                                                  "tests/test_openai_summarizer_rules.py"],
    "pipeline/admin/costs.py": ["tests/test_costs.py", "tests/test_costs_rules.py"],
    # the stages before the model: a zip's members, a photo's decode and its memory budget; and the word limit
    "pipeline/ingest/zips.py": ["tests/test_ingest.py", "tests/test_zip_rules.py"],
    "pipeline/images/normalize.py": ["tests/test_normalize.py", "tests/test_normalize_rules.py", "tests/test_memory_budget.py"],
    "pipeline/images/decode_budget.py": ["tests/test_memory_budget.py", "tests/test_normalize.py", "tests/test_decode_budget_rules.py"],
    "pipeline/wordlimit.py": ["tests/test_summarizer_rules.py", "tests/test_summarizers.py", "tests/test_review_title_limit.py",
                              "tests/test_languages.py", "tests/test_seo_fields.py", "tests/test_offline_style.py"],
    # loading and running BLIP / BLIP-2, shared with the handler (which ships a copy): tiny random checkpoints
    "pipeline/blip_core.py": ["tests/test_blip_core.py", "tests/test_captioners.py"],
    # the SageMaker handler, mutated in its own work-folder layout (tests/support/mutation_handler.py)
    "sagemaker/code/inference.py": ["tests/test_sagemaker_handler.py", "tests/test_handler_rules.py"],
}
HANDLER = ("sagemaker/code/inference.py",)

# seconds mutmut adds to a mutant's measured test time before its CPU limit (x 8): its 1 s default counts the tests
# alone, not the model building and transformers' lazy imports each forked run redoes (~5-10 CPU s); with it 22 of the
# first 26 blip_core mutants were "timeouts" that never ran a test
SETUP_SECONDS = {"pipeline/blip_core.py": 15.0,
                 # test_languages and test_seo_fields start AppTest and local servers: 28 of wordlimit's first 54 were timeouts
                 "pipeline/wordlimit.py": 20.0}

# what tests open besides pipeline/ and tests/ (AppTest runs dashboard/ pages; test_costs reads README.md's cost
# table and runs bench/log_volume.py; some runner tests package the tiny model with sagemaker/package.py, a namespace
# package there, so the installed SageMaker SDK still wins the import; mutmut copies tests/ itself)
ALSO_COPY = ("dashboard", ".streamlit", "bench", "README.md", "sagemaker")

# exit codes as mutmut 3.8 records them (mutmut/stats.py)
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 37: "killed",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 36: "timeout", None: "not checked"}


@dataclass
class Score:
    module: str
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    no_tests: int = 0
    not_checked: int = 0
    other: int = 0
    survivors: tuple[str, ...] = ()
    untested: tuple[str, ...] = ()  # "no tests": no listed test reached the function
    unchecked: tuple[str, ...] = ()  # not run yet (new, changed since, or an interrupted run)

    @property
    def total(self) -> int:
        return self.killed + self.survived + self.timeout + self.no_tests + self.not_checked + self.other


def stem(module: str) -> str:
    return Path(module).stem


def module_for(name: str) -> str:
    matches = [m for m in MODULES if stem(m) == name or m == name]
    if not matches:
        raise SystemExit(f"Unknown module {name!r}; one of: {', '.join(stem(m) for m in MODULES)}.")
    return matches[0]


def _pytest_section() -> str:
    """The repo's [tool.pytest.ini_options], so the copied tests run as they do in `make test`."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r"^\[tool\.pytest\.ini_options\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
    assert match, "pyproject.toml has no [tool.pytest.ini_options]"
    return match.group(0).rstrip() + "\n"


def prepare(module: str, work: Path, tests: list[str], timeout_s: int) -> None:
    """The work folder: fresh copies of pipeline/ and tests/ (mutmut keeps mutants/ and its results)."""
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for folder in ("pipeline", "tests", *ALSO_COPY):
        shutil.rmtree(work / folder, ignore_errors=True)
        if (ROOT / folder).is_file():
            shutil.copy2(ROOT / folder, work / folder)
        else:
            shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    # mutmut copies pipeline/ into mutants/ only where a file is missing there: refresh what changed.
    mutated = work / "mutants"
    if mutated.exists():
        for source in (ROOT / "pipeline").rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                copy = mutated / source.relative_to(ROOT)
                if copy.exists() and source.suffix != ".py" and copy.read_bytes() != source.read_bytes():
                    shutil.copy2(source, copy)
                if copy.exists() and source.suffix == ".py" and str(source.relative_to(ROOT)) != module:
                    if copy.read_bytes() != source.read_bytes():
                        shutil.copy2(source, copy)
    selection = [t for t in tests if (ROOT / t).exists()]
    write_config(work, source_paths=["pipeline"], only_mutate=module, selection=selection, timeout_s=timeout_s,
                 setup_s=SETUP_SECONDS.get(module, 1.0))


def write_config(work: Path, *, source_paths: list[str], only_mutate: str, selection: list[str], timeout_s: int,
                 also_copy: tuple[str, ...] = ALSO_COPY, setup_s: float = 1.0) -> None:
    """The work folder's pyproject.toml: the repo's pytest settings and mutmut's (also the handler's layout)."""
    config = "\n".join([
        "[tool.mutmut]",
        f"source_paths = {json.dumps(source_paths)}",
        f"also_copy = {json.dumps(list(also_copy))}",
        f"only_mutate = [{json.dumps(only_mutate)}]",
        f"pytest_add_cli_args_test_selection = {json.dumps(selection)}",
        # no cache writes; a mutant that makes a test wait forever fails that test (a kill)
        f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "--timeout={timeout_s}"]',
        # the tests start threads, servers, moto and torch: workers fork from a clean process
        'process_isolation = "forkserver"',
        # mutmut's wall-clock limit per mutant is (its tests' time + 1 s) x this x 2; its default 15 let a mutant whose
        # non-daemon thread hangs the test process at exit hold a worker for ~28 min (the runner's stage threads)
        "timeout_multiplier = 4.0",
        f"timeout_constant = {setup_s}",
        "",
    ])
    (work / "pyproject.toml").write_text(_pytest_section() + "\n" + config)


def score(module: str, work: Path, names: list[str] | None = None) -> Score:
    """The module's results in `work` (only the mutants matching `names`, globs, when given)."""
    meta = work / "mutants" / (module + ".meta")
    result = Score(module=module)
    if not meta.exists():
        return result
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    survivors: list[str] = []
    untested: list[str] = []
    unchecked: list[str] = []
    for name, code in sorted(codes.items()):
        if names and not any(fnmatch.fnmatch(name, pattern) for pattern in names):
            continue
        status = STATUS.get(code, "other")
        if status == "killed":
            result.killed += 1
        elif status == "survived":
            result.survived += 1
            survivors.append(name)
        elif status == "timeout":
            result.timeout += 1
        elif status == "no tests":
            result.no_tests += 1
            untested.append(name)
        elif status == "not checked":
            result.not_checked += 1
            unchecked.append(name)
        else:
            result.other += 1
    result.survivors, result.untested, result.unchecked = tuple(survivors), tuple(untested), tuple(unchecked)
    return result


def diffs(module: str, work: Path, names: tuple[str, ...]) -> str:
    """`mutmut show` for each name, in one process (mutmut reads its config from the work folder)."""
    if not names:
        return ""
    script = (
        "import sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "for name in sys.argv[2:]:\n"
        "    print('# ' + name)\n"
        "    print(get_diff_for_mutant(name, path=sys.argv[1]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, module, *names], cwd=work, capture_output=True, text=True)
    return out.stdout + out.stderr


def run_in(module: str, work: Path, *, names: list[str], max_children: int) -> Score:
    """`mutmut run` in a prepared work folder (at low priority), and its score."""
    command = ["nice", "-n", "10", str(MUTMUT), "run", "--max-children", str(max_children), *names]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    log = work / "mutmut-run.log"
    with log.open("w") as sink:  # written as it runs: `tail -c 300 .mutation/<module>/mutmut-run.log` shows progress
        out = subprocess.run(command, cwd=work, env=env | {"PYTHONDONTWRITEBYTECODE": "1"}, stdout=sink, stderr=subprocess.STDOUT)
    if out.returncode != 0:
        tail = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-15:]
        raise RuntimeError(f"mutmut failed for {module} (exit {out.returncode}):\n" + "\n".join(tail))
    return score(module, work, names)


def run_module(module: str, *, names: list[str], max_children: int, timeout_s: int, fresh: bool, quiet: bool,
               retest_survivors: bool = False, tests: list[str] | None = None) -> Score:
    if module in HANDLER:
        from mutation_handler import run_module as run_handler  # script mode: tests/support is sys.path[0]

        return run_handler(module, names=names, max_children=max_children, timeout_s=timeout_s, fresh=fresh, quiet=quiet,
                           retest_survivors=retest_survivors, tests=tests)
    work = WORK / stem(module)
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    prepare(module, work, tests or MODULES[module], timeout_s)
    if retest_survivors and not names:
        before = score(module, work)  # their earlier verdicts stand otherwise
        names = [*before.survivors, *before.untested, *before.unchecked]
        if not names:
            return score(module, work)
    started = time.monotonic()
    run_in(module, work, names=names, max_children=max_children)
    result = score(module, work)  # the whole module, earlier verdicts included
    (work / "survivors.txt").write_text(diffs(module, work, result.survivors))
    if not quiet:
        print(f"{module}: {result.killed} killed, {result.survived} survived, {result.timeout} timeout, "
              f"{result.no_tests} no tests, {result.not_checked} not checked ({time.monotonic() - started:.0f} s); survivors in {work / 'survivors.txt'}")
    return result


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="file stems (fetch, export, ...); default: all")
    parser.add_argument("--names", nargs="*", default=[], help="mutant names or globs (one module only)")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=30, help="seconds one test may run under a mutant")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--retest-survivors", action="store_true", help="run surviving and untested mutants again (after adding tests)")
    parser.add_argument("--tests", nargs="*", default=[], help="test files to run instead of the module's list (one module only): "
                        "a faster, partial measurement; changing the list makes mutmut forget the module's verdicts")
    args = parser.parse_args(argv)
    modules = [module_for(name) for name in args.modules] or list(MODULES)
    scores = {}
    for module in modules:
        result = run_module(module, names=args.names, max_children=args.max_children, timeout_s=args.timeout, fresh=args.fresh, quiet=False,
                            retest_survivors=args.retest_survivors, tests=args.tests or None)
        scores[module] = {k: getattr(result, k) for k in ("killed", "survived", "timeout", "no_tests", "not_checked", "other")} | {
            "survivors": list(result.survivors), "date": time.strftime("%Y-%m-%d"), "commit": _commit(),
            "tests": args.tests or MODULES[module], "names": args.names}
    WORK.mkdir(exist_ok=True)
    previous = json.loads((WORK / "scores.json").read_text()) if (WORK / "scores.json").exists() else {}
    (WORK / "scores.json").write_text(json.dumps(previous | scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
