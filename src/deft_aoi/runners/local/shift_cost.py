"""The registration search, compiled: channel sums, the half-size image, and mean |input − shifted golden|
for every candidate shift, coarse then fine, pair by pair (data.best_shifts describes the search).

Why compiled (numba): the search sums ≈ 280k absolute differences per 128-px pair (49 coarse shifts at half
size, 9 fine ones at full size); numpy spent three passes and a widening reduction per shift, more than a
JPEG decode of the pair, and the channel sums and half-size image as many passes again over a strided view.
Here each pair's sums stay in a small scratch buffer and every inner loop runs over contiguous values with
unsigned (uint64) indices: numba wraps negative signed indices, and that per-load check stopped LLVM
vectorising the loops. Integer arithmetic throughout and the pick in float32 as numpy did it, so the shifts
are the numpy code's exactly (tests/runners/local/test_align.py keeps that code as the reference). Imported
only by `data.best_shifts`: importing numba takes a while, and `deft --help` must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

_U = np.uint64  # never mix with a signed int: uint64 + int64 is float64 in numba


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _costs(test: np.ndarray, golden: np.ndarray, height: int, width: int, dys: np.ndarray, dxs: np.ndarray,
           margin: int, scale: int, out: np.ndarray) -> None:
    """out[k] = mean |test[y, x] − golden[y − dys[k], x − dxs[k]]| / scale over the window `margin` px in from
    every edge, as float32; test, golden: flat integer (H·W) channel sums (scale = values per grey level)."""
    length = _U(width - 2 * margin)
    count = (height - 2 * margin) * (width - 2 * margin) * scale
    for k in range(dys.shape[0]):
        total = numba.int64(0)
        for y in range(margin, height - margin):
            a = _U(y * width + margin)
            b = _U((y - dys[k]) * width + margin - dxs[k])
            # int32: a row of integer grey values (≤ 32,767 each, see data.best_shifts) fits up to 65k px wide.
            line = numba.int32(0)
            for x in range(length):
                line += abs(numba.int32(test[a + x]) - numba.int32(golden[b + x]))
            total += line
        out[k] = np.float32(total / count)


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _pick(costs: np.ndarray, scale: np.float32, add: np.float32) -> int:
    """The first candidate whose cost is within `best · scale + add` of the best (data.best_shifts), in float32
    as numpy computes `best * (1 + tol) + tol'` on a float32 array."""
    best = costs[0]
    for k in range(1, costs.shape[0]):
        best = min(best, costs[k])
    limit = best * scale + add
    for k in range(costs.shape[0]):
        if costs[k] <= limit:
            return k
    return 0


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _pair_costs(sums: np.ndarray, height: int, width: int, dys: np.ndarray, dxs: np.ndarray, margin: int,
                scale: int, out: np.ndarray) -> None:
    for i in range(sums.shape[0]):
        _costs(sums[i, 0], sums[i, 1], height, width, dys, dxs, margin, scale, out[:, i])


def candidate_costs(sums: np.ndarray, candidates: Sequence[tuple[int, int]], margin: int,
                    scale: int) -> np.ndarray:
    """The cost `search` ranks shifts by, on its own: mean |input − shifted golden| per (candidate, pair)
    over the central window `margin` px in from every edge (the same input pixels for every candidate, so
    costs compare fairly), float32. sums: integer (N, 2, H, W) grey values times `scale` (channel sums), so
    the work is exact integer arithmetic and the cost comes out in grey levels."""
    n, _, height, width = sums.shape
    shifts = np.asarray(candidates, dtype=np.int64).reshape(-1, 2)
    costs = np.empty((len(shifts), n), dtype=np.float32)
    _pair_costs(np.ascontiguousarray(sums).reshape(n, 2, -1), height, width, shifts[:, 0].copy(),
                shifts[:, 1].copy(), margin, scale, costs)
    return costs


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def search(tests: np.ndarray, goldens: np.ndarray, height: int, width: int, channels: int, pixel_stride: int,
           channel_stride: int, coarse_dys: np.ndarray, coarse_dxs: np.ndarray, coarse_radius: int,
           fine_dys: np.ndarray, fine_dxs: np.ndarray, scale: np.float32, add: np.float32, gray: np.ndarray,
           half: np.ndarray, shifts: np.ndarray) -> None:
    """shifts[i] = (dy, dx) registering pair i's golden onto its input, before clipping (data.best_shifts).

    tests, goldens: uint8, C-contiguous (N, H·W·C), the two sides, each image's values at
    pixel·pixel_stride + channel·channel_stride (channels last: C, 1; channels first: 1, H·W). gray, half:
    integer scratch (2, H·W) and (2, (H/2)·(W/2)) whose dtype holds 4·255·C."""
    pixels = _U(height * width)
    rows, cols = height // 2, width // 2
    ps, cs = _U(pixel_stride), _U(channel_stride)
    coarse = np.empty(coarse_dys.shape[0], dtype=np.float32)
    fine = np.empty(fine_dys.shape[0], dtype=np.float32)
    fine_y = np.empty_like(fine_dys)
    fine_x = np.empty_like(fine_dxs)
    for i in range(tests.shape[0]):
        for s in range(2):
            image = tests[i] if s == 0 else goldens[i]
            out = gray[s]
            if channels == 3 and pixel_stride == 3:  # constant stride: LLVM vectorises the interleaved loads
                for p in range(pixels):
                    q = p * _U(3)
                    out[p] = image[q] + image[q + _U(1)] + image[q + _U(2)]
            else:
                for p in range(pixels):
                    total = 0
                    for c in range(_U(channels)):
                        total += image[p * ps + c * cs]
                    out[p] = total
            # Half size: sums of 2x2 of the channel sums (an odd last row or column is left out).
            small = half[s]
            for y in range(rows):
                a = _U(2 * y * width)
                b = a + _U(width)
                o = _U(y * cols)
                for x in range(_U(cols)):
                    x2 = x * _U(2)
                    small[o + x] = out[a + x2] + out[b + x2] + out[a + x2 + _U(1)] + out[b + x2 + _U(1)]
        _costs(half[0], half[1], rows, cols, coarse_dys, coarse_dxs, coarse_radius, 4 * channels, coarse)
        k = _pick(coarse, scale, add)
        dy, dx = 2 * coarse_dys[k], 2 * coarse_dxs[k]
        # ±1 px around the doubled estimate at full size; the estimate itself first, so it is kept unless a
        # neighbour is clearly better.
        for j in range(fine_dys.shape[0]):
            fine_y[j] = dy + fine_dys[j]
            fine_x[j] = dx + fine_dxs[j]
        _costs(gray[0], gray[1], height, width, fine_y, fine_x, 2 * coarse_radius + 1, channels, fine)
        j = _pick(fine, scale, add)
        shifts[i, 0] = fine_y[j]
        shifts[i, 1] = fine_x[j]
