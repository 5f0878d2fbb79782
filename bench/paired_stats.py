"""Paired one-sided tests for the efficacy bench: exact sign test and Wilcoxon signed-rank (exact for small
n, normal approximation with tie correction beyond EXACT_MAX). Pure functions; no scipy needed.

Convention: `d[i] = control[i] − arm[i]` per seed (FAR, lower is better), so d > 0 means the arm won that
seed; both tests ask "is the arm better than the control" (alternative: median d > 0). Zero differences
are dropped (the usual sign-test / Wilcoxon "wilcox" zero method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EXACT_MAX = 25


@dataclass(frozen=True)
class PairedResult:
    n: int  # non-zero pairs
    wins: int  # pairs with d > 0
    sign_p: float | None
    wilcoxon_w: float | None  # W+ = sum of the ranks of the positive differences
    wilcoxon_p: float | None


def sign_test(wins: int, n: int) -> float | None:
    """One-sided exact sign test: P(Binomial(n, ½) ≥ wins); None without pairs."""
    if n <= 0:
        return None
    return sum(math.comb(n, i) for i in range(wins, n + 1)) / 2**n


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties get their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_signed_rank(d: Sequence[float]) -> tuple[float | None, float | None]:
    """(W+, one-sided p = P(W+ ≥ observed) under H0) of the non-zero differences `d`."""
    nz = [x for x in d if x != 0]
    n = len(nz)
    if n == 0:
        return None, None
    ranks = _ranks([abs(x) for x in nz])
    w_plus = sum(r for r, x in zip(ranks, nz, strict=True) if x > 0)
    if n <= EXACT_MAX:
        # Exact null: each rank joins W+ with probability ½. Ranks are multiples of ½, so count in halves.
        halves = [round(2 * r) for r in ranks]
        counts = {0: 1}
        for h in halves:
            nxt = dict(counts)
            for s, c in counts.items():
                nxt[s + h] = nxt.get(s + h, 0) + c
            counts = nxt
        target = round(2 * w_plus)
        return w_plus, sum(c for s, c in counts.items() if s >= target) / 2**n
    mean = n * (n + 1) / 4
    ties: dict[float, int] = {}
    for r in ranks:
        ties[r] = ties.get(r, 0) + 1
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in ties.values()) / 48
    z = (w_plus - mean - 0.5) / math.sqrt(var)  # continuity correction
    return w_plus, 0.5 * math.erfc(z / math.sqrt(2))


def paired(control: Sequence[float], arm: Sequence[float]) -> PairedResult:
    """Both tests of `arm` < `control` (lower is better), pairs aligned by seed."""
    d = [c - a for c, a in zip(control, arm, strict=True)]
    nz = [x for x in d if x != 0]
    wins = sum(x > 0 for x in nz)
    w, p = wilcoxon_signed_rank(d)
    return PairedResult(n=len(nz), wins=wins, sign_p=sign_test(wins, len(nz)), wilcoxon_w=w, wilcoxon_p=p)
