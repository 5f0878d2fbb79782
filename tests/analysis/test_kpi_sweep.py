"""threshold_sweep against a brute-force reference and scikit-learn's roc_curve, plus hand-made edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_curve

from deft_aoi.analysis.kpi import SWEEP_COLUMNS, threshold_sweep
from deft_aoi.errors import InputError

# Scores from a small grid so ties (the hard case) are frequent.
scores_st = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=0, max_value=12).map(lambda i: i / 12)),
    min_size=1,
    max_size=60,
)


def brute_force(is_defect: list[bool], scores: list[float]) -> list[tuple[float, int, int, int, int]]:
    """(threshold, tp, fp, tn, fn) by counting each row at each threshold: O(N²), obviously right."""
    candidates = sorted(set(scores), reverse=True)
    candidates.append(math.nextafter(min(scores), -math.inf))
    rows = []
    for t in candidates:
        tp = sum(1 for d, s in zip(is_defect, scores, strict=True) if d and s > t)
        fp = sum(1 for d, s in zip(is_defect, scores, strict=True) if not d and s > t)
        fn = sum(1 for d, s in zip(is_defect, scores, strict=True) if d and not s > t)
        tn = sum(1 for d, s in zip(is_defect, scores, strict=True) if not d and not s > t)
        rows.append((t, tp, fp, tn, fn))
    return rows


def descending(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep with the highest threshold first (the row order is not part of the contract)."""
    return sweep.sort_values("threshold", ascending=False, kind="stable").reset_index(drop=True)


@settings(max_examples=200, deadline=None)
@given(scores_st)
def test_matches_brute_force(pairs: list[tuple[bool, float]]) -> None:
    is_defect = [p[0] for p in pairs]
    scores = [p[1] for p in pairs]
    sweep = descending(threshold_sweep(np.array(is_defect), np.array(scores)))
    assert list(sweep.columns) == list(SWEEP_COLUMNS)
    got = list(sweep[["threshold", "tp", "fp", "tn", "fn"]].itertuples(index=False, name=None))
    assert got == brute_force(is_defect, scores)
    n_def = sum(is_defect)
    n_pass = len(pairs) - n_def
    for row in sweep.itertuples(index=False):
        if n_def:
            assert row.recall == pytest.approx(100.0 * row.tp / n_def)
        else:
            assert math.isnan(row.recall)
        if n_pass:
            assert row.far == pytest.approx(100.0 * row.fp / n_pass)
        else:
            assert math.isnan(row.far)
        if row.tp + row.fp:
            assert row.precision == pytest.approx(100.0 * row.tp / (row.tp + row.fp))
        else:
            assert math.isnan(row.precision)
        if 2 * row.tp + row.fp + row.fn:
            assert row.f1 == pytest.approx(2 * row.tp / (2 * row.tp + row.fp + row.fn))


@settings(max_examples=200, deadline=None)
@given(scores_st)
def test_matches_sklearn_roc_curve(pairs: list[tuple[bool, float]]) -> None:
    is_defect = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs])
    if is_defect.all() or not is_defect.any():
        return  # roc_curve needs both classes
    fpr, tpr, thr = roc_curve(is_defect, scores, drop_intermediate=False)
    sweep = descending(threshold_sweep(is_defect, scores))
    # sklearn predicts positive for score >= t; our row k+1 (score > next lower value) is the same cut.
    np.testing.assert_allclose(sweep["far"].to_numpy() / 100.0, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sweep["recall"].to_numpy() / 100.0, tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sweep["threshold"].to_numpy()[:-1], thr[1:])


def test_ties_between_pass_and_defect_move_together() -> None:
    sweep = descending(threshold_sweep(np.array([True, False, True, False]), np.array([0.5, 0.5, 0.9, 0.1])))
    assert sweep["threshold"].tolist()[:3] == [0.9, 0.5, 0.1]
    # At threshold 0.1 the tied pair at 0.5 is predicted NO_PASS together: one TP and one FP.
    row = sweep[sweep["threshold"] == 0.1].iloc[0]
    assert (row.tp, row.fp, row.tn, row.fn) == (2, 1, 1, 0)
    # There is no cut separating the tie: no row has tp == 2 and fp == 0.
    assert not ((sweep["tp"] == 2) & (sweep["fp"] == 0)).any()


def test_all_pass_gives_undefined_recall() -> None:
    sweep = descending(threshold_sweep(np.zeros(3, dtype=bool), np.array([0.2, 0.4, 0.4])))
    assert sweep["recall"].isna().all()
    assert sweep["far"].tolist() == pytest.approx([0.0, 200 / 3, 100.0])
    assert (sweep["tp"] == 0).all() and (sweep["fn"] == 0).all()


def test_all_defect_gives_undefined_far() -> None:
    sweep = descending(threshold_sweep(np.ones(2, dtype=bool), np.array([0.3, 0.7])))
    assert sweep["far"].isna().all()
    assert sweep["recall"].tolist() == [0.0, 50.0, 100.0]
    assert sweep["threshold"].iloc[-1] < 0.3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_score_is_a_clear_error(bad: float) -> None:
    with pytest.raises(InputError, match="in 1 row"):
        threshold_sweep(np.array([True, False]), np.array([0.5, bad]))


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises((InputError, ValueError)):
        threshold_sweep(np.array([True, False]), np.array([0.1, 0.2, 0.3]))


def test_empty_input_gives_empty_sweep() -> None:
    sweep = threshold_sweep(np.array([], dtype=bool), np.array([]))
    assert sweep.empty and list(sweep.columns) == list(SWEEP_COLUMNS)
