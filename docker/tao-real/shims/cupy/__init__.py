"""CPU stand-in for CuPy over NumPy, for NVIDIA's Data Services 7.3.0 `tmm`
(nvidia_tao_ds/mining/tmm/vector_preparation.py imports cupy at module level: `cupy.maximum`,
`cupy.linalg.norm`, `isinstance(x, cupy.ndarray)` then `x.get()`). deft's real-TAO test image only.

`ndarray` is a distinct NumPy subclass that the stand-in never creates, so NVIDIA's `isinstance(x, cupy.ndarray)`
branch (device → host copy) is not taken and its NumPy branch is.
"""

from __future__ import annotations

from typing import Any

import numpy as _np


class ndarray(_np.ndarray):  # noqa: N801 - CuPy's name
    def get(self) -> _np.ndarray:
        return _np.asarray(self)


def asnumpy(x: Any) -> _np.ndarray:
    return _np.asarray(x)


def __getattr__(name: str) -> Any:
    return getattr(_np, name)
