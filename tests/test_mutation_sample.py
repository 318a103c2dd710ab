"""Keeps the mutation score from falling between full runs (`make mutants`, docs/mutation.md).

`make test` cannot afford a full mutation run (hours on 2 cores), so it runs two samples:

- a fixed one: every mutant mutmut makes of the formula-escaping rule (`escape_formula`, `_starts_formula` in
  pipeline/batches/export.py: what stops a CSV cell from running as a spreadsheet formula) against the export tests;
- the newest change to a core module: a few mutants of the functions the newest commit touching one changed
  (tests/support/mutation_change.py), against that module's tests.

Every sampled mutant must be killed (or, for the change sample, be listed as equivalent with its reason); a weakened
test, or changed code that its tests do not pin down, fails here with the surviving mutants' diffs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import mutation, mutation_change

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


@pytest.mark.skipif(not mutation.MUTMUT.exists(), reason="mutmut is not installed (requirements-dev.txt)")
def test_every_sampled_mutant_of_the_newest_change_to_a_core_module_is_killed_or_listed(tmp_path):
    change = mutation_change.latest_change()
    assert change is not None, "no commit in this checkout changed a core module"
    result = mutation_change.run_sample(change, tmp_path / "change")
    assert len(result.sample) == mutation_change.SAMPLE_SIZE, result  # every core module has far more mutants
    assert result.score.killed + result.score.survived + result.score.timeout == len(result.sample), result
    assert not result.score.untested, f"no test of {change.module} reaches {result.score.untested}"
    listing = "\n".join(f"# {name}\n{diff}" for name, diff in result.unexplained.items())
    assert not result.unexplained, (
        f"{len(result.unexplained)} of {len(result.sample)} sampled mutants of {change.module} (commit {change.commit[:10]}, "
        f"functions {sorted(change.functions)}) survived its tests. Kill each with a test, or list it in "
        f"tests/support/mutation_equivalents.txt with the reason no user can tell it from the original:\n{listing}")


SOURCE = '''import functools


def plain(x):
    return x + 1


class Store:
    @functools.cache
    def cached(self):
        return 1

    def other(self):
        return 2
'''


def test_a_change_is_mapped_to_the_functions_and_methods_holding_its_lines():
    assert mutation_change.functions_at(SOURCE, {5}) == {"x_plain"}
    assert mutation_change.functions_at(SOURCE, {9}) == {"xǁStoreǁcached"}  # its decorator's line
    assert mutation_change.functions_at(SOURCE, {10, 14}) == {"xǁStoreǁcached", "xǁStoreǁother"}
    assert mutation_change.functions_at(SOURCE, {1, 2, 7}) == set()  # imports, blank lines, the class line


def test_changed_lines_are_read_from_each_hunk_of_a_diff():
    diff = "@@ -3 +3 @@\n-a\n+b\n@@ -10,0 +11,2 @@\n+c\n+d\n@@ -20,3 +22,0 @@\n-e\n"
    assert mutation_change.changed_lines(diff) == {3, 11, 12, 22}


def test_the_sample_is_the_same_for_one_commit_and_comes_from_the_changed_functions_first():
    names = [f"pipeline.m.x_{f}__mutmut_{i}" for f in ("a", "b") for i in range(1, 30)]
    first = mutation_change.pick(names, frozenset({"x_a"}), "abc123")
    assert first == mutation_change.pick(list(reversed(names)), frozenset({"x_a"}), "abc123")
    assert len(first) == mutation_change.SAMPLE_SIZE and all(".x_a__" in name for name in first)
    assert mutation_change.pick(names, frozenset({"x_a"}), "def456") != first
    assert len(mutation_change.pick(names, frozenset({"x_gone"}), "abc123")) == mutation_change.SAMPLE_SIZE  # none: others
    small = ["pipeline.m.x_tiny__mutmut_1", "pipeline.m.x_tiny__mutmut_2", *names]
    topped_up = mutation_change.pick(small, frozenset({"x_tiny"}), "abc123")  # 2 mutants changed: 2 more from the rest
    assert len(topped_up) == mutation_change.SAMPLE_SIZE and {"pipeline.m.x_tiny__mutmut_1", "pipeline.m.x_tiny__mutmut_2"} < set(topped_up)
    assert mutation_change.pick(small[:3], frozenset({"x_tiny"}), "abc123") == sorted(small[:3])  # fewer than 4 in all


def test_a_survivor_passes_only_when_its_module_function_and_mutated_line_are_listed():
    diff = ("--- pipeline/store/sqlite_store.py\n+++ pipeline/store/sqlite_store.py\n@@ -1,3 +1,3 @@\n def get_batch(self, batch_id):\n"
            '-    rows = self._batch_rows("WHERE b.id = ?", (batch_id,))\n+    rows = self._batch_rows("where b.id = ?", (batch_id,))\n')
    [(name, parsed)] = mutation_change.split_diffs("# pipeline.store.sqlite_store.xǁSqliteStoreǁget_batch__mutmut_7\n" + diff).items()
    key = ("sqlite_store", mutation_change.function_of(name), mutation_change.mutated_lines(parsed))
    assert key == ("sqlite_store", "xǁSqliteStoreǁget_batch", 'rows = self._batch_rows("where b.id = ?", (batch_id,))')
    listed = mutation_change.listed_equivalents(
        '# a comment\nsqlite_store xǁSqliteStoreǁget_batch | SQL ignores case | rows = self._batch_rows("where b.id = ?", (batch_id,))\n')
    assert key in listed
    assert ("dynamo_store", key[1], key[2]) not in listed and (key[0], key[1], "rows = None") not in listed
    stems = {Path(module).stem for module in mutation_change.sampled_modules()}
    for stem, function, mutated in mutation_change.listed_equivalents():  # the repo's own list: well formed
        assert stem in stems and function.startswith("x") and mutated, (stem, function, mutated)


def test_the_newest_change_is_found_through_a_merge_by_its_first_parent(tmp_path):
    """A merge that brought a branch's change to costs.py into a line where fetch.py changed: the change sampled is the
    branch's function (what the merge brought), not nothing and not every function."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    costs, fetch = tmp_path / "pipeline/admin/costs.py", tmp_path / "pipeline/ingest/fetch.py"
    costs.parent.mkdir(parents=True)
    fetch.parent.mkdir(parents=True)
    costs.write_text("def f():\n    return 1\n\n\ndef g():\n    return 2\n")
    fetch.write_text("def h():\n    return 3\n")
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "start")
    git("checkout", "-qb", "branch")
    costs.write_text(costs.read_text().replace("return 2", "return 20"))
    git("commit", "-qam", "g changed")
    git("checkout", "-q", "main")
    fetch.write_text(fetch.read_text().replace("return 3", "return 30"))
    git("commit", "-qam", "h changed")
    git("merge", "-q", "--no-ff", "branch", "-m", "merge")
    change = mutation_change.latest_change(tmp_path)
    assert (change.module, change.functions) == ("pipeline/admin/costs.py", frozenset({"x_g"}))


def test_a_malformed_equivalents_line_is_refused_naming_it():
    with pytest.raises(ValueError, match=re.escape("costs x_f | only a reason")):
        mutation_change.listed_equivalents("costs x_f | only a reason\n")
    assert mutation_change.listed_equivalents("  # an indented comment\n\n") == set()
