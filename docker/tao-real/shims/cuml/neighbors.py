"""CPU stand-in for `cuml.neighbors.NearestNeighbors`, which NVIDIA's Data Services 7.3.0 `tmm` calls
(nvidia_tao_ds/mining/tmm/scripts/nearest_neighbors.py, selection.py: `NearestNeighbors(n_neighbors=topn,
metric=knn_metric)`, `.fit`, `.kneighbors`). scikit-learn's brute-force search returns the same neighbours
and distances (cosine distance = 1 - cosine similarity in both). deft's real-TAO test image only.
"""

from __future__ import annotations

from typing import Any

from sklearn.neighbors import NearestNeighbors as _Sk


class NearestNeighbors(_Sk):  # type: ignore[misc]
    def __init__(self, n_neighbors: int = 5, metric: str = "euclidean", **kwargs: Any) -> None:
        super().__init__(n_neighbors=n_neighbors, metric=metric, algorithm="brute")
