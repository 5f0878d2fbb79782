"""Suspect labels, confident-learning style: KPI and training rows whose label disagrees with BOTH the
model and the row's nearest neighbours. Nothing is relabelled; the rows are shown for a human to check.

Model disagreement uses confident learning's per-class thresholds (Northcutt, Jiang & Chuang, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021): t_defect = mean defect probability over
rows LABELLED defect, t_pass = mean PASS probability over rows labelled PASS. A PASS row is confidently a
defect when score ≥ t_defect; a defect row is confidently PASS when 1 − score ≥ t_pass. Per-class
thresholds, not 0.5, because the model's calibration differs per class (a weak model scores everything
low). Neighbour disagreement: most of the row's k nearest labelled rows (cosine, the built-in pair
embedding, the row itself excluded) carry the other class. Both must hold.

Training rows are scored by the model that was trained on them (one extra inference job, not k-fold
cross-validation, which would cost k trainings): in-sample scores lean towards the given label, so the
training-row check misses more than it invents. Thresholds are per set (a training row is judged against
the training set's own per-class means), because in-sample scores are calibrated differently.

Pure maths on arrays; the RCA stage embeds the images and writes the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

NEIGHBOURS = 5
# The `set` column of the suspect table (catalog "rca.suspects"): which CSV a suspect row's `row` numbers.
KPI_SET, TRAINING_SET = "KPI", "training"


def confident_disagreement(is_defect: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows the model confidently assigns to the other class (per-class thresholds, see module doc)."""
    import numpy as np

    defect = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    out = np.zeros(s.shape, dtype=bool)
    if defect.any():
        out |= ~defect & (s >= s[defect].mean())
    if (~defect).any():
        out |= defect & ((1.0 - s) >= (1.0 - s[~defect]).mean())
    return out


def neighbour_other_share(query: np.ndarray, reference: np.ndarray, reference_is_defect: np.ndarray,
                          query_is_defect: np.ndarray, *, k: int = NEIGHBOURS,
                          self_index: np.ndarray | None = None) -> np.ndarray:
    """Per query row, the share of its k nearest reference rows whose class differs from the row's own.
    `self_index[i]` = the query row's own index in `reference` (excluded), or -1."""
    import numpy as np

    from deft_aoi.mining.knn import l2_normalise, topk_cosine

    if len(reference) == 0 or len(query) == 0:
        return np.zeros(len(query))
    _, idx = topk_cosine(l2_normalise(query), l2_normalise(reference), k + 1)
    own = np.full(len(query), -1) if self_index is None else np.asarray(self_index)
    keep = idx != own[:, None]
    # Drop the row itself when found, else the farthest extra neighbour: exactly k remain per row.
    keep &= np.cumsum(keep, axis=1) <= k
    other = np.asarray(reference_is_defect, dtype=bool)[idx] != np.asarray(query_is_defect, dtype=bool)[:, None]
    share: np.ndarray = (other & keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)
    return share


def find_suspects(frame: pd.DataFrame, is_defect: np.ndarray, scores: np.ndarray, other_share: np.ndarray,
                  threshold_rows: list[int] | None = None, *, first_row: int = 2,
                  set_name: str = KPI_SET) -> pd.DataFrame:
    """The suspect rows of `frame` (one CSV's rows in order): `set` (KPI_SET | TRAINING_SET), `row` (data
    row, header = 1), its columns, `score`, `neighbour_other_share` and `sets_threshold` (the row is the
    lowest-scored KPI defect, the one the recall-100 % threshold hangs on; never a training row)."""
    import numpy as np

    model = confident_disagreement(is_defect, scores)
    neighbours = np.asarray(other_share) > 0.5
    mask = model & neighbours
    out = frame.loc[mask].copy()
    rows = np.flatnonzero(mask) + first_row
    out.insert(0, "row", rows)
    out.insert(0, "set", set_name)
    out["score"] = np.asarray(scores)[mask]
    out["neighbour_other_share"] = np.asarray(other_share)[mask]
    # The recall-100 % threshold is set by a KPI row: a training row number must not match it by accident.
    setters = set(threshold_rows or []) if set_name == KPI_SET else set()
    out["sets_threshold"] = [int(r) in setters for r in rows]
    return out.sort_values(["sets_threshold", "neighbour_other_share"], ascending=[False, False]).reset_index(drop=True)


def combine_suspects(kpi: pd.DataFrame, training: pd.DataFrame | None) -> pd.DataFrame:
    """One table: the KPI suspects (threshold setter first), then the training ones."""
    import pandas as pd

    if training is None or training.empty:
        return kpi.reset_index(drop=True)
    if kpi.empty:
        return training.reset_index(drop=True)
    return pd.concat([kpi, training], ignore_index=True)
