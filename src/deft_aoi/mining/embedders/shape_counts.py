"""The change-shape encoder's pixel counts, compiled (numba, the local extra like the encoder's torch).

Per image, how many pixels of a grey map reach each of a few levels: every area feature of
shape.shape_features is such a count. numpy needed a compare pass and one count_nonzero call per image
per level (≈ 15 passes and 240 calls a 16-pair batch); this is one vectorised loop per map. Imported
only by shape.shape_features, so `deft --help` never pays numba's import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba

if TYPE_CHECKING:
    import numpy as np


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _count_at_least(maps: np.ndarray, levels: np.ndarray, out: np.ndarray) -> None:
    for i in range(maps.shape[0]):
        for k in range(levels.shape[0]):
            level = levels[k]
            total = 0
            for j in range(maps.shape[1]):
                total += maps[i, j] >= level
            out[i, k] = total


def count_at_least(maps: np.ndarray, levels: list[int]) -> np.ndarray:
    """maps: uint8 or bool (B, H, W) → int64 (B, len(levels)): per image, the pixels ≥ each level."""
    import numpy as np

    flat = np.ascontiguousarray(maps).reshape(len(maps), -1).view(np.uint8)
    out = np.empty((len(maps), len(levels)), dtype=np.int64)
    _count_at_least(flat, np.asarray(levels, dtype=np.uint8), out)
    return out
