"""KPI maths (CONTRACTS §6): one vectorised threshold sweep, FAR at the recall constraint, best F1.

Convention: `siamese_score` is the probability of a defect and a row is predicted NO_PASS iff
score > threshold. Positive class = NO_PASS (any label other than `PASS`).

Threshold candidates are every distinct score (a threshold equal to a score excludes that score from
the positives) plus one value just below the minimum score (`np.nextafter(min, -inf)`, everything
flagged). Between two neighbouring candidates the confusion matrix does not change, so these are all the
operating points there are.

FAR at recall = 100 %: the HIGHEST candidate with no missed defect. That is the largest score strictly
below the minimum defect score when one exists (t = max(score < min_defect)), otherwise the float just
below the minimum defect score. A PASS row scoring exactly the minimum defect score is therefore a false
alarm (ties go to the defect side). The same rule generalises to any recall floor: the highest candidate
whose recall meets it, which is also the one with the lowest FAR since FAR only falls as t rises.

Thresholds are kept exact (threshold.txt and JSON carry the full float); `display_threshold` only
clips and rounds for humans.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from deft_aoi.config import KpiTarget
from deft_aoi.errors import InputError
from deft_aoi.workspace.changenet_csv import is_defect_labels

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SCORE_COLUMN = "siamese_score"
LABEL_COLUMN = "label"
SWEEP_COLUMNS: tuple[str, ...] = ("threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "far")
# 95 % upper bound of a binomial rate with zero events in n trials is ≈ 3/n ("rule of three"), as a %.
RULE_OF_THREE_PCT = 300.0
# Recall is a ratio of integers; compare with a tolerance so 100 * k/k never fails on rounding.
_RECALL_EPS = 1e-9
# The KPI's error bars: a seeded, class-stratified bootstrap over the KPI rows (see `far_interval`).
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL_PCT = 95.0
# FAR@recall100 hangs on the single lowest-scored defect; FAR at this recall is the steadier second figure.
SECONDARY_RECALL_PCT = 99.0
# How many of the lowest-scored defects are named as "setting the threshold".
N_THRESHOLD_DEFECTS = 3


class KpiReport(BaseModel):
    """The KPI of one inference CSV. Percentages are 0-100; `best_f1` is 0-1.

    When `reachable` is False no threshold is chosen: `threshold` and the rates are None and the
    confusion counts are 0; `unreachable_reason` says why.
    """

    model_config = ConfigDict(frozen=True)

    n_rows: int
    n_pass: int
    n_defect: int
    threshold: float | None
    far_pct: float | None
    recall_pct: float | None
    precision_pct: float | None
    tp: int
    fp: int
    tn: int
    fn: int
    reachable: bool
    best_f1_threshold: float | None
    best_f1: float | None
    min_supported_far_pct: float | None
    support_note: str | None
    kpi_met: bool
    kpi_text: str
    unreachable_reason: str | None = None
    # Error bars (None when FAR is undefined): bootstrap interval of FAR at the KPI's recall floor.
    far_ci_low_pct: float | None = None
    far_ci_high_pct: float | None = None
    ci_level_pct: float = CI_LEVEL_PCT
    bootstrap_samples: int = 0
    bootstrap_seed: int = BOOTSTRAP_SEED
    far_at_recall99_pct: float | None = None
    # The lowest-scored defects, lowest first: the first one sets the recall-100 % threshold.
    threshold_defects: list[dict[str, object]] = Field(default_factory=list)


def display_threshold(value: float | None) -> str:
    """A threshold for humans: clipped to the score range [0, 1] and rounded (the stored value is exact)."""
    if value is None:
        return "—"
    return f"{min(max(value, 0.0), 1.0):.4g}"


def check_scores(scores: np.ndarray, *, file: str | Path | None = None, first_row: int = 2) -> np.ndarray:
    """Scores as float64; NaN/inf rejected naming the first bad data row (header = row 1)."""
    import numpy as np

    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"'{SCORE_COLUMN}' holds values that are not numbers: {exc}", file=file) from exc
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"'{SCORE_COLUMN}' is NaN, missing or infinite in {int(bad.sum())} row(s); "
            f"first at data row {first + first_row}",
            file=file,
            row=first + first_row if file is not None else None,
            hint="every KPI row needs a finite score; re-run inference on the full CSV",
        )
    return values


def threshold_sweep(is_defect: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Confusion counts and rates at every operating point, thresholds ascending. O(N log N).

    Columns: threshold, tp, fp, tn, fn (ints), precision, recall, far (percent), f1 (0-1).
    Undefined rates are NaN: recall with no defects, FAR with no PASS rows, precision when nothing is
    flagged; F1 = 2TP / (2TP + FP + FN) is NaN only when there are no defects and nothing is flagged.
    """
    import numpy as np
    import pandas as pd

    defect = np.asarray(is_defect, dtype=bool)
    values = check_scores(scores)
    if defect.shape != values.shape or defect.ndim != 1:
        raise ValueError(f"is_defect {defect.shape} and scores {values.shape} must be 1-D of equal length")
    if values.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("threshold", *SWEEP_COLUMNS[5:]) else np.int64)
                             for c in SWEEP_COLUMNS})

    # Two plain sorts instead of an argsort carrying labels: sorting floats is several times faster than
    # sorting indices. `ordered` gives the distinct thresholds and how many rows lie at or below each;
    # the sorted defect scores give, by binary search, how many defects lie above each.
    ordered = np.sort(values)
    last = np.r_[ordered[1:] != ordered[:-1], True]
    distinct = ordered[last]
    n_above = values.size - (np.flatnonzero(last) + 1)
    defect_sorted = np.sort(values[defect])
    n_pos = int(defect_sorted.size)
    n_neg = int(values.size) - n_pos

    # Ascending thresholds read naturally in a CSV; the first flags every row.
    thresholds = np.r_[np.nextafter(distinct[0], -np.inf), distinct]
    tp = np.r_[n_pos, n_pos - np.searchsorted(defect_sorted, distinct, side="right")].astype(np.int64)
    fp = np.r_[n_neg, n_above - tp[1:]].astype(np.int64)
    fn = n_pos - tp
    tn = n_neg - fp
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
            "precision": _pct(tp, tp + fp),
            "recall": _pct(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "far": _pct(fp, fp + tn),
        },
        copy=False,  # the arrays are fresh; skipping pandas' block consolidation saves a full copy
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    import numpy as np

    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _pct(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return 100.0 * _ratio(num, den)


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)} for the KPI; found: {', '.join(map(str, df.columns))}"
        )


