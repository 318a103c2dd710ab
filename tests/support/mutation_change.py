"""A few mutants of the newest change to a core module, run by `make test` (docs/mutation.md, "How to run it").

A full mutation run takes hours on this machine, so `make test` samples the code that changed last:

- the change: the newest commit that changed one of the core modules in `mutation.MODULES` (the SageMaker handler
  has its own work-folder layout and is measured by `make mutants MODULES=inference` only);
- the functions whose lines that commit added or changed (a merge: against its first parent);
- SAMPLE_SIZE of their mutants, picked by a generator seeded with the commit's hash (the same sample every time that
  commit is tested, on any machine, from a clean checkout), topped up from the module's other functions when the
  changed ones have fewer mutants (mutmut does not mutate every function: decorated ones, for instance, are left out).
  In a shallow clone the oldest commit kept counts as adding the whole file.

Each sampled mutant must be killed by the module's tests (`SAMPLE_TESTS` where a module is measured with fewer) or be
listed in `mutation_equivalents.txt` beside this file: one line per equivalent mutant, `<module stem> <function> | <why no
user can tell it from the original> | <the mutated line>` (the line as `mutmut show` prints it after its `+`, stripped;
mutant numbers are not used: they change whenever the function does).
"""

from __future__ import annotations

import ast
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:  # imported as support.mutation_change (pytest) or next to mutation.py (script)
    from support import mutation as core
except ImportError:  # pragma: no cover - script mode
    import mutation as core

SAMPLE_SIZE = 4
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.txt")
# modules whose mutation score is measured with fewer tests than their MODULES list (docs/mutation.md says which)
SAMPLE_TESTS: dict[str, list[str]] = {"pipeline/admin/costs.py": ["tests/test_costs_rules.py"]}
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.M)


@dataclass(frozen=True)
class Change:
    commit: str
    module: str
    functions: frozenset[str]  # mutmut's names for them: x_<function>, xǁ<Class>ǁ<method>


def _git(*args: str, root: Path) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else ""


def sampled_modules() -> list[str]:
    return [module for module in core.MODULES if module not in core.HANDLER]


def latest_change(root: Path = core.ROOT) -> Change | None:
    """The newest commit that changed a sampled module, the module (the first in MODULES' order when it changed
    several) and the functions it touched; None outside a git checkout or when no commit changed one."""
    modules = sampled_modules()
    commit = _git("log", "-1", "--first-parent", "--format=%H", "--", *modules, root=root).strip()
    if not commit:
        return None
    # a merge is compared with its first parent (what it brought into this line of history)
    changed = set(_git("show", "--diff-merges=first-parent", "--format=", "--name-only", commit, "--", *modules, root=root).split())
    module = next((m for m in modules if m in changed), None)
    if module is None:
        return None
    lines = changed_lines(_git("show", "--diff-merges=first-parent", "--format=", "-U0", commit, "--", module, root=root))
    source = _git("show", f"{commit}:{module}", root=root)
    return Change(commit, module, frozenset(functions_at(source, lines)))


def changed_lines(diff: str) -> set[int]:
    """Line numbers in the new file of every added or changed line (a deletion counts the line before it)."""
    lines: set[int] = set()
    for start, count in _HUNK.findall(diff):
        first, size = int(start), int(count) if count else 1
        lines.update(range(first, first + size) if size else (first,))
    return lines


def functions_at(source: str, lines: set[int]) -> set[str]:
    """mutmut's names of the module's functions and methods that hold any of `lines` (decorators included)."""
    found: set[str] = set()

    def spans(node: ast.AST) -> range:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        return range(first, node.end_lineno + 1)

    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines & set(spans(node)):
            found.add(f"x_{node.name}")
        elif isinstance(node, ast.ClassDef):
            for method in node.body:
                if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines & set(spans(method)):
                    found.add(f"xǁ{node.name}ǁ{method.name}")
    return found


