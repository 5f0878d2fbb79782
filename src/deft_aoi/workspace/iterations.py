"""The ONE owner of iteration names: `baseline` (index 0) and `iter<N>` (N = 1, 2, ...), formatted and parsed here.

The run catalog names dirs and files after them (`{iteration}/train`, `train_combined_iter{index}.csv`), the state
keys its iterations by them and the graph walks them in order, so every reader asks this module instead of
comparing with "baseline" or slicing "iter" off a name. Stdlib only, beside the catalog, so every layer may use it.
"""

from __future__ import annotations

BASELINE = "baseline"
_PREFIX = "iter"


def iteration_name(index: int) -> str:
    """`baseline` for 0, `iter<index>` otherwise."""
    if index < 0:
        raise ValueError(f"an iteration index is 0 (the baseline) or more, not {index}")
    return BASELINE if index == 0 else f"{_PREFIX}{index}"


def iteration_index(name: str) -> int:
    """0 for `baseline`, N for `iter<N>`; ValueError for any other name."""
    if name == BASELINE:
        return 0
    digits = name.removeprefix(_PREFIX)
    if digits == name or not digits.isdigit() or int(digits) < 1 or digits != str(int(digits)):
        raise ValueError(f"not an iteration name: {name!r} (baseline, iter1, iter2, ...)")
    return int(digits)


def is_baseline(name: str) -> bool:
    return name == BASELINE


def previous_iteration(index: int) -> str:
    """The iteration before iteration `index` (the baseline for iter1; the baseline has none, so itself)."""
    return iteration_name(max(index - 1, 0))


def iteration_names(max_iterations: int) -> list[str]:
    """The baseline, then iter1 ... iter<max_iterations>, in the order the loop runs them."""
    return [iteration_name(k) for k in range(max_iterations + 1)]
