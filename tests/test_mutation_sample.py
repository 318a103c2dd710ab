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
