"""Speed of the analysis maths against the naive loops they replace (CONTRACTS §6: reference
implementations sweep thresholds in O(N²) Python loops; ours must be vectorised).

    .venv/bin/python bench/analysis.py [--rows 1000000] [--ref-rows 100000] [--seed 0]

1. KPI: `threshold_sweep` + `evaluate_scores` on N scored rows vs a naive per-threshold loop (each
   threshold re-counts all N rows). Running the naive loop over all ~N distinct thresholds would take
   hours, so it runs on `--naive-thresholds` thresholds spread over the range and is extrapolated
   linearly (its cost per threshold is constant: one pass over N rows). A second, smaller case
   (`--exact-rows`) runs the naive loop over EVERY threshold, so one ratio is measured, not extrapolated.
   Every naive count is checked against the sweep.
2. Leakage: `analysis.leakage.key_leakage` (1M training rows × 100k validation rows) vs a naive loop that
   scans the reference keys for each training row (O(N·M), timed on a subsample and extrapolated) and
   vs a Python set-lookup loop over all rows (the best a plain loop can do). Results are checked equal.

Prints seconds and speed-up ratios; no assertions on time (numbers go to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from deft_aoi.analysis.kpi import evaluate_scores, threshold_sweep
from deft_aoi.config import KpiTarget
from deft_aoi.workspace.changenet_csv import LEAKAGE_KEY

DEFECT_LABELS = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of `repeat` runs (the minimum is the least noisy estimate) and the last result."""
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def kpi_frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A scored KPI set: ~30 % defects, overlapping beta-distributed scores, ties from 6-decimal rounding."""
    is_defect = rng.random(n) < 0.3
    scores = np.where(is_defect, rng.beta(5, 2, n), rng.beta(2, 5, n)).round(6)
    labels = np.where(is_defect, rng.choice(DEFECT_LABELS, n), "PASS")
    return pd.DataFrame({"label": labels, "siamese_score": scores})


def naive_counts(is_defect: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(tp, fp) per threshold by re-counting every row at each threshold: O(N) per threshold."""
    out = np.empty((len(thresholds), 2), dtype=np.int64)
    for i, t in enumerate(thresholds):
        flagged = scores > t
        out[i, 0] = np.count_nonzero(flagged & is_defect)
        out[i, 1] = np.count_nonzero(flagged & ~is_defect)
    return out


def naive_far_at_full_recall(is_defect: np.ndarray, scores: np.ndarray) -> float:
    """The reference approach end to end: try every threshold from the top, keep the first with recall 100 %."""
    n_def = int(is_defect.sum())
    n_pass = len(scores) - n_def
    for t in np.unique(scores)[::-1]:
        flagged = scores > t
        if np.count_nonzero(flagged & is_defect) == n_def:
            return 100.0 * np.count_nonzero(flagged & ~is_defect) / n_pass
    flagged = np.ones_like(is_defect)
    return 100.0 * np.count_nonzero(flagged & ~is_defect) / n_pass


def bench_kpi(rows: int, naive_thresholds: int, exact_rows: int, rng: np.random.Generator) -> list[str]:
    kpi = KpiTarget.parse("FAR<0.1%@recall=100%")
    df = kpi_frame(rows, rng)
    is_defect = (df["label"] != "PASS").to_numpy()
    scores = df["siamese_score"].to_numpy()

    t_sweep, sweep = timed(lambda: threshold_sweep(is_defect, scores), repeat=3)
    t_eval, report = timed(lambda: evaluate_scores(df, kpi), repeat=3)
    n_thr = len(sweep)

    picks = np.unique(np.linspace(0, n_thr - 1, naive_thresholds).astype(int))
    t_naive_part, counts = timed(lambda: naive_counts(is_defect, scores, sweep["threshold"].to_numpy()[picks]))
    expected = sweep[["tp", "fp"]].to_numpy()[picks]
    if not np.array_equal(counts, expected):
        raise SystemExit("KPI bench: naive counts disagree with threshold_sweep")
    t_naive_full = t_naive_part / len(picks) * n_thr

    small = kpi_frame(exact_rows, rng)
    s_def = (small["label"] != "PASS").to_numpy()
    s_scores = small["siamese_score"].to_numpy()
    t_small_sweep, small_report = timed(lambda: evaluate_scores(small, kpi), repeat=3)
    t_small_naive, naive_far = timed(lambda: naive_far_at_full_recall(s_def, s_scores))
    t_small_all, all_counts = timed(
        lambda: naive_counts(s_def, s_scores, threshold_sweep(s_def, s_scores)["threshold"].to_numpy())
    )
    if not np.isclose(naive_far, small_report.far_pct or 0.0) or not np.array_equal(
        all_counts, threshold_sweep(s_def, s_scores)[["tp", "fp"]].to_numpy()
    ):
        raise SystemExit("KPI bench: naive FAR@recall100 disagrees with evaluate_scores")

    return [
        f"KPI sweep, {rows:,} rows, {n_thr:,} distinct thresholds",
        f"  threshold_sweep (sort once)            {t_sweep:9.3f} s",
        f"  evaluate_scores (labels + sweep + KPI) {t_eval:9.3f} s   FAR@recall100 = {report.far_pct:.3f}% "
        f"at t = {report.threshold}",
        f"  naive per-threshold loop, {len(picks)} thresholds {t_naive_part:9.3f} s "
        f"-> extrapolated to all {n_thr:,}: {t_naive_full:,.0f} s",
        f"  speed-up sweep vs naive (extrapolated)  {t_naive_full / t_sweep:,.0f}x",
        f"  speed-up evaluate vs naive (extrapol.)  {t_naive_full / t_eval:,.0f}x",
        f"KPI exact comparison, {exact_rows:,} rows (naive run over every threshold, no extrapolation)",
        f"  evaluate_scores                        {t_small_sweep:9.4f} s",
        f"  naive FAR@recall100 (stop at first hit) {t_small_naive:9.4f} s   "
        f"ratio {t_small_naive / t_small_sweep:,.0f}x",
        f"  naive full sweep (all thresholds)      {t_small_all:9.4f} s   ratio {t_small_all / t_small_sweep:,.0f}x",
    ]


