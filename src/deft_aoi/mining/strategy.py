"""Selection strategies: which fresh pool rows an iteration adds, behind one interface (`select`).

Pure maths on arrays; the k-NN search itself is `knn.mine_neighbours` (its cut-off, history and
de-duplication rules are kept). No strategy takes more rows than the `knn` strategy takes at the same
cut-off (its budget); `knn` and `diverse` take exactly that many, so they differ only in WHICH rows:

- `knn`: today's contract behaviour — each weak target's top-n fresh neighbours above the cut-off, a row
  matched by several targets kept once for its most similar target.
- `kpi` (what the default `auto` runs on the builtin engine, see params.resolve_strategy): rank candidates (each
  target's wider neighbourhood) by their expected effect on FAR@recall100: Σ over the targets that list
  them of weight(target) × similarity, weight = exp(standardised weakness), so the defects closest to
  setting the threshold and the PASS rows scored furthest above it pull hardest. Only targets wrong at
  the threshold (weakness ≥ 0) pull at all when there are any — a row the model already gets right by a
  margin does not move FAR@recall100 — so `kpi` may take fewer rows than the budget, and its
  pool-calibrated cut-off is computed on those targets' neighbourhoods. Chosen as the default by
  bench/RESULTS.md (loop efficacy run 8).
- `diverse`: coverage instead of near-duplicates — round-robin over the targets (weakest first), each
  taking its nearest candidate that is not a near-duplicate (cosine ≥ DUPLICATE_COSINE) of a row already
  taken, so every weak target's neighbourhood gets rows before any target gets a second one.

Two guards apply to every strategy:
- pool-calibrated cut-off (`pool_share_pct`): the similarity cut-off becomes the (100 − share)-th
  percentile of the pool rows' best similarity to any target, so at most that share of the pool can pass
  (the share taken is then a stated number, not whatever a fixed 0.9 keeps);
- class balance (`max_pass_ratio`): the PASS : defect ratio of the added rows is capped by dropping the
  lowest-ranked PASS rows beyond it. The ratio taken is always reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.knn import KnnResult
    from deft_aoi.mining.params import MineConfig

STRATEGIES: tuple[str, ...] = ("auto", "knn", "kpi", "diverse")
AUTO = "auto"
# How much deeper than top-n `kpi` and `diverse` look per target for candidates.
CANDIDATE_DEPTH = 4
# `diverse`: two pool rows this similar are near-duplicates; the second adds no coverage.
DUPLICATE_COSINE = 0.99


@dataclass
class Selection:
    knn: KnnResult  # the k-NN at the cut-off used; `knn.mined` holds the selected rows
    cutoff: float
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # None: the plain k-NN is the selection (nothing re-selected, the report names no selection step)
    strategy: str | None = None


def calibrated_cutoff(best_similarity: np.ndarray, share_pct: float) -> float:
    """The cut-off that lets at most `share_pct` % of the pool pass: the similarity of the pool row ranked
    ceil(share × N) by its best similarity to any target (rows tied with it pass too)."""
    import numpy as np

    if not 0 < share_pct <= 100:
        raise ValueError("pool share must be in (0, 100] %")
    values = np.sort(np.asarray(best_similarity, dtype=np.float64))[::-1]
    if values.size == 0:
        return 1.0
    k = max(1, math.ceil(values.size * share_pct / 100.0))
    return float(values[k - 1])


def target_weights(weakness: np.ndarray | None, n: int) -> np.ndarray:
    """exp(standardised weakness), clipped to ±3 sd: the most marginal targets pull hardest; equal weights
    when weakness is unknown or constant."""
    import numpy as np

    if weakness is None:
        return np.ones(n)
    w = np.nan_to_num(np.asarray(weakness, dtype=np.float64), nan=0.0)
    sd = float(w.std())
    if w.size == 0 or sd == 0.0:
        return np.ones(n)
    weights: np.ndarray = np.exp(np.clip((w - w.mean()) / sd, -3.0, 3.0))
    return weights


def kpi_weights(weakness: np.ndarray | None, n: int) -> np.ndarray:
    """`kpi`'s pull per target: target_weights, zero for the targets right at the threshold by a margin
    when some are wrong there (weakness >= 0: PASS scored at or above the lowest defect, and that
    defect) — only those move FAR@recall100."""
    import numpy as np

    weights = target_weights(weakness, n)
    if weakness is None:
        return weights
    wrong = np.nan_to_num(np.asarray(weakness, dtype=np.float64), nan=0.0) >= 0
    return np.where(wrong, weights, 0.0) if bool(wrong.any()) else weights


def _candidates(t_emb: np.ndarray, p_emb: np.ndarray, fresh: np.ndarray, cutoff: float,
                depth: int) -> pd.DataFrame:
    """(target, pool, similarity) of each target's `depth` nearest fresh pool rows above the cut-off."""
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.knn import topk_cosine

    sims, idx = topk_cosine(t_emb, p_emb, min(len(p_emb), depth + int((~fresh).sum())))
    tgt = np.repeat(np.arange(len(t_emb)), sims.shape[1])
    cand = pd.DataFrame({"target": tgt, "pool": idx.ravel(), "similarity": sims.ravel().astype(np.float64)})
    cand = cand[fresh[cand["pool"].to_numpy()] & (cand["similarity"] >= cutoff)]
    cand = cand[cand.groupby("target").cumcount() < depth]
    kept: pd.DataFrame = cand.reset_index(drop=True)
    return kept