def mutant_names(module: str, work: Path) -> list[str]:
    """Every mutant mutmut makes of `module`, by name, without running anything (in the work folder: mutmut reads
    its settings there)."""
    script = (
        "import io, sys\n"
        "from pathlib import Path\n"
        "from mutmut.__main__ import get_mutant_name, write_all_mutants_to_file\n"
        "path = Path(sys.argv[1])\n"
        "mutated = write_all_mutants_to_file(out=io.StringIO(), source=path.read_text(), filename=path)\n"
        "print('\\n'.join(get_mutant_name(path, name) for name in mutated.mutant_names))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, module], cwd=work, capture_output=True, text=True, check=True)
    return out.stdout.split()


def function_of(name: str) -> str:
    """`pipeline.store.sqlite_store.xǁSqliteStoreǁedit_item__mutmut_3` -> `xǁSqliteStoreǁedit_item`."""
    return name.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[1]


def pick(names: list[str], functions: frozenset[str], seed: str, size: int = SAMPLE_SIZE) -> list[str]:
    """`size` mutants (all of them when the module has fewer): those of `functions` first, then others of the module,
    each group in an order drawn from `seed` (the same for one seed, whatever order `names` came in)."""
    draw = random.Random(seed)
    changed = sorted(n for n in names if function_of(n) in functions)
    rest = sorted(n for n in names if function_of(n) not in functions)
    draw.shuffle(changed)
    draw.shuffle(rest)
    return sorted((changed + rest)[:size])


def mutated_lines(diff: str) -> str:
    """The lines a mutant's diff adds, stripped and joined (what mutation_equivalents.txt names a mutant by)."""
    return " / ".join(line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))


def listed_equivalents(text: str | None = None) -> set[tuple[str, str, str]]:
    """(module stem, function, mutated line) of each line of mutation_equivalents.txt (`stem function | why | line`:
    the mutated line comes last because it may hold ` | ` or `#` itself)."""
    found: set[tuple[str, str, str]] = set()
    for line in (EQUIVALENTS.read_text() if text is None else text).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ", 2)]
        head = parts[0].split()
        if len(parts) != 3 or len(head) != 2 or not all(parts):
            raise ValueError(f"mutation_equivalents.txt: {line!r} is not `<module stem> <function> | <why> | <mutated line>`")
        found.add((head[0], head[1], parts[2]))
    return found


def split_diffs(text: str) -> dict[str, str]:
    """mutation.diffs' output (`# <name>` then the diff) -> {name: diff}."""
    found: dict[str, str] = {}
    for block in re.split(r"^# (?=\S+__mutmut_\d+$)", text, flags=re.M):
        name, _, diff = block.partition("\n")
        if "__mutmut_" in name:
            found[name.strip()] = diff
    return found


@dataclass
class SampleResult:
    change: Change
    sample: list[str]
    score: core.Score
    unexplained: dict[str, str]  # survivor -> its diff: neither killed nor listed as equivalent


def run_sample(change: Change, work: Path, size: int = SAMPLE_SIZE) -> SampleResult:
    """Mutate the change's module in `work` and run the sample; survivors not listed as equivalent are returned."""
    tests = SAMPLE_TESTS.get(change.module, core.MODULES[change.module])
    core.prepare(change.module, work, tests, timeout_s=60)
    sample = pick(mutant_names(change.module, work), change.functions, change.commit, size)
    score = core.run_in(change.module, work, names=sample, max_children=2)
    listed = listed_equivalents()
    shown = split_diffs(core.diffs(change.module, work, score.survivors))
    unexplained = {}
    for name in score.survivors:  # every survivor: one whose diff could not be shown is unexplained too
        diff = shown.get(name, "")
        if not diff or (Path(change.module).stem, function_of(name), mutated_lines(diff)) not in listed:
            unexplained[name] = diff or "(mutmut could not show this mutant's diff)"
    return SampleResult(change, sample, score, unexplained)
