"""Mutation testing of the SageMaker handler (`make mutants MODULES=inference`, docs/mutation.md).

The handler cannot be mutated in the layout `tests/support/mutation.py` uses for `pipeline/`:

- mutmut names a mutant after its file's path (`sagemaker/code/inference.py` -> `sagemaker.code.inference.x_…`),
  and a mutated function runs its mutant only when that name's module equals the function's `__module__`.
  The tests run our handler the way the container does: the toolkit's handler service imports
  `code/inference.py` from the model directory as the top-level module `inference`. So the handler is mutated
  as `src/inference.py` (mutmut drops a leading `src.`: the mutants are `inference.x_…`, as the toolkit loads it).
- The model directory is built by `sagemaker/package.py` from `REPO/sagemaker/code/inference.py`. In the work
  folder's `mutants/` (REPO for the copied tests) that path is a symlink to the mutated `src/inference.py`, so the
  archive the toolkit loads holds the mutated code (trampolines included). `mutants/sagemaker/` is written here,
  not by mutmut (not a source path, not in also_copy), and it is a plain folder without `__init__.py`: it never
  shadows the SageMaker SDK.
- The toolkit runs in the test process (support/model_server.py loads the handler service with MMS's own loader
  and calls `Service.predict`), so the trampolines read MUTANT_UNDER_TEST there and mutmut's stats see which test
  reached which function.

    python tests/support/mutation.py inference                  # what `make mutants MODULES=inference` runs
    python tests/support/mutation.py inference --names 'inference.x_output_fn*'
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

try:  # imported as support.mutation_handler (pytest) or next to mutation.py (script)
    from support import mutation as core
except ImportError:  # pragma: no cover - script mode
    import mutation as core

ROOT = core.ROOT

# module (path in the repo) -> where it is mutated in the work folder (its mutmut module name is the path without src/)
LAYOUT: dict[str, str] = {
    "sagemaker/code/inference.py": "src/inference.py",
}
# what the copied tests read besides pipeline/ and tests/ (test_tests_run_on_the_pinned_transformers reads the pins)
ALSO_COPY = ("pipeline", "requirements-local.txt")
# sagemaker/ as the tests see it in mutants/: package.py builds the archive from code/inference.py (the mutant)
SAGEMAKER_FILES = ("package.py", "container.json")


def prepare(module: str, work: Path, tests: list[str], timeout_s: int) -> None:
    """The work folder: src/<handler> (mutated), fresh copies of what the tests read, and mutants/sagemaker/."""
    target = LAYOUT[module]
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for folder in ("pipeline", "tests"):
        shutil.rmtree(work / folder, ignore_errors=True)
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    shutil.copy2(ROOT / "requirements-local.txt", work / "requirements-local.txt")
    source, copy = ROOT / module, work / target
    copy.parent.mkdir(parents=True, exist_ok=True)
    if not copy.exists() or copy.read_bytes() != source.read_bytes():
        shutil.copy(source, copy)  # a new mtime: mutmut regenerates the mutants (unchanged functions keep their verdicts)
    sagemaker = work / "mutants" / "sagemaker"
    (sagemaker / "code").mkdir(parents=True, exist_ok=True)
    for name in SAGEMAKER_FILES:
        shutil.copy2(ROOT / "sagemaker" / name, sagemaker / name)
    link = sagemaker / "code" / Path(module).name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(work / "mutants" / target, link.parent))
    selection = [t for t in tests if (ROOT / t).exists()]
    core.write_config(work, source_paths=[str(Path(target).parent)], only_mutate=target, selection=selection, timeout_s=timeout_s,
                      also_copy=ALSO_COPY)


def score(module: str, work: Path, names: list[str] | None = None) -> core.Score:
    result = core.score(LAYOUT[module], work, names)
    result.module = module
    return result


def run_module(module: str, *, names: list[str], max_children: int, timeout_s: int, fresh: bool, quiet: bool,
               retest_survivors: bool = False, tests: list[str] | None = None) -> core.Score:
    """Like mutation.run_module, in the handler's layout."""
    work = core.WORK / core.stem(module)
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    prepare(module, work, tests or core.MODULES[module], timeout_s)
    if retest_survivors and not names:
        before = score(module, work)
        names = [*before.survivors, *before.untested, *before.unchecked]
        if not names:
            return before
    started = time.monotonic()
    core.run_in(LAYOUT[module], work, names=names, max_children=max_children)
    result = score(module, work)
    (work / "survivors.txt").write_text(core.diffs(LAYOUT[module], work, result.survivors))
    if not quiet:
        print(f"{module}: {result.killed} killed, {result.survived} survived, {result.timeout} timeout, "
              f"{result.no_tests} no tests, {result.not_checked} not checked ({time.monotonic() - started:.0f} s); "
              f"survivors in {work / 'survivors.txt'}")
    return result
