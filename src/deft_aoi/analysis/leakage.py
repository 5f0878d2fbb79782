"""Train/reference leakage, pure: by the exact row key, by image content hash, by embedding cosine.

No filesystem here; validation.py gathers hashes and embeddings and calls these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deft_aoi.errors import InputError
from deft_aoi.mining.ann import AUTO_MIN_POOL, AnnParams, FaissIndex, build_index, measure_recall
from deft_aoi.mining.embedders.pixels import split_halves
from deft_aoi.mining.knn import ArrayBlocks
from deft_aoi.workspace.changenet_csv import LEAKAGE_KEY, normalise_labels

NEAR_DUPLICATE_COSINE = 0.99


def key_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The LEAKAGE_KEY columns, normalised so cosmetic differences (label case, trailing '/') still match."""
    missing = [c for c in LEAKAGE_KEY if c not in df.columns]
    if missing:
        raise InputError(f"cannot compare rows: missing key column(s) {', '.join(missing)}")
    keys = pd.DataFrame(index=df.index)
    for col in LEAKAGE_KEY:
        values = df[col].fillna("").astype(str).str.strip()
        keys[col] = values.str.rstrip("/") if col in ("input_path", "golden_path") else values
    keys["label"] = normalise_labels(keys["label"])
    return keys


def member_mask(values: pd.Series, pool: pd.Series) -> np.ndarray:
    """Exact `values.isin(pool)` for strings. A Python set over object arrays: pandas' Arrow-backed
    string isin iterates scalars and is orders of magnitude slower at 10^5-10^6 rows."""
    lookup = set(pool.to_numpy(dtype=object))
    return np.fromiter((v in lookup for v in values.to_numpy(dtype=object)), dtype=bool, count=len(values))


def row_keys(df: pd.DataFrame) -> pd.Series:
    """One string per row joining the normalised LEAKAGE_KEY fields (unit separator between them), so
    set operations run on a single column instead of a slow multi-column index."""
    keys = key_frame(df)
    out = keys[LEAKAGE_KEY[0]]
    for col in LEAKAGE_KEY[1:]:
        out = out + "\x1f" + keys[col]
    return out