def _pick_kpi(cand: pd.DataFrame, weights: np.ndarray, budget: int) -> pd.DataFrame:
    """Top `budget` pool rows by Σ weight(target) × similarity; each row's matched target = its largest term."""
    cand = cand.assign(term=weights[cand["target"].to_numpy()] * cand["similarity"])
    cand = cand[cand["term"] > 0]
    score = cand.groupby("pool")["term"].sum()
    best = cand.sort_values(["pool", "term", "target"], ascending=[True, False, True]).drop_duplicates("pool")
    best = best.set_index("pool").assign(score=score)
    best = best.reset_index().sort_values(["score", "pool"], ascending=[False, True]).head(budget)
    return best[["pool", "similarity", "target", "score"]]


def _pick_diverse(cand: pd.DataFrame, p_emb: np.ndarray, weights: np.ndarray, budget: int) -> pd.DataFrame:
    """Round-robin over targets (heaviest first); each takes its nearest candidate not taken and not a
    near-duplicate of a row already taken."""
    import numpy as np
    import pandas as pd

    # The group keys are the int `target` column; pandas-stubs types a group key as any scalar.
    groups = cand.groupby("target", sort=False)
    queues = {int(cast(int, t)): g[["pool", "similarity"]].to_numpy() for t, g in groups}
    order = sorted(queues, key=lambda t: (-weights[t], t))
    pos = dict.fromkeys(order, 0)
    taken: list[tuple[int, float, int]] = []
    taken_set: set[int] = set()
    chosen = np.empty((budget, p_emb.shape[1]), dtype=np.float32)
    active = list(order)
    while len(taken) < budget and active:
        still = []
        for t in active:
            if len(taken) >= budget:
                break
            queue = queues[t]
            while pos[t] < len(queue):
                p, sim = int(queue[pos[t]][0]), float(queue[pos[t]][1])
                pos[t] += 1
                if p in taken_set:
                    continue
                if taken and float((chosen[: len(taken)] @ p_emb[p]).max()) >= DUPLICATE_COSINE:
                    continue
                chosen[len(taken)] = p_emb[p]
                taken.append((p, sim, t))
                taken_set.add(p)
                still.append(t)
                break
        active = still
    return pd.DataFrame(taken, columns=["pool", "similarity", "target"])


def balance(picked: pd.DataFrame, pool_is_defect: np.ndarray, max_pass_ratio: float | None) -> tuple[pd.DataFrame, int]:
    """Drop the lowest-ranked PASS rows (picked is in rank order) beyond max_pass_ratio × defect rows.
    Returns the kept rows and how many were dropped. Without defect rows no PASS row is dropped: the cap
    would empty the iteration, so the ratio is reported instead."""
    import numpy as np

    if max_pass_ratio is None or picked.empty:
        return picked, 0
    is_def = pool_is_defect[picked["pool"].to_numpy()]
    n_def = int(is_def.sum())
    if n_def == 0:
        return picked, 0
    cap = math.floor(max_pass_ratio * n_def)
    pass_rank = np.cumsum(~is_def)
    keep = is_def | (pass_rank <= cap)
    return picked[keep], int((~keep).sum())


def selection_counts(picked: np.ndarray, pool_is_defect: np.ndarray, *, budget: int,
                     dropped: int = 0) -> dict[str, int]:
    """What a selection took: rows, PASS and defect rows, the share of the pool (per mille)."""
    import numpy as np

    is_def = np.asarray(pool_is_defect, dtype=bool)
    taken = is_def[np.asarray(picked, dtype=np.int64)]
    return {
        "budget": budget,
        "selected": len(taken),
        "selected_pass": int((~taken).sum()),
        "selected_defect": int(taken.sum()),
        "balance_dropped": dropped,
        "selected_pool_share_permille": round(1000 * len(taken) / len(is_def)) if len(is_def) else 0,
    }


