"""Exact cosine k-NN mining — pure maths on arrays, no filesystem.

Order of filters (each count is reported): raw top-k per target (within the target's label when
`filter_by_label`) → similarity cut-off → history (rows mined in earlier iterations) → de-duplication
across targets (a pool row matched by several targets is kept once, for its most similar target).

Back-fill: a slot lost to history is refilled with the target's next-nearest fresh row that passes the
cut-off (searching up to MAX_BACKFILL deeper). Without it, a later iteration whose weak targets resemble
earlier ones would mine nothing new: the loop would stall on rows it already trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    out = np.ascontiguousarray(x, dtype=np.float32) if needs_copy else x
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


def topk_cosine(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product of unit rows: (similarities, indices), each (n_queries, k'),
    k' = min(k, pool rows), sorted by similarity descending (ties by lower index)."""
    import numpy as np

    k = min(k, len(pool))
    nq = len(queries)
    if k <= 0 or nq == 0:
        return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
    if len(pool) > NUMPY_MAX_POOL:
        import faiss

        sims, idx = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), pool, k,
                              metric=faiss.METRIC_INNER_PRODUCT)
        return sims.astype(np.float32), idx.astype(np.int64)
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


@dataclass(frozen=True)
class KnnParams:
    topn: int = 5
    min_similarity: float = 0.9
    filter_by_label: bool = False


@dataclass
class KnnResult:
    candidates: pd.DataFrame  # target, pool, rank, similarity, passed_cutoff, passed_history, backfill, kept
    mined: pd.DataFrame  # pool, similarity, matched_target, n_targets — one row per kept pool row
    per_target: pd.DataFrame  # target, candidate_count, after_cutoff, after_history, kept_count, ...
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    label_counts: pd.DataFrame | None = None  # per label: targets, pool rows, candidates, kept


def _search(
    t_emb: np.ndarray,
    p_emb: np.ndarray,
    k: int,
    t_labels: np.ndarray | None,
    p_labels: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target idx, pool idx, similarity) for every raw candidate, label-restricted when labels are given."""
    import numpy as np

    if t_labels is None or p_labels is None:
        sims, idx = topk_cosine(t_emb, p_emb, k)
        tgt = np.repeat(np.arange(len(t_emb)), sims.shape[1])
        return tgt, idx.ravel(), sims.ravel()
    tgts, pools, simss = [], [], []
    for label in np.unique(t_labels):
        t_sel = np.flatnonzero(t_labels == label)
        p_sel = np.flatnonzero(p_labels == label)
        if len(p_sel) == 0:
            continue
        sims, idx = topk_cosine(t_emb[t_sel], p_emb[p_sel], k)
        tgts.append(np.repeat(t_sel, sims.shape[1]))
        pools.append(p_sel[idx.ravel()])
        simss.append(sims.ravel())
    if not tgts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return np.concatenate(tgts), np.concatenate(pools), np.concatenate(simss)


def mine_neighbours(
    target_emb: np.ndarray,
    pool_emb: np.ndarray,
    params: KnnParams,
    *,
    target_labels: np.ndarray | None = None,
    pool_labels: np.ndarray | None = None,
    pool_in_history: np.ndarray | None = None,
) -> KnnResult:
    """Mine the pool for the targets. Embeddings must share one encoder; they are L2-normalised here."""
    import numpy as np
    import pandas as pd

    if params.topn < 1:
        raise ValueError("topn must be >= 1")
    if target_emb.ndim != 2 or pool_emb.ndim != 2 or target_emb.shape[1] != pool_emb.shape[1]:
        raise ValueError(f"embedding shapes differ: targets {target_emb.shape}, pool {pool_emb.shape}")
    if params.filter_by_label and (target_labels is None or pool_labels is None):
        raise ValueError("filter_by_label needs labels for targets and pool")
    n_t, n_p = len(target_emb), len(pool_emb)
    t_emb = l2_normalise(target_emb)
    p_emb = l2_normalise(pool_emb)
    use_labels = params.filter_by_label
    tl = np.asarray(target_labels).astype(str) if target_labels is not None else None
    pl = np.asarray(pool_labels).astype(str) if pool_labels is not None else None
    hist = np.zeros(n_p, dtype=bool) if pool_in_history is None else np.asarray(pool_in_history, dtype=bool)
    extra = min(int(hist.sum()), MAX_BACKFILL)
    tgt, pidx, sims = _search(t_emb, p_emb, params.topn + extra, tl if use_labels else None,
                              pl if use_labels else None)

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
    notes = []
    eligible = n_p
    if use_labels and tl is not None and pl is not None:
        eligible = int(np.isin(pl, np.unique(tl)).sum())
    if params.topn * n_t > eligible:
        notes.append(
            f"topn × targets = {params.topn} × {n_t} = {params.topn * n_t} exceeds the {eligible} pool row(s) "
            "eligible: the pool cannot supply that many distinct neighbours"
        )
    label_counts = None
    if tl is not None:
        label_counts = _label_breakdown(cand, mined, tl, pl)
        if use_labels:
            starved = label_counts[(label_counts["targets"] > 0) & (label_counts["pool_rows"] == 0)]
            for label in starved["label"]:
                notes.append(f"label '{label}': the pool holds no row with this label, its targets mined nothing")
    return KnnResult(cand, mined, per_target, counts, notes, label_counts)


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
