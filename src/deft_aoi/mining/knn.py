"""Exact cosine k-NN mining — pure maths on arrays, no filesystem.

Search: the whole pool at once (default), or streamed shard by shard (`shard_rows`, from a memory budget
via `shard_rows_for_budget`) with the per-target top-k lists merged — the same neighbours and the same
similarities bit for bit (tests), memory bounded by one shard. An approximate `NeighbourIndex`
(`ann.py`) can replace the exact search; the filters below are the same either way.

Order of filters (each count is reported): raw top-k per target (within the target's label when
`filter_by_label`) → similarity cut-off → history (rows mined in earlier iterations) → de-duplication
across targets (a pool row matched by several targets is kept once, for its most similar target).

Back-fill: a slot lost to history is refilled with the target's next-nearest fresh row that passes the
cut-off (searching up to MAX_BACKFILL deeper). Without it, a later iteration whose weak targets resemble
earlier ones would mine nothing new: the loop would stall on rows it already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Below this many pool rows a blocked numpy matmul + argpartition beats faiss's set-up cost.
NUMPY_MAX_POOL = 50_000
_QUERY_BLOCK = 256
MAX_BACKFILL = 512


def l2_normalise(x: np.ndarray, *, block: int = 65_536) -> np.ndarray:
    """Float32, C-contiguous, unit rows. Already-normalised float32 input is returned as is (no copy), so a
    1M-row pool matrix is never duplicated; otherwise rows are normalised in blocks on one copy."""
    import numpy as np

    needs_copy = x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable
    # np.array copies even a read-only float32 C array (ascontiguousarray would hand it back unchanged).
    out = np.array(x, dtype=np.float32, order="C") if needs_copy else x
    copied = needs_copy
    for start in range(0, len(out), block):
        part = out[start : start + block]
        norms = np.sqrt(np.einsum("ij,ij->i", part, part))
        if np.all(np.abs(norms - 1) < 1e-3):
            continue
        if not copied:
            out = out.copy()
            copied = True
            part = out[start : start + block]
        part /= np.maximum(norms, 1e-12)[:, None]
    return out


def topk_cosine(
    queries: np.ndarray, pool: np.ndarray, k: int, *, use_faiss: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product of unit rows: (similarities, indices), each (n_queries, k'),
    k' = min(k, pool rows), sorted by similarity descending, ties by lower index. `use_faiss` forces the
    kernel (default: faiss above NUMPY_MAX_POOL rows); a sharded search passes the whole pool's choice so
    every shard is scored by the same kernel as the unsharded search."""
    import numpy as np

    k = min(k, len(pool))
    nq = len(queries)
    if k <= 0 or nq == 0:
        return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
    if use_faiss if use_faiss is not None else len(pool) > NUMPY_MAX_POOL:
        import faiss

        sims, idx = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), pool, k,
                              metric=faiss.METRIC_INNER_PRODUCT)
        sims, idx = sims.astype(np.float32), idx.astype(np.int64)
        # faiss leaves exact ties in heap order: sort them by index so the result is canonical.
        order = np.lexsort((idx, -sims), axis=1)
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)
    sims_out = np.empty((nq, k), dtype=np.float32)
    idx_out = np.empty((nq, k), dtype=np.int64)
    for start in range(0, nq, _QUERY_BLOCK):
        s = queries[start : start + _QUERY_BLOCK] @ pool.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(k), (len(s), 1))
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)
        idx_out[start : start + len(s)] = np.take_along_axis(part, order, axis=1)
        sims_out[start : start + len(s)] = np.take_along_axis(ps, order, axis=1)
    return sims_out, idx_out


