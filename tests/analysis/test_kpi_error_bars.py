"""The KPI with its error bars: bootstrap interval of FAR@recall, FAR@recall99, the defects setting the
threshold, and the "not significant" reading of two overlapping intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from deft_aoi.analysis.kpi import (
    allowed_misses,
    evaluate_scores,
    evaluate_sweep,
    far_at_recall,
    far_interval,
    intervals_overlap,
    significance_words,
    threshold_sweep,
)
from deft_aoi.config import KpiTarget


def _data(seed: int, n_pass: int = 250, n_defect: int = 323, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.beta(2, 5, n_pass), rng.beta(5, 2, n_defect)]
    if ties:
        scores = np.round(scores, 2)  # many exact ties across classes
    return np.r_[np.zeros(n_pass, bool), np.ones(n_defect, bool)], scores


@pytest.mark.parametrize("recall", [100.0, 99.0, 95.0, 50.0])
@pytest.mark.parametrize("ties", [False, True])
def test_closed_form_far_equals_the_sweep(recall: float, ties: bool) -> None:
    is_defect, scores = _data(3, ties=ties)
    report = evaluate_sweep(threshold_sweep(is_defect, scores), int((~is_defect).sum()), int(is_defect.sum()),
                            KpiTarget.parse(f"FAR<1%@recall={recall:g}%"))
    assert far_at_recall(is_defect, scores, recall) == pytest.approx(report.far_pct)


def test_allowed_misses() -> None:
    assert allowed_misses(323, 100.0) == 0
    assert allowed_misses(323, 99.0) == 3  # 320/323 = 99.07 % ≥ 99 %, 319/323 = 98.76 % is not
    assert allowed_misses(100, 99.0) == 1  # exactly 99 % counts (the sweep's tolerance)
    assert allowed_misses(1, 1.0) == 0  # never all of them


@pytest.mark.parametrize("recall", [100.0, 99.0])
def test_interval_matches_a_brute_force_bootstrap(recall: float) -> None:
    is_defect, scores = _data(1)
    rng = np.random.default_rng(123)
    defects, passes = scores[is_defect], scores[~is_defect]
    m = allowed_misses(defects.size, recall)
    brute = []
    for _ in range(3000):  # explicit resampling of both classes, FAR read by the closed form
        d = np.sort(rng.choice(defects, defects.size))
        p = rng.choice(passes, passes.size)
        brute.append(100.0 * (p >= d[m]).mean())
    low, high = np.percentile(brute, [2.5, 97.5])
    got = far_interval(is_defect, scores, recall, samples=3000, seed=5)
    assert got is not None
    # Two independent Monte-Carlo estimates of the same percentiles: equal within a few 0.4 pp steps.
    assert got[0] == pytest.approx(low, abs=2.5) and got[1] == pytest.approx(high, abs=2.5)
    point = far_at_recall(is_defect, scores, recall)
    assert point is not None and got[0] <= point + 1e-9 and got[1] >= got[0]


def test_interval_is_seeded_and_degenerate_when_classes_separate() -> None:
    is_defect, scores = _data(2)
    assert far_interval(is_defect, scores, 100.0, seed=0) == far_interval(is_defect, scores, 100.0, seed=0)
    assert far_interval(is_defect, scores, 100.0, seed=0) != far_interval(is_defect, scores, 100.0, seed=1)
    separate = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]
    labels = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    assert far_interval(labels, separate, 100.0) == (0.0, 0.0)
    assert far_interval(np.zeros(5, bool), np.arange(5.0), 100.0) is None  # no defects: undefined


def test_evaluate_scores_carries_the_error_bars_and_the_threshold_setters() -> None:
    df = pd.DataFrame({
        "input_path": [f"p{i}/test" for i in range(6)],
        "object_name": [f"c{i}" for i in range(6)],
        "label": ["PASS", "PASS", "PASS", "Open", "short", "open"],
        "siamese_score": [0.1, 0.5, 0.8, 0.9, 0.4, 0.6],
    })
    report = evaluate_scores(df, KpiTarget.parse("FAR<1%@recall=100%"))
    assert report.far_pct == pytest.approx(200 / 3)  # the PASS rows ≥ 0.4: 0.5 and 0.8
    assert report.far_ci_low_pct is not None and report.far_ci_high_pct is not None
    assert report.far_ci_low_pct <= report.far_ci_high_pct and report.bootstrap_samples > 0
    assert report.far_at_recall99_pct == pytest.approx(200 / 3)  # 3 defects: 99 % still means all of them
    setters = report.threshold_defects
    assert [s["row"] for s in setters] == [6, 7, 5]  # data rows (header = row 1), lowest score first
    assert setters[0] == {"row": 6, "label": "short", "score": 0.4, "input_path": "p4/test", "object_name": "c4"}


def test_unreachable_report_has_no_error_bars() -> None:
    df = pd.DataFrame({"label": ["PASS", "PASS"], "siamese_score": [0.1, 0.2]})
    report = evaluate_scores(df, KpiTarget.parse("FAR<1%@recall=100%"))
    assert not report.reachable and report.far_ci_low_pct is None and report.threshold_defects == []


def test_overlap_reads_as_not_significant() -> None:
    assert intervals_overlap((10.0, 30.0), (25.0, 40.0)) is True
    assert intervals_overlap((10.0, 20.0), (25.0, 40.0)) is False
    assert intervals_overlap((None, None), (25.0, 40.0)) is None
    assert (significance_words((10.0, 30.0), (25.0, 40.0)) or "").startswith("not significant")
    assert (significance_words((50.0, 60.0), (5.0, 20.0)) or "").startswith("significant")


def test_kpi_json_has_the_interval(tmp_path: Path) -> None:
    from deft_aoi.cli import kpi_cmd

    app = typer.Typer()
    kpi_cmd.register(app)

    @app.callback()
    def _root() -> None:
        pass

    is_defect, scores = _data(4, 40, 40)
    csv = tmp_path / "inference.csv"
    pd.DataFrame({"input_path": [f"p{i}/test" for i in range(80)], "golden_path": [f"p{i}/golden" for i in range(80)],
                  "label": np.where(is_defect, "open", "PASS"), "object_name": [f"c{i}" for i in range(80)],
                  "siamese_score": scores}).to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["kpi", str(csv), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["far_ci_low_pct"] <= data["far_ci_high_pct"] and data["bootstrap_samples"] == 2000
    assert data["far_at_recall99_pct"] is not None and data["threshold_defects"][0]["label"] == "open"
    text = CliRunner().invoke(app, ["kpi", str(csv)])
    assert text.exit_code == 0 and "95% CI" in text.output and "FAR@recall99" in text.output