def leakage_frames(
    n_train: int, n_ref: int, n_leak: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation CSV frames with LEAKAGE_KEY columns; `n_leak` validation rows copied into train."""

    def frame(n: int, prefix: str) -> pd.DataFrame:
        ids = rng.permutation(n)
        pair = pd.Series(ids // 8).astype(str)
        return pd.DataFrame(
            {
                "input_path": prefix + pair + "/test",
                "golden_path": prefix + pair + "/golden",
                "label": np.where(rng.random(n) < 0.4, "PASS", "open"),
                "object_name": "c" + pd.Series(ids % 8).astype(str),
                "boardname": "board" + pd.Series(ids % 97).astype(str),
            }
        )

    train = frame(n_train, "t")
    ref = frame(n_ref, "v")
    where = rng.choice(n_train, n_leak, replace=False)
    donors = rng.choice(n_ref, n_leak, replace=False)
    train.iloc[where] = ref.iloc[donors].to_numpy()
    return train, ref


def bench_leakage(n_train: int, n_ref: int, naive_rows: int, rng: np.random.Generator) -> list[str]:
    try:
        from deft_aoi.analysis.leakage import key_leakage
    except ImportError:
        return ["Leakage: analysis/leakage.py (key_leakage) not available; skipped"]

    n_leak = max(1, n_ref // 100)
    train, ref = leakage_frames(n_train, n_ref, n_leak, rng)
    cols = list(LEAKAGE_KEY)

    t_vec, leaked = timed(lambda: key_leakage(train, ref), repeat=3)

    def set_loop() -> list[int]:
        # Row tuples are built inside the timing: key_leakage's time includes reading the columns too.
        seen = set(ref[cols].itertuples(index=False, name=None))
        return [i for i, key in enumerate(train[cols].itertuples(index=False, name=None)) if key in seen]

    t_set, set_hits = timed(set_loop)

    train_keys = list(train[cols].itertuples(index=False, name=None))
    ref_keys = list(ref[cols].itertuples(index=False, name=None))
    sample = train_keys[:naive_rows]

    def scan_loop() -> int:
        hits = 0
        for key in sample:
            for other in ref_keys:
                if key == other:
                    hits += 1
                    break
        return hits

    t_scan_part, _ = timed(scan_loop)
    t_scan_full = t_scan_part / len(sample) * len(train_keys)

    if sorted(leaked.index.tolist()) != set_hits:
        raise SystemExit("leakage bench: key_leakage disagrees with the set-lookup loop")

    return [
        f"Leakage by key, {n_train:,} train rows x {n_ref:,} validation rows ({len(leaked):,} leaked)",
        f"  key_leakage (hash prefilter + merge)    {t_vec:9.3f} s",
        f"  Python set-lookup loop, all rows        {t_set:9.3f} s   ratio {t_set / t_vec:,.1f}x",
        f"  naive scan loop, {len(sample):,} rows {t_scan_part:9.3f} s -> extrapolated to all: {t_scan_full:,.0f} s"
        f"   ratio {t_scan_full / t_vec:,.0f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="KPI rows and leakage training rows")
    parser.add_argument("--ref-rows", type=int, default=100_000, help="leakage reference (validation) rows")
    parser.add_argument("--naive-thresholds", type=int, default=200)
    parser.add_argument("--exact-rows", type=int, default=20_000)
    parser.add_argument("--naive-leak-rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    print(f"python {platform.python_version()} · numpy {np.__version__} · pandas {pd.__version__} · "
          f"{platform.machine()}")
    for line in bench_kpi(args.rows, args.naive_thresholds, args.exact_rows, rng):
        print(line)
    for line in bench_leakage(args.rows, args.ref_rows, args.naive_leak_rows, rng):
        print(line)


if __name__ == "__main__":
    main()
