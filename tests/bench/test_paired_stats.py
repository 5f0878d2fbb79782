"""bench/paired_stats.py: exact sign test and Wilcoxon signed-rank against known values."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def stats(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("paired_stats")


def test_sign_test_known_values(stats: ModuleType) -> None:
    assert stats.sign_test(3, 4) == pytest.approx(5 / 16)  # RESULTS.md run 3: p ≈ 0.31
    assert stats.sign_test(7, 8) == pytest.approx(9 / 256)  # the acceptance bar: < 0.05
    assert stats.sign_test(8, 8) == pytest.approx(1 / 256)
    assert stats.sign_test(0, 5) == 1.0 and stats.sign_test(0, 0) is None


def test_wilcoxon_exact_known_values(stats: ModuleType) -> None:
    # All five differences positive: W+ = 15, p = 1/32.
    assert stats.wilcoxon_signed_rank([1, 2, 3, 4, 5]) == (15.0, pytest.approx(1 / 32))
    # Ranks 1..4 with one negative at rank 1: W+ = 9; P(W+ ≥ 9) over 16 sign patterns = 2/16.
    assert stats.wilcoxon_signed_rank([-1, 2, 3, 4]) == (9.0, pytest.approx(2 / 16))
    # Ties share the average rank: |d| = 1, 1, 2 → ranks 1.5, 1.5, 3; W+ = 4.5 (d = -1, 1, 2);
    # sums over 8 patterns ≥ 4.5: {1.5+3, 1.5+3, 1.5+1.5+3} = 3 → 3/8.
    assert stats.wilcoxon_signed_rank([-1, 1, 2]) == (4.5, pytest.approx(3 / 8))
    assert stats.wilcoxon_signed_rank([0, 0]) == (None, None)


def test_wilcoxon_matches_scipy_when_available(stats: ModuleType) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    d = [3.1, -0.4, 2.2, 5.0, 1.7, -1.2, 4.4, 0.9]
    ref = scipy_stats.wilcoxon(d, alternative="greater", method="exact")
    assert stats.wilcoxon_signed_rank(d)[1] == pytest.approx(ref.pvalue)
    big = [((i * 37) % 23) - 7.5 for i in range(40)]  # n > EXACT_MAX: normal approximation
    ref = scipy_stats.wilcoxon(big, alternative="greater", method="approx", correction=True)
    assert stats.wilcoxon_signed_rank(big)[1] == pytest.approx(ref.pvalue, rel=1e-6)


def test_paired_aligns_by_seed(stats: ModuleType) -> None:
    result = stats.paired([30.0, 40.0, 50.0, 20.0], [20.0, 41.0, 30.0, 20.0])
    assert (result.n, result.wins) == (3, 2)  # the tie (seed 4) is dropped
    assert result.sign_p == pytest.approx(4 / 8)