def frame_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(is_defect, scores) of a frame with `label` and `siamese_score`; scores must be finite."""
    import pandas as pd

    _require_columns(df, (LABEL_COLUMN, SCORE_COLUMN))
    scores = pd.to_numeric(df[SCORE_COLUMN], errors="coerce").to_numpy(dtype=float)
    return is_defect_labels(df[LABEL_COLUMN]), check_scores(scores)


def _row_at(sweep: pd.DataFrame, index: int) -> dict[str, float]:
    return {c: float(sweep[c].to_numpy()[index]) for c in SWEEP_COLUMNS}


def _optional(value: float) -> float | None:
    import math

    return None if math.isnan(value) else float(value)


def support_note(n_pass: int, kpi: KpiTarget) -> str | None:
    """Say when the KPI set has too few PASS rows to support the FAR target (rule of three)."""
    if n_pass == 0:
        return "FAR is undefined: the KPI set has no PASS rows"
    floor = RULE_OF_THREE_PCT / n_pass
    if kpi.target_pct >= floor:
        return None
    needed = int(-(-RULE_OF_THREE_PCT // kpi.target_pct)) if kpi.target_pct > 0 else None
    need = f"at least {needed} PASS rows" if needed else "an unbounded number of PASS rows (target 0 %)"
    return (
        f"with {n_pass} PASS rows the smallest FAR this KPI set can support is about {floor:.3g}% "
        f"(3/n, the 95% upper bound at zero false alarms); the target {kpi.target_pct:g}% needs {need}"
    )


def evaluate_sweep(sweep: pd.DataFrame, n_pass: int, n_defect: int, kpi: KpiTarget) -> KpiReport:
    """The KPI report from a sweep (see `threshold_sweep`) and the class counts."""
    import numpy as np

    n_rows = n_pass + n_defect
    min_far = RULE_OF_THREE_PCT / n_pass if n_pass else None
    note = support_note(n_pass, kpi)
    reason: str | None = None
    if n_rows == 0:
        reason = "the KPI set has no rows"
    elif n_defect == 0:
        reason = "recall is undefined: the KPI set has no NO_PASS (defect) rows, so no threshold can be chosen"

    best_f1: float | None = None
    best_f1_t: float | None = None
    if n_defect and len(sweep):
        f1 = sweep["f1"].to_numpy()
        # Highest threshold among equal F1s: same F1 with fewer false alarms.
        idx = len(f1) - 1 - int(np.nanargmax(f1[::-1]))
        best_f1, best_f1_t = float(f1[idx]), float(sweep["threshold"].to_numpy()[idx])

    chosen: dict[str, float] | None = None
    if reason is None:
        meets = sweep["recall"].to_numpy() + _RECALL_EPS >= kpi.constraint_pct
        if meets.any():
            chosen = _row_at(sweep, int(np.flatnonzero(meets)[-1]))
        else:  # cannot happen with defects present (the lowest threshold flags all), kept for safety
            reason = f"no threshold reaches recall ≥ {kpi.constraint_pct:g}%"

    if chosen is None:
        return KpiReport(
            n_rows=n_rows, n_pass=n_pass, n_defect=n_defect, threshold=None, far_pct=None, recall_pct=None,
            precision_pct=None, tp=0, fp=0, tn=0, fn=0, reachable=False, best_f1_threshold=best_f1_t,
            best_f1=best_f1, min_supported_far_pct=min_far, support_note=note, kpi_met=False, kpi_text=kpi.text,
            unreachable_reason=reason,
        )
    far = _optional(chosen["far"])
    recall = _optional(chosen["recall"])
    return KpiReport(
        n_rows=n_rows,
        n_pass=n_pass,
        n_defect=n_defect,
        threshold=float(chosen["threshold"]),
        far_pct=far,
        recall_pct=recall,
        precision_pct=_optional(chosen["precision"]),
        tp=int(chosen["tp"]),
        fp=int(chosen["fp"]),
        tn=int(chosen["tn"]),
        fn=int(chosen["fn"]),
        reachable=True,
        best_f1_threshold=best_f1_t,
        best_f1=best_f1,
        min_supported_far_pct=min_far,
        support_note=note,
        kpi_met=kpi.is_met(far, recall),
        kpi_text=kpi.text,
        unreachable_reason=None,
    )


def allowed_misses(n_defect: int, recall_pct: float) -> int:
    """Most defects a threshold may miss and still meet `recall_pct` (same tolerance as the sweep)."""
    import math

    return max(0, min(n_defect - 1, math.floor((n_defect * (100.0 - recall_pct) + _RECALL_EPS * n_defect) / 100.0)))


def far_at_recall(is_defect: np.ndarray, scores: np.ndarray, recall_pct: float) -> float | None:
    """FAR (%) at the highest threshold meeting `recall_pct`, in closed form (None without PASS or defects).

    With m = allowed misses and d = the (m+1)-th lowest defect score, the chosen threshold is the largest
    score below d, so the false alarms are exactly the PASS rows scoring ≥ d (ties go to the defect side),
    the same operating point `threshold_sweep` + `evaluate_sweep` pick.
    """
    import numpy as np

    defect = np.asarray(is_defect, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    d_scores, p_scores = np.sort(values[defect]), values[~defect]
    if d_scores.size == 0 or p_scores.size == 0:
        return None
    cut = d_scores[allowed_misses(d_scores.size, recall_pct)]
    far_pct: float = 100.0 * float((p_scores >= cut).sum()) / p_scores.size
    return far_pct


def far_interval(
    is_defect: np.ndarray,
    scores: np.ndarray,
    recall_pct: float,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level_pct: float = CI_LEVEL_PCT,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of FAR at `recall_pct`, resampling PASS and defect rows separately
    (stratified: every resample keeps the KPI set's class counts, so FAR and recall stay defined).

    Vectorised and exact without materialising resamples (O(samples · log N), so a 1M-row KPI set costs
    milliseconds): FAR of a resample depends only on (a) the (m+1)-th lowest resampled defect score — the
    (m+1)-th smallest of n uniform draws is Beta(m+1, n−m), and flooring it to an index of the sorted
    defect scores is exactly the (m+1)-th smallest index drawn with replacement — and (b) how many of the
    n_pass resampled PASS rows score ≥ that cut, which is Binomial(n_pass, share of PASS rows ≥ cut).
    """
    import numpy as np

    defect = np.asarray(is_defect, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    d_sorted, p_sorted = np.sort(values[defect]), np.sort(values[~defect])
    n_def, n_pass = d_sorted.size, p_sorted.size
    if n_def == 0 or n_pass == 0 or samples < 1:
        return None
    m = allowed_misses(n_def, recall_pct)
    rng = np.random.default_rng(seed)
    u = rng.beta(m + 1, n_def - m, size=samples)
    cut = d_sorted[np.minimum((u * n_def).astype(np.int64), n_def - 1)]
    share = (n_pass - np.searchsorted(p_sorted, cut, side="left")) / n_pass
    far = 100.0 * rng.binomial(n_pass, share) / n_pass
    tail = (100.0 - level_pct) / 2.0
    low, high = np.percentile(far, [tail, 100.0 - tail])
    return float(low), float(high)


def threshold_defects(df: pd.DataFrame, is_defect: np.ndarray, scores: np.ndarray,
                      n: int = N_THRESHOLD_DEFECTS, *, first_row: int = 2) -> list[dict[str, object]]:
    """The `n` lowest-scored defect rows, lowest first: label, score, data row (header = row 1) and the
    sample's identity columns when present. At recall 100 % the first one sets the threshold."""
    import numpy as np

    idx = np.flatnonzero(np.asarray(is_defect, dtype=bool))
    order = idx[np.argsort(np.asarray(scores)[idx], kind="stable")][:n]
    out: list[dict[str, object]] = []
    for i in order:
        item: dict[str, object] = {"row": int(i) + first_row, "label": str(df[LABEL_COLUMN].iat[i]).strip().lower(),
                                   "score": float(scores[i])}
        for column in ("input_path", "object_name"):
            if column in df.columns:
                item[column] = str(df[column].iat[i])
        out.append(item)
    return out


def evaluate_scores(df: pd.DataFrame, kpi: KpiTarget, *, bootstrap_seed: int = BOOTSTRAP_SEED,
                    bootstrap_samples: int = BOOTSTRAP_SAMPLES) -> KpiReport:
    """KPI of a frame with `label` and `siamese_score` (NaN scores raise InputError naming the row), with
    its bootstrap interval, FAR at recall 99 % and the defects that set the threshold."""
    is_defect, scores = frame_scores(df)
    sweep = threshold_sweep(is_defect, scores)
    n_defect = int(is_defect.sum())
    report = evaluate_sweep(sweep, len(is_defect) - n_defect, n_defect, kpi)
    if not report.reachable:
        return report
    interval = far_interval(is_defect, scores, kpi.constraint_pct, samples=bootstrap_samples, seed=bootstrap_seed)
    return report.model_copy(update={
        "far_ci_low_pct": None if interval is None else interval[0],
        "far_ci_high_pct": None if interval is None else interval[1],
        "bootstrap_samples": 0 if interval is None else bootstrap_samples,
        "bootstrap_seed": bootstrap_seed,
        "far_at_recall99_pct": far_at_recall(is_defect, scores, SECONDARY_RECALL_PCT),
        "threshold_defects": threshold_defects(df, is_defect, scores),
    })


Interval = tuple[float | None, float | None]


def intervals_overlap(a: Interval, b: Interval) -> bool | None:
    """Whether two FAR intervals (low, high) overlap; None when either is unknown. Overlap = the change
    between the two is not significant at the intervals' level (a conservative reading)."""
    if None in a or None in b:
        return None
    return not (a[1] < b[0] or b[1] < a[0])  # type: ignore[operator]


def significance_words(before: Interval, after: Interval) -> str | None:
    """"not significant" / "significant" for a FAR change between two intervals; None when unknown."""
    overlap = intervals_overlap(before, after)
    if overlap is None:
        return None
    level = f"{CI_LEVEL_PCT:g} %"
    return (f"not significant (the {level} intervals overlap)" if overlap
            else f"significant (the {level} intervals do not overlap)")


def confusion_dict(report: KpiReport) -> dict[str, object]:
    """Confusion matrix at the KPI threshold; rows = actual, columns = predicted."""
    return {
        "threshold": report.threshold,
        "positive_class": "NO_PASS",
        "rule": "predict NO_PASS iff siamese_score > threshold",
        "labels": ["PASS", "NO_PASS"],
        "matrix": [[report.tn, report.fp], [report.fn, report.tp]],
        "tp": report.tp,
        "fp": report.fp,
        "tn": report.tn,
        "fn": report.fn,
    }


def write_evaluation(report: KpiReport, df: pd.DataFrame, out_dir: Path) -> None:
    """metrics.json, metrics.csv (the sweep), confusion.json, score_histogram.svg, far_vs_recall.svg."""
    from deft_aoi.analysis.plots import far_recall_svg, score_histogram_svg
    from deft_aoi.io_utils import atomic_write_csv, atomic_write_text
    from deft_aoi.workspace.catalog import name

    out_dir = Path(out_dir)
    is_defect, scores = frame_scores(df)
    sweep = threshold_sweep(is_defect, scores)
    atomic_write_text(out_dir / name("evaluate.metrics"), report.model_dump_json(indent=2) + "\n")
    atomic_write_csv(sweep, out_dir / name("evaluate.sweep"))
    atomic_write_text(out_dir / name("evaluate.confusion"), json.dumps(confusion_dict(report), indent=2) + "\n")
    atomic_write_text(out_dir / name("evaluate.histogram"), score_histogram_svg(df, report.threshold))
    atomic_write_text(out_dir / name("evaluate.far_recall"), far_recall_svg(sweep))


def select_best(candidates: Sequence[tuple[str, float | None, float | None]], kpi: KpiTarget) -> str | None:
    """Name of the candidate (name, far_pct, recall_pct) with the lowest FAR among those meeting the recall
    constraint; the earliest wins a tie; None when no candidate meets it or has a FAR."""
    best: tuple[float, str] | None = None
    for name, far, recall in candidates:
        if far is None or recall is None or recall + _RECALL_EPS < kpi.constraint_pct:
            continue
        if best is None or far < best[0]:
            best = (far, name)
    return best[1] if best else None
