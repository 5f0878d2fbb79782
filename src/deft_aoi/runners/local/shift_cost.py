"""The registration search's inner loop, compiled: mean |input − shifted golden| for every candidate shift.

Why compiled (numba): the search sums ≈ 280k absolute differences per 128-px pair (49 coarse shifts at half
size, 9 fine ones at full size). numpy spends three passes and a widening reduction per shift on them, more
than a JPEG decode of the pair; one fused loop over rows, which LLVM vectorises, is ≈ 3× faster. Integer
arithmetic throughout, so the costs are the numpy code's exactly (tests/runners/local/test_align.py keeps
that code as the reference). Imported only by `data._shift_costs`: importing numba takes a while, and
`deft --help` must stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba

if TYPE_CHECKING:
    import numpy as np


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _row_sad(test: np.ndarray, golden: np.ndarray, length: int) -> int:
    # int32: a row of integer grey values (≤ 32,767 each, see data.best_shifts) fits up to 65k px wide.
    total = numba.int32(0)
    for x in range(length):
        total += abs(numba.int32(test[x]) - numba.int32(golden[x]))
    return int(total)


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def shift_sads(sums: np.ndarray, dys: np.ndarray, dxs: np.ndarray, margin: int, out: np.ndarray) -> None:
    """out[k, i] = Σ |sums[i, 0, y, x] − sums[i, 1, y − dys[k], x − dxs[k]]| over the window `margin` px in
    from every edge. sums: integer (N, 2, H, W); out: int64 (K, N)."""
    n, _, height, width = sums.shape
    length = width - 2 * margin
    for i in range(n):
        for k in range(dys.shape[0]):
            dy, dx = dys[k], dxs[k]
            total = numba.int64(0)
            for y in range(margin, height - margin):
                total += _row_sad(sums[i, 0, y, margin:], sums[i, 1, y - dy, margin - dx :], length)
            out[k, i] = total
