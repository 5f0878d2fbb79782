"""Approximate k-NN for big pools: a faiss IVF or HNSW index over the pool's unit embeddings.

An index is built once per (encoder fingerprint, pool content, index parameters) and cached beside the
embeddings, `<cache>/<fingerprint id>/index/<kind>-<params>-<pool>.faiss`, written atomically. Every use
measures recall@k against the exact search on a sample of the targets (`measure_recall`), so a report
never shows an approximate result without saying how approximate it was.

Parameters follow faiss's wiki ("Guidelines to choose an index"): IVF with nlist ≈ √n lists (the low end
of its 4·√n–16·√n advice: training k-means on 39·nlist rows stays minutes on a small CPU) and nprobe
nlist/128, at least 8 (`resolved_nprobe`): every query scans about 1/128 of the pool, a constant share so
recall holds as n grows; even at the ~6× per-row cost of an IVF scan against the BLAS exact pass (1M run)
that is about 0.05× of the exact time, half the 0.1× target (bench/RESULTS.md: 1M nprobe 8 → 0.049–0.065×,
5M nprobe 17 over float16 codes → 0.011×, recall@5 1.000 both; nprobe 16 at 1M → 0.102×);
HNSW with M 32, efConstruction 200, efSearch 128. `auto` picks IVF: HNSW builds at ~200 rows/s on a
loaded 2-core box (bench/RESULTS.md), too slow to build per pool there. `float16=True` stores
the vectors as float16 scalar-quantised codes (IndexIVFScalarQuantizer / IndexHNSWSQ, QT_fp16): half
the memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deft_aoi.mining.knn import Group, exact_search

if TYPE_CHECKING:
    import numpy as np

    from deft_aoi.mining.knn import PoolBlocks

IndexKind = Literal["exact", "auto", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("exact", "auto", "ivf", "hnsw")
# `auto` searches exactly below this many pool rows: at 1M × 512 an exact pass is a few seconds per 1k
# targets (bench/RESULTS.md), an index build costs more than it saves.
AUTO_MIN_POOL = 2_000_000
RECALL_SAMPLE = 256  # targets whose exact neighbours are computed to measure recall
_BUILD_ROWS = 65_536  # rows per add() call while building


@dataclass(frozen=True)
class AnnParams:
    kind: Literal["ivf", "hnsw"] = "hnsw"
    nlist: int = 0  # 0 = √n, at least 16 and at most n / 39 (faiss wants ≥ 39 training rows per list)
    nprobe: int = 0  # 0 = nlist / 128, at least 8 and at most nlist (see the module docstring)
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    float16: bool = False

    def resolved_nlist(self, n: int) -> int:
        if self.nlist:
            return self.nlist
        return int(max(1, min(max(16, int(n**0.5)), n // 39)))

    def resolved_nprobe(self, n: int) -> int:
        nlist = self.resolved_nlist(n)
        if self.nprobe:
            return min(self.nprobe, nlist)
        return min(nlist, max(8, nlist // 128))

    def digest(self, n: int) -> str:
        d = asdict(self)
        d["nlist"] = self.resolved_nlist(n) if self.kind == "ivf" else 0
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def resolve_kind(kind: str, n_pool: int) -> str:
    """`auto` → `ivf` from AUTO_MIN_POOL rows, else `exact`; other kinds as given."""
    if kind == "auto":
        return "ivf" if n_pool >= AUTO_MIN_POOL else "exact"
    return kind


class FaissIndex:
    """`NeighbourIndex` over a built faiss index (ids = pool row numbers)."""

    def __init__(self, index: Any, params: AnnParams, path: Path | None = None, *, reused: bool = False,
                 build_s: float = 0.0) -> None:
        self.index = index
        self.params = params
        self.path = path
        self.reused = reused
        self.build_s = build_s

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _search_params(self, selector: Any) -> Any:
        import faiss

        # faiss's bundled stubs (1.15) lack the keyword constructors SWIG generates for these parameter classes
        # and SearchParametersHNSW itself; both exist at run time (tests/mining cover the IVF and HNSW paths).
        if self.params.kind == "ivf":
            nprobe = self.params.resolved_nprobe(self.ntotal)
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.params.ef_search, 1))  # type: ignore[attr-defined]

    def search(self, queries: np.ndarray, k: int, pool_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        import faiss
        import numpy as np

        k = min(k, self.ntotal)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if k <= 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if pool_mask is None:
            sel = None
        else:
            bits = np.packbits(np.asarray(pool_mask, dtype=bool), bitorder="little")
            sel = faiss.IDSelectorBitmap(len(pool_mask), faiss.swig_ptr(bits))
        params = self._search_params(sel)
        if self.params.kind == "hnsw":
            params.efSearch = max(self.params.ef_search, k)  # efSearch < k would cap the result at efSearch
        sims, idx = self.index.search(q, k, params=params)
        sims = np.where(idx >= 0, sims, -np.inf).astype(np.float32)
        order = np.lexsort((np.where(idx >= 0, idx, np.iinfo(np.int64).max), -sims), axis=1)
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx.astype(np.int64), order, axis=1)


def _new_index(dim: int, n: int, params: AnnParams) -> Any:
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if params.kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        nlist = params.resolved_nlist(n)
        if params.float16:
            return faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, ip)
        return faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    index: faiss.IndexHNSW
    if params.float16:
        # faiss's stub types the 2nd argument as a ScalarQuantizer; the C++ constructor (and SWIG) takes the
        # QuantizerType enum, an int in Python.
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, params.hnsw_m, ip)  # type: ignore[arg-type]
    else:
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, ip)
    index.hnsw.efConstruction = params.ef_construction
    return index


def _training_sample(pool: PoolBlocks, rows: int, shard_rows: int) -> np.ndarray:
    """An evenly strided sample of about `rows` pool rows, read shard by shard."""
    import numpy as np

    n = pool.shape[0]
    stride = max(1, n // max(rows, 1))
    parts = [block[(-start) % stride :: stride].copy() for start, block in pool.blocks(shard_rows)]
    return np.concatenate(parts) if parts else np.zeros((0, pool.shape[1]), np.float32)


def build_index(pool: PoolBlocks, params: AnnParams, *, shard_rows: int = _BUILD_ROWS) -> Any:
    """Train (IVF: k-means on an evenly strided sample of 39·nlist rows) and add every pool row."""
    n, dim = pool.shape
    index = _new_index(dim, n, params)
    if not index.is_trained:
        sample_rows = 39 * params.resolved_nlist(n) if params.kind == "ivf" else min(n, 65_536)
        index.train(_training_sample(pool, sample_rows, shard_rows))
    for _, block in pool.blocks(shard_rows):
        index.add(block)
    return index


def index_path(cache_dir: Path, params: AnnParams, pool_id: str, n: int) -> Path:
    return Path(cache_dir) / "index" / f"{params.kind}-{params.digest(n)}-{pool_id[:16]}.faiss"


def load_or_build(pool: PoolBlocks, params: AnnParams, cache_dir: Path | None, pool_id: str) -> FaissIndex:
    """The cached index of this pool content when present (and whole), else a freshly built one, cached."""
    import time

    import faiss

    n = pool.shape[0]
    path = index_path(cache_dir, params, pool_id, n) if cache_dir is not None else None
    if path is not None and path.is_file():
        index = faiss.read_index(str(path))
        if index.ntotal == n and index.d == pool.shape[1]:
            return FaissIndex(index, params, path, reused=True)
    start = time.perf_counter()
    index = build_index(pool, params)
    build_s = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)  # a reader sees a whole index or none
    return FaissIndex(index, params, path, build_s=build_s)


@dataclass(frozen=True)
class RecallReport:
    k: int
    queries: int
    recall: float


def measure_recall(
    queries: np.ndarray,
    pool: np.ndarray | PoolBlocks,
    index: FaissIndex,
    k: int,
    groups: list[Group],
    *,
    sample: int = RECALL_SAMPLE,
    shard_rows: int | None = None,
) -> RecallReport:
    """recall@k of `index` against the exact search, on up to `sample` evenly spaced queries of each group.
    A returned row counts when it is an exact neighbour or ties the exact k-th similarity (1e-6), so
    equally similar duplicates never count as misses."""
    import numpy as np

    sub_groups: list[Group] = []
    for t_idx, mask in groups:
        take = t_idx if len(t_idx) <= sample else t_idx[np.linspace(0, len(t_idx) - 1, sample).astype(int)]
        sub_groups.append((take, mask))
    exact = exact_search(queries, pool, k, groups=sub_groups, shard_rows=shard_rows)
    hits = total = 0
    for (t_idx, mask), (e_sims, e_idx) in zip(sub_groups, exact, strict=True):
        if e_sims.shape[1] == 0:
            continue
        a_sims, a_idx = index.search(queries[t_idx], k, mask)
        kth = e_sims[:, -1:]
        for row in range(len(t_idx)):
            found = set(a_idx[row][a_idx[row] >= 0].tolist())
            same = len(found & set(e_idx[row].tolist()))
            ties = int(np.sum((a_sims[row] >= kth[row] - 1e-6) & ~np.isin(a_idx[row], e_idx[row]) & (a_idx[row] >= 0)))
            hits += min(e_sims.shape[1], same + ties)
            total += e_sims.shape[1]
    return RecallReport(k=k, queries=sum(len(t) for t, _ in sub_groups), recall=hits / total if total else 1.0)
