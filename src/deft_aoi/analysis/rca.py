"""Root-cause analysis of one inference CSV (CONTRACTS §3.1, §6): find the weakest samples per label at the
KPI threshold and hand them to mining as `kpi_gaps.parquet`, one row per (sample, light).

weakness = score − threshold for PASS rows, threshold − score for NO_PASS rows: positive means the row is
misclassified at the threshold, and the larger it is the further the model is from getting it right (a
NO_PASS row exactly at the threshold is also missed, since only scores above it are called NO_PASS).

Target defects are ranked by FN count, then FP rate (only PASS rows can be false alarms, so PASS ranks by
it and defect labels score 0 there), then by the mean weakness of their kept samples, then by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.analysis.kpi import SCORE_COLUMN, KpiReport, display_threshold, evaluate_scores, support_note
from deft_aoi.config import KpiTarget
from deft_aoi.errors import InputError
from deft_aoi.workspace.catalog import name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

GAP_LEAD_COLUMNS: tuple[str, ...] = ("filepath", "golden_filepath", "label", SCORE_COLUMN, "weakness", "light")
UNREACHABLE_FILE = name("rca.unreachable")


def gap_columns() -> list[str]:
    """kpi_gaps columns: the lead columns, then the other 13 ChangeNet columns in CSV order."""
    from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS

    return list(GAP_LEAD_COLUMNS) + [c for c in CHANGENET_COLUMNS if c not in GAP_LEAD_COLUMNS]


def empty_gaps() -> pd.DataFrame:
    import pandas as pd

    floats = {SCORE_COLUMN, "weakness"}
    return pd.DataFrame({c: pd.Series(dtype=float if c in floats else str) for c in gap_columns()})


@dataclass
class RcaResult:
    """What RCA found. `gaps` is empty and `reason` set when the KPI is unreachable."""

    gaps: pd.DataFrame
    report: KpiReport
    target_defects: list[str]
    breakdown: str
    unreachable: bool
    reason: str | None = None
    per_label: pd.DataFrame | None = field(default=None)


def weakness(is_pass: pd.Series, scores: pd.Series, threshold: float) -> pd.Series:
    """Signed distance to the wrong side of the threshold (positive = misclassified)."""
    return (scores - threshold).where(is_pass, threshold - scores)


def is_wrong(is_pass: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Misclassified at the threshold: weakness > 0, or a NO_PASS row exactly at it (only scores strictly
    above the threshold are called NO_PASS, so a PASS row there is correct). NaN weakness is never wrong."""
    wrong: np.ndarray = (weak > 0) | (~is_pass & (weak == 0))
    return wrong


def label_stats(labels: pd.Series, weak: pd.Series, kept: pd.Series) -> pd.DataFrame:
    """Per label: rows, fn (NO_PASS called PASS), fp (PASS called NO_PASS), error rate, kept weak samples.

    Only scores strictly above the threshold are called NO_PASS, so a NO_PASS row exactly at the threshold
    (weakness 0) is a miss while a PASS row there is correct.
    """
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import PASS_LABEL

    row_is_pass = (labels == PASS_LABEL).to_numpy()
    w = weak.to_numpy()
    wrong = is_wrong(row_is_pass, w)
    frame = pd.DataFrame({"label": labels.to_numpy(), "wrong": wrong, "kept": kept.to_numpy()})
    grouped = frame.groupby("label", sort=True)
    stats = pd.DataFrame({"rows": grouped.size(), "wrong": grouped["wrong"].sum(), "kept": grouped["kept"].sum()})
    is_pass = stats.index == PASS_LABEL
    stats["fn"] = stats["wrong"].where(~is_pass, 0).astype(int)
    stats["fp"] = stats["wrong"].where(is_pass, 0).astype(int)
    stats["error_rate_pct"] = 100.0 * stats["wrong"] / stats["rows"]
    stats["fp_rate_pct"] = (100.0 * stats["fp"] / stats["rows"]).where(is_pass, 0.0)
    kept_weak = pd.DataFrame({"label": labels.to_numpy(), "w": weak.to_numpy()})[kept.to_numpy()]
    stats["mean_kept_weakness"] = kept_weak.groupby("label")["w"].mean().reindex(stats.index)
    stats = stats.drop(columns="wrong").reset_index()
    return stats[["label", "rows", "fn", "fp", "error_rate_pct", "fp_rate_pct", "kept", "mean_kept_weakness"]]


