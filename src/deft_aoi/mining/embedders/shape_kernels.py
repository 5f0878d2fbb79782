"""The change-shape encoder's compiled loop (numba, the local extra, like the encoder's torch): per-image
pixel counts at a few levels, which numpy ran as a compare pass and a count_nonzero call per image per
level. Imported only inside shape.shape_features: importing numba takes a while, and `deft --help` must
stay fast. Exact integer counts, so the features equal the model's (tests/mining/test_shape.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba

if TYPE_CHECKING:
    import numpy as np


@numba.njit(nogil=True, cache=True, boundscheck=False)
def count_at_least(maps: np.ndarray, levels: np.ndarray, out: np.ndarray) -> None:
    """out[i, k] = how many values of maps[i] (uint8 (B, N)) are ≥ levels[k]: every area feature of
    shape.shape_features is such a count (numpy: a compare pass and a count_nonzero call per image)."""
    for i in range(maps.shape[0]):
        for k in range(levels.shape[0]):
            level = levels[k]
            total = 0
            for j in range(maps.shape[1]):
                total += maps[i, j] >= level
            out[i, k] = total
