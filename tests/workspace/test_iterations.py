"""Iteration names: formatted and parsed in one place (workspace/iterations.py)."""

from __future__ import annotations

import pytest

from deft_aoi.workspace.iterations import (
    BASELINE,
    is_baseline,
    iteration_index,
    iteration_name,
    iteration_names,
    previous_iteration,
)


def test_names_and_indices_round_trip() -> None:
    assert iteration_names(3) == [BASELINE, "iter1", "iter2", "iter3"]
    for index, name in enumerate(iteration_names(12)):
        assert iteration_index(name) == index and iteration_name(index) == name
    assert is_baseline("baseline") and not is_baseline("iter1")
    assert [previous_iteration(k) for k in (0, 1, 2, 10)] == ["baseline", "baseline", "iter1", "iter9"]


@pytest.mark.parametrize("bad", ["iter0", "iter", "iter01", "iter-1", "Baseline", "iter1a", "run1", ""])
def test_other_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an iteration name"):
        iteration_index(bad)


def test_a_negative_index_is_refused() -> None:
    with pytest.raises(ValueError):
        iteration_name(-1)
