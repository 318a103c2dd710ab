"""Keeps the mutation score from falling between full runs (`make mutants`, docs/mutation.md).

`make test` cannot afford a full mutation run (hours on 2 cores), so it runs a fixed
sample: every mutant mutmut makes of the formula-escaping rule (`escape_formula`, `_starts_formula`
in pipeline/batches/export.py: what stops a CSV cell from running as a spreadsheet formula) against
the export tests, and requires every one of them killed. A weakened escaping test, or a change
to the rule that its tests do not pin down, fails here with the surviving mutants' diffs."""

from __future__ import annotations

import pytest
from support import mutation

MODULE = "pipeline/batches/export.py"
SAMPLE = ["pipeline.batches.export.x_escape_formula__mutmut_*", "pipeline.batches.export.x__starts_formula__mutmut_*"]
TESTS = ["tests/test_export_escaping.py", "tests/test_export_rules.py"]


@pytest.mark.skipif(not mutation.MUTMUT.exists(), reason="mutmut is not installed (requirements-dev.txt)")
def test_every_sampled_mutant_of_the_formula_escaping_rule_is_killed(tmp_path):
    work = tmp_path / "export"
    mutation.prepare(MODULE, work, TESTS, timeout_s=60)
    result = mutation.run_in(MODULE, work, names=SAMPLE, max_children=2)
    survivors = mutation.diffs(MODULE, work, result.survivors) if result.survivors else ""
    assert result.survived == 0, f"{result.survived} mutants of the escaping rule survived the export tests:\n{survivors}"
    # Every mutant was generated and really run (none skipped for want of a covering test).
    assert result.killed >= 20 and result.no_tests == result.not_checked == result.other == 0, result


def test_docs_list_each_mutated_module_with_the_tests_make_mutants_runs():
    """docs/mutation.md's table is what `make mutants` does (tests/support/mutation.py MODULES), module by module."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "mutation.md").read_text()
    documented: dict[str, set[str]] = {}
    for cells in re.findall(r"^\| (`[^|]+`) \| (test_[^|]+) \|$", text, re.M):
        modules = re.findall(r"`([^`]+)`", cells[0])
        tests = {f"tests/{name.strip()}.py" for name in cells[1].split(",")}
        first = modules[0]
        for module in modules:  # "`pipeline/store/sqlite_store.py`, `dynamo_store.py`": the second in the first's folder
            path = module if "/" in module else str(Path(first).parent / module)
            documented[path] = tests
    assert documented == {module: set(tests) for module, tests in mutation.MODULES.items()}