def selection_cutoff(t_emb: np.ndarray, p_emb: np.ndarray, params: MineConfig,
                     weakness: np.ndarray | None = None) -> tuple[float, list[str]]:
    """The similarity cut-off the selection's one k-NN runs at: `params.min_similarity`, or the pool-calibrated
    one when `params.pool_share_pct` is set (then with the note saying so). Computed BEFORE the k-NN, so the
    search runs once, at the cut-off the selection uses."""
    import numpy as np

    from deft_aoi.mining.knn import l2_normalise, topk_cosine

    if params.pool_share_pct is None or not len(t_emb) or not len(p_emb):
        return params.min_similarity, []
    t_emb, p_emb = l2_normalise(t_emb), l2_normalise(p_emb)
    strategy = params.selection_strategy
    weights = (kpi_weights if strategy == "kpi" else target_weights)(weakness, len(t_emb))
    # `kpi` calibrates its cut-off on the targets that pull (weight > 0), so the share is of THEIR
    # neighbourhoods, not of every well-classified target's.
    active = weights > 0 if strategy == "kpi" and bool((weights > 0).any()) else np.ones(len(t_emb), bool)
    best, _ = topk_cosine(p_emb, t_emb[active], 1)
    cutoff = calibrated_cutoff(best[:, 0], params.pool_share_pct)
    return cutoff, [f"pool-calibrated cut-off {cutoff:.4f}: at most {params.pool_share_pct:g}% of the "
                    f"{len(p_emb)}-row pool lies at or above it"]


def select(
    t_emb: np.ndarray,
    p_emb: np.ndarray,
    params: MineConfig,
    *,
    knn: KnnResult,
    cutoff: float,
    pool_is_defect: np.ndarray,
    in_history: np.ndarray | None = None,
    weakness: np.ndarray | None = None,
) -> Selection:
    """The pool rows this iteration adds under `params.selection_strategy` (see the module doc), chosen from
    `knn`: the one k-NN, run at `cutoff` (selection_cutoff) on the same arrays. Without a strategy or guard
    (`params.reselects` False) the k-NN's rows are the selection as they are."""
    import numpy as np

    strategy = params.selection_strategy
    if strategy not in STRATEGIES or strategy == AUTO:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not params.reselects:
        # Today's contract behaviour: the engine's k-NN (whatever search it planned) is the selection.
        return Selection(knn=knn, cutoff=cutoff, counts=selection_counts(
            knn.mined["pool"].to_numpy(), pool_is_defect, budget=len(knn.mined)))
    from deft_aoi.mining.knn import l2_normalise

    t_emb, p_emb = l2_normalise(t_emb), l2_normalise(p_emb)
    hist = np.zeros(len(p_emb), dtype=bool) if in_history is None else np.asarray(in_history, dtype=bool)
    notes: list[str] = []
    weights = (kpi_weights if strategy == "kpi" else target_weights)(weakness, len(t_emb))
    budget = len(knn.mined)
    if strategy == "knn":
        picked = knn.mined.rename(columns={"matched_target": "target"})
    else:
        cand = _candidates(t_emb, p_emb, ~hist, cutoff, params.top_k_per_target * CANDIDATE_DEPTH)
        picked = (_pick_kpi(cand, weights, budget) if strategy == "kpi"
                  else _pick_diverse(cand, p_emb, weights, budget))
        picked["n_targets"] = cand.groupby("pool").size().reindex(picked["pool"]).to_numpy()
    picked, dropped = balance(picked.reset_index(drop=True), np.asarray(pool_is_defect, dtype=bool),
                              params.max_pass_ratio)
    mined = picked.rename(columns={"target": "matched_target"})
    mined = mined[["pool", "similarity", "matched_target", "n_targets"]].reset_index(drop=True)
    knn = replace(knn, per_target=knn.per_target.copy(), counts=dict(knn.counts))
    knn.mined = mined
    knn.per_target["kept_count"] = (mined.groupby("matched_target").size()
                                    .reindex(knn.per_target["target"], fill_value=0).to_numpy().astype(np.int64))
    knn.counts["after_dedup"] = len(mined)
    counts = selection_counts(mined["pool"].to_numpy(), pool_is_defect, budget=budget, dropped=dropped)
    if dropped:
        notes.append(f"class balance: dropped {dropped} PASS row(s) beyond {params.max_pass_ratio:g} PASS per defect")
    return Selection(knn=knn, cutoff=cutoff, counts=counts, notes=notes, strategy=strategy)