def key_matches(train: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Pairs (train_index, reference_index) whose keys are equal; first matching reference row per train row.

    A 64-bit hash per key prefilters with np.isin (sorting, O(n log n)); only candidates are compared
    exactly, so hash collisions can never report a false leak.
    """
    empty = pd.DataFrame({"train_index": pd.Series(dtype=object), "reference_index": pd.Series(dtype=object)})
    if train.empty or reference.empty:
        return empty
    tkeys, rkeys = key_frame(train), key_frame(reference)
    th = pd.util.hash_pandas_object(tkeys, index=False).to_numpy()
    rh = pd.util.hash_pandas_object(rkeys, index=False).to_numpy()
    candidates = np.isin(th, rh)
    if not candidates.any():
        return empty
    cols = list(LEAKAGE_KEY)
    left = tkeys[candidates].assign(train_index=train.index[candidates])
    right = rkeys.assign(reference_index=reference.index).drop_duplicates(subset=cols, keep="first")
    merged = left.merge(right, on=cols, how="inner")
    return merged[["train_index", "reference_index"]].reset_index(drop=True)


def key_leakage(train: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Rows of `train` (original index kept) whose LEAKAGE_KEY appears in `reference`."""
    matches = key_matches(train, reference)
    return train.loc[pd.Index(matches["train_index"]).unique()] if len(matches) else train.iloc[0:0]


def hash_leakage(train_hashes: pd.Series, reference_hashes: pd.Series) -> pd.Series:
    """Boolean mask over `train_hashes`: True where the same content hash occurs in the reference.
    Blank or missing hashes (unreadable images) never match."""
    ref = reference_hashes.dropna().astype(str)
    ref = ref[ref != ""]
    values = train_hashes.fillna("").astype(str)
    return pd.Series(member_mask(values, ref) & (values != "").to_numpy(), index=train_hashes.index)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"embeddings must be a 2-D array, found shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector has no direction; leave it zero so its cosine with everything is 0.
    unit: np.ndarray = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return unit


def near_duplicates(
    train_emb: np.ndarray, reference_emb: np.ndarray, threshold: float = NEAR_DUPLICATE_COSINE, block: int = 4096
) -> pd.DataFrame:
    """For each train row, its most similar reference row when cosine ≥ threshold.

    Columns `train_pos`, `reference_pos` (0-based positions), `cosine`. Blockwise so memory stays
    bounded at block × len(reference) floats.
    """
    t, r = _unit_rows(train_emb), _unit_rows(reference_emb)
    if t.shape[0] and r.shape[0] and t.shape[1] != r.shape[1]:
        raise InputError(f"embedding widths differ: {t.shape[1]} vs {r.shape[1]} (same encoder required)")
    out_t: list[np.ndarray] = []
    out_r: list[np.ndarray] = []
    out_c: list[np.ndarray] = []
    if t.shape[0] and r.shape[0]:
        for start in range(0, t.shape[0], block):
            sims = t[start : start + block] @ r.T
            best = sims.argmax(axis=1)
            best_sim = sims[np.arange(sims.shape[0]), best]
            hit = best_sim >= threshold
            out_t.append(np.nonzero(hit)[0] + start)
            out_r.append(best[hit])
            out_c.append(best_sim[hit])
    if not out_t:
        return pd.DataFrame({"train_pos": np.array([], dtype=np.int64),
                             "reference_pos": np.array([], dtype=np.int64), "cosine": np.array([], dtype=float)})
    return pd.DataFrame({
        "train_pos": np.concatenate(out_t).astype(np.int64),
        "reference_pos": np.concatenate(out_r).astype(np.int64),
        "cosine": np.concatenate(out_c).astype(float),
    })


CANDIDATE_SIDE = 8  # candidates are searched on 8×8 thumbnails: 16× fewer flops than 32×32


def _pool_raw(halves: np.ndarray, side: int) -> np.ndarray:
    """Mean-pooled rows (CANDIDATE_SIDE² per image) of (n, side²) centred images, not normalised."""
    n, f = halves.shape[0], max(side // CANDIDATE_SIDE, 1)
    out: np.ndarray = halves.reshape(n, side // f, f, side // f, f).mean(axis=(2, 4)).reshape(n, -1)
    return out


def _pooled(halves: np.ndarray, side: int) -> np.ndarray:
    """Mean-pooled unit rows (CANDIDATE_SIDE² per image) of (n, side²) centred images."""
    return _unit_rows(_pool_raw(halves, side))


def pooled_floor(raw_in: np.ndarray, raw_gold: np.ndarray, blank_in: np.ndarray, blank_gold: np.ndarray,
                 threshold: float, side: int) -> np.ndarray:
    """Per query row (`raw_*`: its pooled halves, `_pool_raw`; `blank_*`: its zero halves), a lower bound on the
    pooled (candidate-search) similarity of any twin: a reference row
    below it cannot reach min(input, golden) cosine ≥ threshold, so its full vectors need not be read.

    Why it holds: a twin's unit halves differ by ‖a − b‖ ≤ √(2(1 − t)) per side; mean pooling over f×f
    blocks shrinks any difference by at least f (Cauchy-Schwarz), so the pooled halves differ by at most
    δ = √(2(1 − t)) / f, and two vectors u, v with ‖u − v‖ ≤ δ < ‖u‖ have cosine ≥ √(1 − δ²/‖u‖²). The
    search vector averages the unit pooled halves of the sides that are not blank (a twin is blank on the
    same sides), so its cosine is bounded by the mean of the per-side bounds. A row with a non-blank side
    whose pooled norm is ≤ δ gets no bound (-inf: every candidate is checked in full). 1e-3 of slack
    covers float32 rounding; the bound only ever skips rows that could not be twins."""
    f = max(side // CANDIDATE_SIDE, 1)
    delta = float(np.sqrt(2.0 * max(1.0 - threshold, 0.0))) / f
    bounds = []
    present = []
    for raw, blank in ((raw_in, blank_in), (raw_gold, blank_gold)):
        norm = np.linalg.norm(raw, axis=1).astype(np.float64)
        ratio = np.divide(delta, norm, out=np.full(len(norm), np.inf), where=norm > 0)
        bound = np.where(ratio < 1.0, np.sqrt(np.clip(1.0 - ratio**2, 0.0, 1.0)), -np.inf)
        bounds.append(np.where(blank, 0.0, bound))
        present.append(~blank)
    n_sides = present[0].astype(int) + present[1].astype(int)
    total = bounds[0] + bounds[1]
    floor: np.ndarray = np.divide(total, n_sides, out=np.full(len(total), -np.inf), where=n_sides > 0) - 1e-3
    return floor


def pair_near_duplicates(
    query: np.ndarray,
    reference: np.ndarray,
    threshold: float,
    *,
    k: int = 16,
    exclude_self: bool = False,
    block: int = 4096,
) -> pd.DataFrame:
    """Pair-aware near duplicates between pixel-pair vectors (input half, golden half; `embedders.pixels`).

    A query row's twin is the reference row with the highest min(input cosine, golden cosine), kept when
    that is ≥ threshold: the same input over a different golden (or the reverse) is not a twin. A side that is
    blank (featureless, a zero half) in both rows counts as equal; rows blank on both sides never match.
    Candidates come from a top-k inner-product search on 8×8-pooled halves (`PairReference`); a true twin is
    near-identical at any resolution, so it ranks among them.
    `exclude_self` (query is reference) skips each row's match with itself. Columns `train_pos`,
    `reference_pos`, `cosine` (the min of the two sides).
    """
    return PairReference(reference, k=k + int(exclude_self)).search(query, threshold, exclude_self=exclude_self,
                                                                    block=block)


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"train_pos": np.array([], dtype=np.int64), "reference_pos": np.array([], dtype=np.int64),
                         "cosine": np.array([], dtype=float)})


class PairReference:
    """A reference set of pixel-pair vectors prepared once, searched by many query blocks (pre-flight streams
    the pool through it chunk by chunk).

    The candidate search is mining's index machinery over the 8×8-pooled reference halves: an exact inner
    product (faiss, query blocks as shards) below `ivf_min_rows` reference rows, a faiss IVF index
    (`mining.ann`, same parameters as mining) from there on, whose recall@k against the exact search is
    measured on a sample of queries (`measure_recall`) and reported by the caller, as mining does.
    """

    def __init__(self, reference: np.ndarray, *, k: int = 16, index: str = "auto", ivf_min_rows: int | None = None
                 ) -> None:

        r = np.asarray(reference, dtype=np.float32)
        self.n = len(r)
        self.k = k
        self.dim = int(r.shape[1]) if r.ndim == 2 else 0
        self.side = _pair_side(self.dim) if self.n else 0
        self.r_in: np.ndarray
        self.r_gold: np.ndarray
        self.r_in, self.r_gold = split_halves(r) if self.n else (r, r)
        self.r_small = (_unit_rows(np.concatenate([_pooled(self.r_in, self.side), _pooled(self.r_gold, self.side)],
                                                  axis=1)) if self.n else r)
        # asarray: numpy types a reduction of an unknown-rank array as "array or scalar"; these are 1-D arrays.
        self.r_blank_in = np.asarray(~self.r_in.any(axis=1)) if self.n else np.zeros(0, bool)
        self.r_blank_gold = np.asarray(~self.r_gold.any(axis=1)) if self.n else np.zeros(0, bool)
        threshold = AUTO_MIN_POOL if ivf_min_rows is None else ivf_min_rows
        self.kind = "ivf" if index == "ivf" or (index == "auto" and self.n >= threshold and self.n) else "exact"
        self._ann = None
        if self.kind == "ivf":

            params = AnnParams(kind="ivf")
            self._ann = FaissIndex(build_index(ArrayBlocks(self.r_small), params), params)

    def _query_small(self, q_in: np.ndarray, q_gold: np.ndarray) -> np.ndarray:
        return _unit_rows(np.concatenate([_pooled(q_in, self.side), _pooled(q_gold, self.side)], axis=1))

    def _candidates(self, q_small: np.ndarray, kk: int) -> np.ndarray:
        """(n, kk) reference rows, -1 where the index found fewer."""
        if self._ann is not None:
            return self._ann.search(q_small, kk, None)[1]
        import faiss

        # Many queries against a modest reference: faiss's blocked BLAS + heap beats numpy's argpartition.
        _, found = faiss.knn(np.ascontiguousarray(q_small), np.ascontiguousarray(self.r_small), kk,
                             metric=faiss.METRIC_INNER_PRODUCT)
        return found.astype(np.int64)

    def measure_recall(self, query: np.ndarray, *, sample: int = 256) -> float | None:
        """recall@k of the IVF candidate search against the exact one on up to `sample` evenly spaced query rows
        (None for the exact search: nothing to measure)."""
        if self._ann is None or not len(query):
            return None

        q = np.asarray(query, dtype=np.float32)
        take = np.linspace(0, len(q) - 1, min(sample, len(q))).astype(int)
        q_small = self._query_small(*split_halves(q[take]))
        kk = min(self.k, self.n)
        return measure_recall(q_small, self.r_small, self._ann, kk, [(np.arange(len(take)), None)],
                              sample=sample).recall

    def search(self, query: np.ndarray, threshold: float, *, exclude_self: bool = False, offset: int = 0,
               block: int = 4096) -> pd.DataFrame:
        """Each query row's twin (see `pair_near_duplicates`). `offset`: the query rows' first position in the
        reference when `exclude_self` (a block of the reference searched against the whole of it)."""

        q = np.asarray(query, dtype=np.float32)
        if not len(q) or not self.n:
            return _empty_pairs()
        if q.shape[1] != self.dim:
            raise InputError(f"pixel-pair widths differ or are odd: {q.shape[1]} vs {self.dim}")
        kk = min(self.k, self.n)
        out_t, out_r, out_c = [], [], []
        for start in range(0, len(q), block):
            q_in, q_gold = split_halves(q[start : start + block])
            raw_in, raw_gold = _pool_raw(q_in, self.side), _pool_raw(q_gold, self.side)
            q_small = _unit_rows(np.concatenate([_unit_rows(raw_in), _unit_rows(raw_gold)], axis=1))
            found = self._candidates(q_small, kk)
            cand = np.maximum(found, 0)
            # Gate on the pooled similarity (recomputed exactly: an IVF index may score approximately): only
            # rows with a candidate above their twin floor read full vectors, usually a handful per block.
            pooled = np.einsum("nd,nkd->nk", q_small, self.r_small[cand])
            q_blank_in, q_blank_gold = ~np.asarray(q_in.any(axis=1)), ~np.asarray(q_gold.any(axis=1))
            floor = pooled_floor(raw_in, raw_gold, q_blank_in, q_blank_gold, threshold, self.side)
            live = (found >= 0) & (pooled >= floor[:, None])
            if exclude_self:
                live &= cand != (np.arange(len(cand)) + start + offset)[:, None]
            rows = np.flatnonzero(live.any(axis=1))
            cand, live, q_in, q_gold = cand[rows], live[rows], q_in[rows], q_gold[rows]
            c_in = np.einsum("nd,nkd->nk", q_in, self.r_in[cand])
            c_gold = np.einsum("nd,nkd->nk", q_gold, self.r_gold[cand])
            # A side blank (zero) in both rows is the same blank: the other side decides. All blank: no identity.
            b_in = q_blank_in[rows][:, None] & self.r_blank_in[cand]
            b_gold = q_blank_gold[rows][:, None] & self.r_blank_gold[cand]
            sims = np.minimum(np.where(b_in, 1.0, c_in), np.where(b_gold, 1.0, c_gold))
            sims[b_in & b_gold] = -np.inf
            sims[~live] = -np.inf
            best = sims.argmax(axis=1) if len(sims) else np.zeros(0, np.int64)
            best_sim = sims[np.arange(len(sims)), best]
            hit = best_sim >= threshold
            out_t.append(rows[hit] + start)
            out_r.append(cand[np.arange(len(cand)), best][hit])
            out_c.append(best_sim[hit])
        return pd.DataFrame({"train_pos": np.concatenate(out_t).astype(np.int64),
                             "reference_pos": np.concatenate(out_r).astype(np.int64),
                             "cosine": np.concatenate(out_c).astype(float)})


def _pair_side(width: int) -> int:
    """The image side of pixel-pair vectors of this width (two square images of even side)."""
    if width % 2:
        raise InputError(f"pixel-pair widths differ or are odd: {width}")
    side: int = round(float(width // 2) ** 0.5)
    if side * side * 2 != width or side % 2 or side % max(side // CANDIDATE_SIDE, 1):
        raise InputError(f"pixel-pair vectors of width {width} are not two square images of even side")
    return side


def excluded_mask(pool: pd.DataFrame, exclusions: pd.DataFrame) -> np.ndarray:
    """True for staged source-pool rows (workspace coordinates, `source` column) on the exclusion list.

    Mining-pool rows match on (input_path, golden_path, object_name) in workspace coordinates; synthetic
    rows on their stem (`object_name`), since they are staged under the run dir after pre-flight listed them.
    """
    if pool.empty or exclusions.empty:
        return np.zeros(len(pool), dtype=bool)

    def ident(df: pd.DataFrame, synthetic: pd.Series) -> pd.Series:
        cols = [df[c].fillna("").astype(str).str.strip().str.rstrip("/") for c in ("input_path", "golden_path")]
        real = cols[0] + "\x1f" + cols[1] + "\x1f" + df["object_name"].fillna("").astype(str)
        return real.where(~synthetic, "synthetic\x1f" + df["object_name"].fillna("").astype(str))

    pool_ids = ident(pool, pool["source"].astype(str) == "synthetic")
    excl_ids = ident(exclusions, exclusions["source"].astype(str) == "synthetic")
    return member_mask(pool_ids, excl_ids)