def merge_topk(
    sims_a: np.ndarray, idx_a: np.ndarray, sims_b: np.ndarray, idx_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k of two candidate lists (similarity descending, ties by lower index): the merge step
    of a sharded search. Equal to the top-k of the union, so shard order and size never change a result."""
    import numpy as np

    sims = np.concatenate([sims_a, sims_b], axis=1)
    idx = np.concatenate([idx_a, idx_b], axis=1)
    order = np.lexsort((idx, -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


class PoolBlocks(Protocol):
    """A pool matrix read one shard at a time (in memory, float16 or float32, or a file on disk)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 unit rows) per shard of at most `rows` rows; a block is only valid until
        the next one is requested (readers reuse one buffer)."""
        ...


class ArrayBlocks:
    """Shards of an in-memory matrix; float16 (or non-unit) rows are converted one shard at a time, so the
    float32 copy never exceeds one shard."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.matrix), rows):
            yield start, l2_normalise(self.matrix[start : start + rows])


# Bytes a sharded search needs besides the shard itself: faiss's BLAS tile (4096 queries × 1024 rows
# float32, faiss/utils/distances.cpp) and its heaps, plus slack for the allocator.
_FIXED_OVERHEAD = 4096 * 1024 * 4 + 16 * 2**20
SHARD_ALIGN = 1024  # faiss scores the pool in tiles of 1024 rows: aligned shards reproduce its tiling


