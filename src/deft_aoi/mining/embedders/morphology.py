"""Flat (square) grey-level morphology on batches of maps, shared by the CPU encoders: max or min over a
window clipped to the image, which is also what edge padding or max_pool2d's −inf padding give."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def window_extreme(a: np.ndarray, radius: int, op: str, step: int = 1) -> np.ndarray:
    """Max (op="max") or min over the (2·radius+1)² window clipped to the image (as max_pool2d pads with −inf).

    a: contiguous (B, H, W·step) with `step` interleaved values per pixel (channels last), each filtered on
    its own. Separable, one 3-wide pass per radius step per axis (a clipped 5x5 window is a 3x3 one of a 3x3
    one). Each pass treats the whole batch as ONE flat array shifted by a pixel (step) or a row: contiguous
    SIMD loops, where 2-D slices ran numpy's inner loop once per image row (≈ 6× slower on 128-px maps). A
    flat shift pairs a row's last pixel with the next row's first (an image's last row with the next
    image's first); those results land only on border pixels, which are then set from their clipped windows."""
    import numpy as np

    fn = np.maximum if op == "max" else np.minimum
    batch, height, row = a.shape
    if height < 2 or row < 2 * step:
        raise ValueError(f"change-shape maps must be at least 2x2 pixels, got {height}x{row // step}")
    out = np.ascontiguousarray(a)
    for _ in range(radius):
        for along in (step, row):
            flat = out.reshape(-1)
            pair = fn(flat[along:], flat[:-along])  # pair[j] = op(a[j], a[j + along])
            result = np.empty_like(flat)
            fn(pair[:-along], pair[along:], out=result[along:-along])
            if along == step:  # each row's first and last pixel: a two-pixel window inside the image
                # As one strided 1-D loop per value (a 2-D slice would run an inner loop per row).
                for first in (*range(step), *range(row - step, row)):
                    inner = first + step if first < step else first - step
                    fn(flat[first::row], flat[inner::row], out=result[first::row])
            else:  # each image's first and last row
                images, before = result.reshape(batch, height, row), out
                images[:, 0] = fn(before[:, 0], before[:, 1])
                images[:, -1] = fn(before[:, -1], before[:, -2])
            out = result.reshape(batch, height, row)
    return out