def rank_targets(stats: pd.DataFrame) -> list[str]:
    """Labels with kept weak samples, most FN first, then highest FP rate (only PASS rows can be false
    alarms), then the most marginal kept samples (highest mean weakness), then by name for stability."""
    kept = stats[stats["kept"] > 0].copy()
    kept["_mw"] = kept["mean_kept_weakness"].fillna(float("-inf"))
    ordered = kept.sort_values(
        ["fn", "fp_rate_pct", "_mw", "label"], ascending=[False, False, False, True], kind="stable"
    )
    return [str(x) for x in ordered["label"]]


def _expand_lights(top: pd.DataFrame, images_dir: Path, lights: Sequence[str], image_ext: str) -> pd.DataFrame:
    """One gap row per (kept sample, light): absolute input and golden image paths of that light."""
    from deft_aoi.workspace.changenet_csv import image_paths

    paths = image_paths(top, images_dir, lights, image_ext)
    inputs = paths[paths["side"] == "input"][["row", "light", "path"]].rename(columns={"path": "filepath"})
    goldens = paths[paths["side"] == "golden"][["row", "light", "path"]].rename(columns={"path": "golden_filepath"})
    both = inputs.merge(goldens, on=["row", "light"], how="inner", validate="one_to_one")
    both["_light_order"] = both["light"].map({light: i for i, light in enumerate(lights)})
    gaps = both.merge(top, left_on="row", right_index=True, how="inner", validate="many_to_one")
    gaps = gaps.sort_values(["weakness", "row", "_light_order"], ascending=[False, True, True], kind="stable")
    return gaps[gap_columns()].reset_index(drop=True).astype({SCORE_COLUMN: float, "weakness": float})


def _breakdown_text(report: KpiReport, stats: pd.DataFrame | None, top_k: int, reason: str | None) -> str:
    lines = [f"KPI: {report.kpi_text}", f"rows: {report.n_rows} (PASS {report.n_pass}, NO_PASS {report.n_defect})"]
    if reason:
        lines.append(f"KPI unreachable: {reason}")
    else:
        far = "undefined (no PASS rows)" if report.far_pct is None else f"{report.far_pct:.4g}%"
        lines += [
            f"threshold (highest meeting recall ≥ constraint): {display_threshold(report.threshold)}"
            f" (exact {report.threshold!r})",
            f"FAR {far}, recall {report.recall_pct:.4g}%, TP {report.tp} FP {report.fp} "
            f"TN {report.tn} FN {report.fn}",
            f"KPI met: {'yes' if report.kpi_met else 'no'}",
        ]
    if report.support_note:
        lines.append(f"note: {report.support_note}")
    if stats is not None and len(stats):
        lines += ["", f"weak samples kept per label (top {top_k} by weakness; weakness > 0 = misclassified):"]
        header = f"{'label':<16}{'rows':>7}{'FN':>6}{'FP':>6}{'error %':>9}{'kept':>6}{'mean weakness':>15}"
        lines.append(header)
        for r in stats.to_dict("records"):  # a record's values are typed (Any), an itertuples row's are not
            mean = "—" if math.isnan(r["mean_kept_weakness"]) else f"{r['mean_kept_weakness']:+.4f}"
            lines.append(
                f"{r['label']!s:<16}{r['rows']:>7}{r['fn']:>6}{r['fp']:>6}{r['error_rate_pct']:>9.2f}{r['kept']:>6}"
                f"{mean:>15}"
            )
    return "\n".join(lines) + "\n"


def _unreachable(report: KpiReport, reason: str, top_k: int) -> RcaResult:
    return RcaResult(
        gaps=empty_gaps(),
        report=report,
        target_defects=[],
        breakdown=_breakdown_text(report, None, top_k, reason),
        unreachable=True,
        reason=reason,
    )


def _nan_report(df: pd.DataFrame, kpi: KpiTarget, reason: str) -> KpiReport:
    """A report for a frame whose scores cannot be evaluated: class counts only, no threshold."""
    from deft_aoi.workspace.changenet_csv import PASS_LABEL

    n_pass = int((df["label"] == PASS_LABEL).sum())
    return KpiReport(
        n_rows=len(df), n_pass=n_pass, n_defect=len(df) - n_pass, threshold=None, far_pct=None, recall_pct=None,
        precision_pct=None, tp=0, fp=0, tn=0, fn=0, reachable=False, best_f1_threshold=None, best_f1=None,
        min_supported_far_pct=300.0 / n_pass if n_pass else None, support_note=support_note(n_pass, kpi),
        kpi_met=False, kpi_text=kpi.text, unreachable_reason=reason,
    )


