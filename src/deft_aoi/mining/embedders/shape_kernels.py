"""The change-shape encoder's compiled pass (numba, the local extra, like the encoder's torch): every integer
the features are made of — window-sum peaks and pixel counts — for a batch of registered pairs, one pair at
a time through buffers that stay in cache.

Why compiled: in numpy the same work was ~100 whole-map passes per batch (a temporary array each), ≈ 0.65×
a JPEG decode of the pair on top of it; here each pass is one loop over contiguous rows, which LLVM
vectorises, and no map leaves the per-call scratch. All arithmetic is on small integers, so the results
equal the numpy and torch versions exactly (tests/mining/test_shape.py checks the model's torch code).
Imported only inside shape.shape_features: importing numba takes a while, and `deft --help` must stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Every index below is uint64: numba wraps negative signed indices, and that per-load check stopped LLVM
# vectorising these loops (≈ 50× slower as signed). Never mix in a signed int: uint64 + int64 is float64.
_U = np.uint64


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _pick(a: int, b: int, is_max: bool) -> int:
    return max(a, b) if is_max else min(a, b)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _pass3(src: np.ndarray, dst: np.ndarray, lines: np.uint64, row: np.uint64, step: np.uint64,
           is_max: bool) -> None:
    """dst[j] = extreme of src[j − step], src[j], src[j + step] along a line of `row` values (clipped at its
    ends); src, dst: flat, `lines` lines of `row`. The interior runs as one flat loop across line ends and
    the ends are then set from their clipped windows (flat arrays: one long vectorised loop)."""
    n = lines * row
    if n > step + step:
        for j in range(step, n - step):
            dst[j] = _pick(_pick(src[j - step], src[j], is_max), src[j + step], is_max)
    for y in range(lines):
        for first in range(y * row, y * row + step):
            last = first + row - step
            if row > step:
                dst[first] = _pick(src[first], src[first + step], is_max)
                dst[last] = _pick(src[last - step], src[last], is_max)
            else:
                dst[first] = src[first]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def extreme3(src: np.ndarray, dst: np.ndarray, tmp: np.ndarray, height: np.uint64, row: np.uint64, step: np.uint64,
             is_max: bool) -> None:
    """dst = max (is_max) or min of src over the 3x3 window clipped to the image, as max_pool2d with −inf
    padding. src, dst, tmp: flat (H·row) with row = W·step, `step` interleaved values per pixel (channels
    last), each filtered on its own; all sizes uint64. Separable: a pass along rows into tmp, then along
    columns (a whole row is one value of the column "line") into dst, which may be src."""
    _pass3(src, tmp, height, row, step, is_max)
    _pass3(tmp, dst, _U(1), height * row, row, is_max)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _count_at_least(grey: np.ndarray, level: int) -> int:
    # `if … += 1`, not `+= bool`: the bool-to-int form did not vectorise.
    total = 0
    at_least = grey.dtype.type(level)
    for j in range(_U(grey.shape[0])):
        if grey[j] >= at_least:
            total += 1
    return total


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _count_both(grey: np.ndarray, level: int, zone: np.ndarray) -> int:
    total = 0
    at_least = grey.dtype.type(level)
    for j in range(_U(grey.shape[0])):
        if (grey[j] >= at_least) & (zone[j] != 0):
            total += 1
    return total


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _out_of_tolerance(test: np.ndarray, golden: np.ndarray, height: np.uint64, width: np.uint64,
                      channels: np.uint64, scratch: np.ndarray, changed: np.ndarray) -> None:
    """changed (H·W) = per pixel, max over channels and both directions of how far one side lies outside
    the other's clipped 3x3 range (model.out_of_tolerance in grey levels); test, golden: flat (H·W·C)."""
    high_t, low_t, high_g, low_g, tmp = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    row = width * channels
    extreme3(test, high_t, tmp, height, row, channels, True)
    extreme3(test, low_t, tmp, height, row, channels, False)
    extreme3(golden, high_g, tmp, height, row, channels, True)
    extreme3(golden, low_g, tmp, height, row, channels, False)
    u8 = np.uint8
    for j in range(height * row):
        # "above" | "below": at most one is non-zero (as in the model's clamp_min sums), so | is their sum.
        # Each step cast back to uint8: numba widens uint8 arithmetic to int64, 8× fewer SIMD lanes (≈ 20×
        # slower here).
        a, b = test[j], golden[j]
        ab = u8(u8(max(a, high_g[j]) - high_g[j]) | u8(low_g[j] - min(a, low_g[j])))
        ba = u8(u8(max(b, high_t[j]) - high_t[j]) | u8(low_t[j] - min(b, low_t[j])))
        tmp[j] = max(ab, ba)
    if channels == _U(3):  # a constant stride, which LLVM vectorises as interleaved loads
        for p in range(height * width):
            q = p * _U(3)
            changed[p] = max(max(tmp[q], tmp[q + _U(1)]), tmp[q + _U(2)])
    else:
        for p in range(height * width):
            best = tmp[p * channels]
            for c in range(_U(1), channels):
                best = max(best, tmp[p * channels + c])
            changed[p] = best


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _window_peaks(changed: np.ndarray, height: np.uint64, width: np.uint64, windows: np.ndarray, rows: np.ndarray,
                  sums: np.ndarray, out: np.ndarray) -> None:
    """out[w] = the largest sum of `changed` (flat H·W) over any windows[w]² window (odd, ascending), zero
    padding counted as avg_pool2d's default does: separable sums, rows widened one radius at a time, in
    uint16 (rows, sums: a 7x7 sum of grey levels fits; wider windows are refused by the caller)."""
    u16 = np.uint16
    for j in range(height * width):
        rows[j] = changed[j]
    reach = _U(0)
    for w in range(windows.shape[0]):
        radius = _U(windows[w] // 2)
        while reach < radius:
            reach += _U(1)
            for y in range(height):
                base = y * width
                if reach < width:
                    for x in range(base + reach, base + width):
                        rows[x] = u16(rows[x] + changed[x - reach])
                    for x in range(base, base + width - reach):
                        rows[x] = u16(rows[x] + changed[x + reach])
        # Column sums as flat shifts by whole rows (long vectorised loops; rows beyond the image add nothing).
        n = height * width
        for j in range(n):
            sums[j] = rows[j]
        for d in range(_U(1), min(radius, height - _U(1)) + _U(1)):
            shift = d * width
            for j in range(shift, n):
                sums[j] = u16(sums[j] + rows[j - shift])
            for j in range(n - shift):
                sums[j] = u16(sums[j] + rows[j + shift])
        peak = u16(0)
        for j in range(n):
            peak = max(peak, sums[j])
        out[w] = peak


@numba.njit(nogil=True, cache=True, boundscheck=False)
def shape_counts(tests: np.ndarray, goldens: np.ndarray, height: int, width: int, channels: int,
                 windows: np.ndarray, radii: np.ndarray, levels: np.ndarray, edge_radii: np.ndarray,
                 edge_level: int, change_level: int, peaks: np.ndarray, counts: np.ndarray,
                 edge_counts: np.ndarray) -> None:
    """Every integer of shape.shape_features, pair by pair. tests, goldens: uint8 (B, H·W·C), registered,
    channels last.

    peaks (B, len(windows)): the out-of-tolerance map's largest window sums. counts (B, len(levels), maps):
    pixels ≥ each level of the map, then per radius its erosion (erosions compose) and the opening of that
    erosion — flat morphology commutes with thresholding, so eroding the grey map once serves every level.
    edge_counts (B, 1 + len(edge_radii)): changed pixels (≥ change_level), then those within each radius
    of a golden edge (3x3 range of the channel sum ≥ edge_level)."""
    h, w, c = _U(height), _U(width), _U(channels)
    pixels = height * width
    scratch = np.empty((5, pixels * channels), dtype=np.uint8)
    maps = np.empty((4, pixels), dtype=np.uint8)  # changed, eroded, opened, tmp
    grey = np.empty((4, pixels), dtype=np.uint16)  # channel sum, its 3x3 max, min, tmp
    rows = np.empty(pixels, dtype=np.uint16)
    sums = np.empty(pixels, dtype=np.uint16)
    changed, eroded, opened, tmp = maps[0], maps[1], maps[2], maps[3]
    for i in range(tests.shape[0]):
        _out_of_tolerance(tests[i], goldens[i], h, w, c, scratch, changed)
        _window_peaks(changed, h, w, windows, rows, sums, peaks[i])
        for k in range(levels.shape[0]):
            counts[i, k, 0] = _count_at_least(changed, levels[k])
        eroded[:] = changed
        done = 0
        for r in range(radii.shape[0]):
            while done < radii[r]:
                extreme3(eroded, eroded, tmp, h, w, _U(1), False)
                done += 1
            extreme3(eroded, opened, tmp, h, w, _U(1), True)
            for _ in range(1, radii[r]):
                extreme3(opened, opened, tmp, h, w, _U(1), True)
            for k in range(levels.shape[0]):
                counts[i, k, 1 + 2 * r] = _count_at_least(eroded, levels[k])
                counts[i, k, 2 + 2 * r] = _count_at_least(opened, levels[k])
        # The golden's copper edges, then the zones around them (reusing `opened`).
        golden = goldens[i]
        total, high, low = grey[0], grey[1], grey[2]
        for p in range(_U(pixels)):
            s = np.uint16(golden[p * c])
            for channel in range(_U(1), c):
                s = np.uint16(s + golden[p * c + channel])
            total[p] = s
        extreme3(total, high, grey[3], h, w, _U(1), True)
        extreme3(total, low, grey[3], h, w, _U(1), False)
        zone = opened
        edge = np.uint16(edge_level)
        for p in range(_U(pixels)):
            zone[p] = np.uint8(np.uint16(high[p] - low[p]) >= edge)
        edge_counts[i, 0] = _count_at_least(changed, change_level)
        done = 0
        for r in range(edge_radii.shape[0]):
            while done < edge_radii[r]:
                extreme3(zone, zone, tmp, h, w, _U(1), True)
                done += 1
            edge_counts[i, 1 + r] = _count_both(changed, change_level, zone)


def integer_features(tests: NDArray[np.uint8], goldens: NDArray[np.uint8], channels: int,
                     windows: tuple[int, ...], radii: tuple[int, ...], levels: list[int],
                     edge_radii: tuple[int, ...], edge_level: int,
                     change_level: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """shape_counts with its outputs allocated: (peaks, counts, edge_counts), see there."""
    if max(windows) ** 2 * 255 > np.iinfo(np.uint16).max:
        raise ValueError(f"window {max(windows)} px: its sums of grey levels overflow the kernel's uint16")
    batch = len(tests)
    peaks = np.empty((batch, len(windows)), dtype=np.int64)
    counts = np.empty((batch, len(levels), 1 + 2 * len(radii)), dtype=np.int64)
    edge_counts = np.empty((batch, 1 + len(edge_radii)), dtype=np.int64)
    shape_counts(tests.reshape(batch, -1), goldens.reshape(batch, -1), tests.shape[1], tests.shape[2] // channels,
                 channels, np.asarray(windows, dtype=np.int64), np.asarray(radii, dtype=np.int64),
                 np.asarray(levels, dtype=np.int64), np.asarray(edge_radii, dtype=np.int64), edge_level,
                 change_level, peaks, counts, edge_counts)
    return peaks, counts, edge_counts