def shard_rows_for_budget(memory_bytes: int, dim: int, n_queries: int, k: int, *, source_itemsize: int = 4) -> int:
    """Pool rows per shard so that one shard + the running top-k + faiss's scratch fit `memory_bytes`.
    Raises ValueError (with the minimum) when the budget cannot hold even one aligned shard."""
    per_row = dim * 4 + (dim * source_itemsize if source_itemsize != 4 else 0)
    # Running (sims, idx) for every query, the shard's candidates, and the merge's concatenation + order.
    merge = n_queries * k * (4 + 8) * 4
    free = memory_bytes - _FIXED_OVERHEAD - merge - n_queries * dim * 4
    rows = (free // per_row) // SHARD_ALIGN * SHARD_ALIGN if free > 0 else 0
    if rows < SHARD_ALIGN:
        need = _FIXED_OVERHEAD + merge + n_queries * dim * 4 + SHARD_ALIGN * per_row
        raise ValueError(f"memory budget {memory_bytes / 2**20:.0f} MiB is below the {need / 2**20:.0f} MiB "
                         f"one {SHARD_ALIGN}-row shard needs for {n_queries} queries × top-{k}, dim {dim}")
    return int(rows)


Group = tuple["np.ndarray", "np.ndarray | None"]  # (query row indices, pool-row mask or None = every row)


def exact_search(
    queries: np.ndarray,
    pool: np.ndarray | PoolBlocks,
    k: int,
    *,
    groups: Sequence[Group] | None = None,
    shard_rows: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top-k per group (pool indices are global). Without `shard_rows` an in-memory pool is searched
    whole (a masked group on its selected rows); with it the pool streams shard by shard (one pass for all
    groups) and per-query top-k lists are merged: the same result, memory bounded by one shard."""
    import numpy as np

    n_p = pool.shape[0]
    groups = list(groups) if groups is not None else [(np.arange(len(queries)), None)]
    eligible = [n_p if mask is None else int(np.count_nonzero(mask)) for _, mask in groups]
    if shard_rows is None and not isinstance(pool, np.ndarray):
        shard_rows = n_p or 1
    if shard_rows is None:
        assert isinstance(pool, np.ndarray)
        out = []
        for (t_idx, mask), _n in zip(groups, eligible, strict=True):
            if mask is None:
                out.append(topk_cosine(queries[t_idx], pool, k))
                continue
            p_sel = np.flatnonzero(mask)
            sims, idx = topk_cosine(queries[t_idx], pool[p_sel], k)
            out.append((sims, p_sel[idx]))
        return out
    if shard_rows < 1:
        raise ValueError("shard_rows must be >= 1")
    # numpy's matmul rounds differently per block shape (±1 ulp); faiss scores in fixed 1024-row tiles and
    # is block-invariant. A pool small enough for the numpy kernel (≤ 100 MiB at 512-d) is one shard.
    if n_p <= NUMPY_MAX_POOL:
        shard_rows = max(shard_rows, n_p)
    blocks = pool if not isinstance(pool, np.ndarray) else ArrayBlocks(pool)
    state = [(np.zeros((len(t), 0), np.float32), np.zeros((len(t), 0), np.int64)) for t, _ in groups]
    group_queries = [np.ascontiguousarray(queries[t_idx], dtype=np.float32) for t_idx, _ in groups]
    for start, block in blocks.blocks(shard_rows):
        for g, ((_, mask), q) in enumerate(zip(groups, group_queries, strict=True)):
            if mask is None:
                sims, idx = topk_cosine(q, block, k, use_faiss=eligible[g] > NUMPY_MAX_POOL)
                idx = idx + start
            else:
                sel = np.flatnonzero(mask[start : start + len(block)])
                if len(sel) == 0:
                    continue
                sims, idx = topk_cosine(q, block[sel], k, use_faiss=eligible[g] > NUMPY_MAX_POOL)
                idx = sel[idx] + start
            state[g] = merge_topk(*state[g], sims, idx, min(k, eligible[g]))
    return state


@dataclass(frozen=True)
class KnnParams:
    """One k-NN's parameters, no defaults of its own: the run's `MineConfig` (whose defaults are the config's)
    supplies them, with the cut-off the selection runs at (strategy.selection_cutoff)."""

    topn: int
    min_similarity: float
    filter_by_label: bool


@dataclass
class KnnResult:
    candidates: pd.DataFrame  # target, pool, rank, similarity, passed_cutoff, passed_history, backfill, kept
    mined: pd.DataFrame  # pool, similarity, matched_target, n_targets — one row per kept pool row
    per_target: pd.DataFrame  # target, candidate_count, after_cutoff, after_history, kept_count, ...
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    label_counts: pd.DataFrame | None = None  # per label: targets, pool rows, candidates, kept
    # Facts a reader needs that are not problems (NVIDIA's mining recipe calls them expected), e.g. a budget of
    # topn × targets larger than the pool: said in the report, never a warning or an action.
    info: list[str] = field(default_factory=list)


class NeighbourIndex(Protocol):
    """An approximate index over the pool (see `ann.py`): top-k of unit queries among the rows of `pool_mask`
    (None = all), as (similarities, global pool indices) sorted like `topk_cosine`; -1 pads missing slots."""

    def search(self, queries: np.ndarray, k: int, pool_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]: ...


def label_groups(n_targets: int, t_labels: np.ndarray | None, p_labels: np.ndarray | None) -> list[Group]:
    """One search group per target label (its targets, the pool rows with that label); one group of
    everything without labels. Labels no pool row carries get no group (their targets mine nothing)."""
    import numpy as np

    if t_labels is None or p_labels is None:
        return [(np.arange(n_targets), None)]
    groups: list[Group] = []
    for label in np.unique(t_labels):
        mask = p_labels == label
        if mask.any():
            groups.append((np.flatnonzero(t_labels == label), mask))
    return groups


def _search(
    t_emb: np.ndarray,
    pool: np.ndarray | PoolBlocks,
    k: int,
    t_labels: np.ndarray | None,
    p_labels: np.ndarray | None,
    *,
    shard_rows: int | None = None,
    index: NeighbourIndex | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target idx, pool idx, similarity) for every raw candidate, label-restricted when labels are given."""
    import numpy as np

    groups = label_groups(len(t_emb), t_labels, p_labels)
    if index is not None:
        found = [index.search(t_emb[t_idx], k, mask) for t_idx, mask in groups]
    else:
        found = exact_search(t_emb, pool, k, groups=groups, shard_rows=shard_rows)
    tgts, pools, simss = [], [], []
    for (t_idx, _), (sims, idx) in zip(groups, found, strict=True):
        valid = idx >= 0
        tgts.append(np.repeat(t_idx, sims.shape[1]).reshape(sims.shape)[valid])
        pools.append(idx[valid])
        simss.append(sims[valid])
    if not tgts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return np.concatenate(tgts), np.concatenate(pools), np.concatenate(simss)


def mine_neighbours(
    target_emb: np.ndarray,
    pool_emb: np.ndarray | PoolBlocks,
    params: KnnParams,
    *,
    target_labels: np.ndarray | None = None,
    pool_labels: np.ndarray | None = None,
    pool_in_history: np.ndarray | None = None,
    shard_rows: int | None = None,
    index: NeighbourIndex | None = None,
) -> KnnResult:
    """Mine the pool for the targets. Embeddings must share one encoder; they are L2-normalised here.
    `shard_rows` streams an exact search shard by shard (same result, memory bounded by one shard); a
    `PoolBlocks` pool (e.g. a file on disk) is always streamed. `index` replaces the exact search by an
    approximate one."""
    import numpy as np
    import pandas as pd

    if params.topn < 1:
        raise ValueError("topn must be >= 1")
    if target_emb.ndim != 2 or len(pool_emb.shape) != 2 or target_emb.shape[1] != pool_emb.shape[1]:
        raise ValueError(f"embedding shapes differ: targets {target_emb.shape}, pool {pool_emb.shape}")
    if params.filter_by_label and (target_labels is None or pool_labels is None):
        raise ValueError("filter_by_label needs labels for targets and pool")
    n_t, n_p = len(target_emb), pool_emb.shape[0]
    t_emb = l2_normalise(target_emb)
    # Streamed pools are normalised one shard at a time; whole ones once, up front (no copy when unit).
    streamed = shard_rows is not None or index is not None or not isinstance(pool_emb, np.ndarray)
    p_emb = l2_normalise(pool_emb) if not streamed and isinstance(pool_emb, np.ndarray) else pool_emb
    use_labels = params.filter_by_label
    tl = np.asarray(target_labels).astype(str) if target_labels is not None else None
    pl = np.asarray(pool_labels).astype(str) if pool_labels is not None else None
    hist = np.zeros(n_p, dtype=bool) if pool_in_history is None else np.asarray(pool_in_history, dtype=bool)
    extra = min(int(hist.sum()), MAX_BACKFILL)
    tgt, pidx, sims = _search(t_emb, p_emb, params.topn + extra, tl if use_labels else None,
                              pl if use_labels else None, shard_rows=shard_rows, index=index)

    cand = pd.DataFrame({"target": tgt, "pool": pidx, "similarity": sims.astype(np.float64)})
    cand["rank"] = cand.groupby("target").cumcount() + 1
    cand["primary"] = cand["rank"] <= params.topn  # the raw top-k; deeper rows are back-fill reserve
    cand["passed_cutoff"] = cand["similarity"] >= params.min_similarity
    fresh = pd.Series(~hist[cand["pool"].to_numpy()], index=cand.index)
    fresh_rank = fresh.astype(int).groupby(cand["target"]).cumsum()
    selected = fresh & (fresh_rank <= params.topn) & cand["passed_cutoff"]
    cand["passed_history"] = cand["primary"] & cand["passed_cutoff"] & fresh
    cand["backfill"] = selected & ~cand["primary"]
    # Reserve rows that were not needed for back-fill are not candidates: drop them.
    cand = cand[cand["primary"] | cand["backfill"]].copy()
    selected = selected.loc[cand.index]
    survivors = cand[selected]
    # Best target per pool row: highest similarity, then lowest target index (deterministic).
    best = survivors.sort_values(["pool", "similarity", "target"], ascending=[True, False, True])
    keep_idx = best.drop_duplicates("pool", keep="first").index
    cand["kept"] = False
    cand.loc[keep_idx, "kept"] = True
    n_targets = survivors.groupby("pool").size()
    mined = cand.loc[keep_idx, ["pool", "similarity", "target"]].rename(columns={"target": "matched_target"})
    mined["n_targets"] = n_targets.reindex(mined["pool"]).to_numpy()
    mined = mined.sort_values(["similarity", "pool"], ascending=[False, True]).reset_index(drop=True)

    cand["primary_cutoff"] = cand["primary"] & cand["passed_cutoff"]
    grouped = cand.groupby("target")
    per_target = pd.DataFrame({"target": np.arange(n_t)})
    for name, col in (
        ("candidate_count", "primary"),
        ("after_cutoff", "primary_cutoff"),
        ("after_history", "passed_history"),
        ("backfilled", "backfill"),
        ("kept_count", "kept"),
    ):
        series = grouped[col].sum()
        per_target[name] = series.reindex(per_target["target"], fill_value=0).to_numpy().astype(np.int64)
    # Every row looked at (raw + back-fill) is either kept or rejected.
    per_target["rejected_count"] = per_target["candidate_count"] + per_target["backfilled"] - per_target["kept_count"]
    per_target["max_similarity"] = grouped["similarity"].max().reindex(per_target["target"]).to_numpy()
    per_target["similarity_threshold"] = params.min_similarity

    counts = {
        "targets": n_t,
        "pool": n_p,
        "raw": int(cand["primary"].sum()),
        "after_cutoff": int(cand["primary_cutoff"].sum()),
        "after_history": int(cand["passed_history"].sum()),
        "backfilled": int(cand["backfill"].sum()),
        "after_dedup": len(mined),
    }
    counts["duplicates_removed"] = counts["after_history"] + counts["backfilled"] - counts["after_dedup"]
    notes: list[str] = []
    info: list[str] = []
    eligible = n_p
    if use_labels and tl is not None and pl is not None:
        eligible = int(np.isin(pl, np.unique(tl)).sum())
    if params.topn * n_t > eligible:
        info.append(
            f"topn × targets = {params.topn} × {n_t} = {params.topn * n_t} exceeds the {eligible} pool row(s) "
            "eligible: expected when targets share neighbourhoods; each pool row is mined once"
        )
    label_counts = None
    if tl is not None:
        label_counts = _label_breakdown(cand, mined, tl, pl)
        if use_labels:
            starved = label_counts[(label_counts["targets"] > 0) & (label_counts["pool_rows"] == 0)]
            for label in starved["label"]:
                notes.append(f"label '{label}': the pool holds no row with this label, its targets mined nothing")
    return KnnResult(cand, mined, per_target, counts, notes, label_counts, info)


def _label_breakdown(
    cand: pd.DataFrame, mined: pd.DataFrame, tl: np.ndarray, pl: np.ndarray | None
) -> pd.DataFrame:
    """Per target label: targets, pool rows with that label, raw candidates, kept; and mined rows whose
    own label differs from their target's (only possible without the label filter)."""
    import numpy as np
    import pandas as pd

    labels = sorted(set(tl) | (set(pl) if pl is not None else set()))
    c_lab = tl[cand["target"].to_numpy()] if len(cand) else np.array([], dtype=str)
    m_lab = tl[mined["matched_target"].to_numpy()] if len(mined) else np.array([], dtype=str)
    m_own = pl[mined["pool"].to_numpy()] if pl is not None and len(mined) else None
    rows = []
    for label in labels:
        row = {
            "label": label,
            "targets": int((tl == label).sum()),
            "pool_rows": int((pl == label).sum()) if pl is not None else -1,
            "candidates": int((c_lab == label).sum()),
            "kept": int((m_lab == label).sum()),
            "mined_with_label": int((m_own == label).sum()) if m_own is not None else -1,
        }
        rows.append(row)
    return pd.DataFrame(rows)