def run_rca(
    inference: pd.DataFrame,
    *,
    images_dir: Path,
    lights: Sequence[str],
    image_ext: str,
    kpi: KpiTarget,
    top_k_per_label: int = 50,
    source: str | Path | None = None,
) -> RcaResult:
    """RCA of an inference frame (14 ChangeNet columns + `siamese_score`).

    Unreachable KPI (no NO_PASS rows, or a score that is not a finite number) gives `unreachable=True`,
    the reason, and empty gaps; the engine hard-stops on it. Bad columns raise InputError.
    """
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import PASS_LABEL, conform

    where = source if source is not None else "<inference frame>"
    if top_k_per_label < 1:
        raise InputError(f"top_k_per_label must be ≥ 1, got {top_k_per_label}")
    if not lights:
        raise InputError("no lights given (dataset.classify.input_map of the spec)")
    if SCORE_COLUMN not in inference.columns:
        raise InputError(f"no '{SCORE_COLUMN}' column (not an inference CSV?)", file=where)
    df = conform(inference, file=where)
    if df.empty:
        raise InputError("inference has no rows", file=where)
    scores = pd.to_numeric(df[SCORE_COLUMN], errors="coerce").astype(float)
    bad = ~np.isfinite(scores.to_numpy())
    if bad.any():
        first = int(np.flatnonzero(bad)[0]) + 2
        reason = (
            f"'{SCORE_COLUMN}' is missing or not a finite number in {int(bad.sum())} row(s) of {where} "
            f"(first at row {first}); the KPI cannot be computed"
        )
        return _unreachable(_nan_report(df, kpi, reason), reason, top_k_per_label)
    df[SCORE_COLUMN] = scores
    report = evaluate_scores(df, kpi)
    if not report.reachable or report.threshold is None:
        reason = report.unreachable_reason or "no threshold meets the recall constraint"
        return _unreachable(report, reason, top_k_per_label)

    is_pass = df["label"] == PASS_LABEL
    df["weakness"] = weakness(is_pass, scores, report.threshold)
    # Weakest first; the original row order breaks ties so reruns pick the same rows.
    ranked = df.sort_values("weakness", ascending=False, kind="stable")
    top = ranked.groupby("label", sort=False).head(top_k_per_label)
    kept = pd.Series(df.index.isin(top.index), index=df.index)
    stats = label_stats(df["label"], df["weakness"], kept)
    gaps = _expand_lights(top, Path(images_dir), lights, image_ext)
    return RcaResult(
        gaps=gaps,
        report=report,
        target_defects=rank_targets(stats),
        breakdown=_breakdown_text(report, stats, top_k_per_label, None),
        unreachable=False,
        per_label=stats,
    )


def write_rca(result: RcaResult, out_dir: Path, *, root: Path) -> None:
    """kpi_gaps.parquet (image paths relative to the workspace `root`), threshold.txt (the exact float's repr,
    or `none`), metrics.json, weak_samples_breakdown.txt, and unreachable_kpi.txt only when the KPI is
    unreachable."""
    from deft_aoi.io_utils import atomic_write_text
    from deft_aoi.workspace.stored_paths import write_parquet

    out_dir = Path(out_dir)
    threshold = result.report.threshold
    write_parquet(result.gaps, out_dir / name("rca.kpi_gaps"), root)
    atomic_write_text(out_dir / name("rca.threshold"), f"{threshold!r}\n" if threshold is not None else "none\n")
    atomic_write_text(out_dir / name("rca.metrics"), result.report.model_dump_json(indent=2) + "\n")
    atomic_write_text(out_dir / name("rca.breakdown"), result.breakdown)
    unreachable = out_dir / UNREACHABLE_FILE
    if result.unreachable:
        text = (
            f"KPI unreachable: {result.reason}\n"
            f"KPI: {result.report.kpi_text}\n"
            f"rows: {result.report.n_rows} (PASS {result.report.n_pass}, NO_PASS {result.report.n_defect})\n"
            "No routing or mining runs for this iteration (CONTRACTS §5 hard stop).\n"
        )
        atomic_write_text(unreachable, text)
    else:
        unreachable.unlink(missing_ok=True)


def read_threshold(path: Path) -> float | None:
    """Read threshold.txt as written by write_rca; None for an unreachable KPI."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise InputError(f"threshold is not a number: {text!r}", file=path) from exc
