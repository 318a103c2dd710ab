"""The decode budget's rules stated exactly (written from the mutants that survived tests/test_memory_budget.py and
tests/test_normalize.py, docs/mutation.md): the process-wide budgets are sized in MiB from settings and kept when
the size is unchanged, a grant is capped at the whole budget, and misuse fails with one sentence."""

from __future__ import annotations

import pytest

from pipeline.images import decode_budget
from pipeline.images.decode_budget import MB, DecodeBudget


@pytest.fixture
def fresh_budgets(monkeypatch):
    """Each test starts without process-wide budgets and leaves none behind."""
    monkeypatch.setattr(decode_budget, "_default", None)
    monkeypatch.setattr(decode_budget, "_raw", None)


@pytest.mark.parametrize(("configure", "current"), [(decode_budget.configure_default_budget, decode_budget.default_budget),
                                                    (decode_budget.configure_raw_budget, decode_budget.default_raw_budget)])
def test_configuring_a_budget_sizes_it_in_mib_and_keeps_it_when_the_size_is_unchanged(configure, current, fresh_budgets):
    first = configure(64)
    assert first.limit == 64 * MB and current() is first
    assert configure(64) is first  # decodes holding it keep one shared count
    second = configure(1.5)
    assert second is not first and second.limit == int(1.5 * MB) and current() is second
    assert configure(1.5) is second


@pytest.mark.parametrize(("current", "field", "value"), [(decode_budget.default_budget, "DECODE_BUDGET_MB", 48),
                                                         (decode_budget.default_raw_budget, "RAW_BYTES_BUDGET_MB", 24)])
def test_the_budgets_are_made_from_settings_on_first_use(current, field, value, fresh_budgets, monkeypatch):
    monkeypatch.setenv(field, str(value))
    budget = current()
    assert budget.limit == value * MB and isinstance(budget.limit, int)
    assert current() is budget


def test_an_unrelated_invalid_setting_still_gives_the_default_budget(fresh_budgets, monkeypatch):
    from pipeline.settings import Settings

    monkeypatch.setenv("CONCURRENCY", "not a number")
    assert decode_budget.default_budget().limit == int(Settings.model_fields["decode_budget_mb"].default * MB)
    assert decode_budget.default_raw_budget().limit == int(Settings.model_fields["raw_bytes_budget_mb"].default * MB)


def test_a_grant_is_capped_at_the_whole_budget_and_never_negative():
    budget = DecodeBudget(100)
    assert [budget.grant_for(n) for n in (-5, 0, 1, 100, 101, 10**9)] == [0, 0, 1, 100, 100, 100]
    assert budget.peak == 0 and budget.in_use == 0
    off = DecodeBudget(0)
    assert not off.enabled and off.grant_for(10**9) == 10**9 and off.grant_for(-1) == 0


def test_releasing_more_than_was_taken_is_refused_in_one_sentence():
    budget = DecodeBudget(100)
    grant = budget.acquire(40)
    with pytest.raises(RuntimeError) as refused:
        budget.release(grant + 1)
    assert str(refused.value) == "DecodeBudget released more than was acquired."
    assert budget.in_use == 40  # the refused release counted nothing
    budget.release(grant)
    assert budget.in_use == 0


def test_resizing_a_grant_that_is_not_held_is_refused_in_one_sentence():
    budget = DecodeBudget(100)
    with pytest.raises(RuntimeError) as refused:
        budget.resize(30, 10)
    assert str(refused.value) == "DecodeBudget resized a grant it did not hold."
    grant = budget.acquire(30)
    assert budget.resize(grant, 0) == 0 and budget.in_use == 0  # giving all of it back is allowed
