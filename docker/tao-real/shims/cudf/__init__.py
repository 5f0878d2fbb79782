"""CPU stand-in for the slice of RAPIDS cuDF that NVIDIA's Data Services 7.3.0 `tmm` calls, over pandas.

deft's real-TAO test image only (docker/tao-real): cuDF needs a GPU. Used by nvidia_tao_ds/mining/tmm
(scripts/nearest_neighbors.py: `cudf.read_parquet`, `df[col].list.leaves.values.reshape(len(df), -1)`,
`series.to_pandas()`; parquet_helpers.py: `cudf.concat`, `cudf.from_pandas`; dataset_selection.py:
`cudf.Series`). NVIDIA's mining code runs unchanged on top of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class _ListAccessor:
    """cuDF's `Series.list`: `.leaves` is every list element flattened, in row order."""

    def __init__(self, series: pd.Series) -> None:
        self._series = series

    @property
    def leaves(self) -> "Series":
        flat = np.concatenate([np.asarray(v) for v in self._series]) if len(self._series) else np.empty(0)
        return Series(flat)


class Series(pd.Series):
    @property
    def _constructor(self) -> type:
        return Series

    @property
    def _constructor_expanddim(self) -> type:
        return DataFrame

    @property
    def list(self) -> _ListAccessor:
        return _ListAccessor(self)

    def to_pandas(self) -> pd.Series:
        return pd.Series(self)


class DataFrame(pd.DataFrame):
    @property
    def _constructor(self) -> type:
        return DataFrame

    @property
    def _constructor_sliced(self) -> type:
        return Series

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self)


def read_parquet(path: Any, **kwargs: Any) -> DataFrame:
    return DataFrame(pd.read_parquet(path, **kwargs))


def from_pandas(obj: Any) -> Any:
    return Series(obj) if isinstance(obj, pd.Series) else DataFrame(obj)


def concat(objs: Any, **kwargs: Any) -> Any:
    return from_pandas(pd.concat([pd.DataFrame(o) if isinstance(o, pd.DataFrame) else o for o in objs], **kwargs))
