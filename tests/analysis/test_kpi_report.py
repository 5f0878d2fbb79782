"""evaluate_scores, select_best and write_evaluation: the KPI at the recall constraint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deft_aoi.analysis.kpi import KpiReport, evaluate_scores, select_best, write_evaluation
from deft_aoi.config import KpiTarget
from deft_aoi.errors import InputError

KPI = KpiTarget.parse("FAR<0.1%@recall=100%")


def frame(labels: list[str], scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"label": labels, "siamese_score": scores})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=20).map(lambda i: i / 20)),
        min_size=1,
        max_size=50,
    ).filter(lambda rows: any(d for d, _ in rows))
)
def test_far_at_recall_100_matches_the_definition(rows: list[tuple[bool, float]]) -> None:
    labels = ["open" if d else "PASS" for d, _ in rows]
    scores = [s for _, s in rows]
    report = evaluate_scores(frame(labels, scores), KPI)
    min_def = min(s for d, s in rows if d)
    below = [s for s in scores if s < min_def]
    # Documented choice: t = max(score < min defect score), else the float just below the minimum defect.
    expected_t = max(below) if below else math.nextafter(min_def, -math.inf)
    assert report.reachable
    assert report.threshold == expected_t
    pass_scores = [s for d, s in rows if not d]
    fp = sum(1 for s in pass_scores if s >= min_def)  # ties with the weakest defect are false alarms
    assert (report.tp, report.fn, report.fp, report.tn) == (sum(d for d, _ in rows), 0, fp, len(pass_scores) - fp)
    assert report.recall_pct == pytest.approx(100.0)
    if pass_scores:
        assert report.far_pct == pytest.approx(100.0 * fp / len(pass_scores))
    else:
        assert report.far_pct is None
    # Every defect is strictly above the threshold: the recall really is 100 %.
    assert all(s > report.threshold for d, s in rows if d)


def test_pass_tied_with_weakest_defect_is_a_false_alarm() -> None:
    report = evaluate_scores(frame(["PASS", "PASS", "short", "short"], [0.1, 0.6, 0.6, 0.9]), KPI)
    assert report.threshold == 0.1
    assert (report.tp, report.fp, report.tn, report.fn) == (2, 1, 1, 0)
    assert report.far_pct == pytest.approx(50.0)
    assert report.precision_pct == pytest.approx(200 / 3)


def test_threshold_below_every_score_when_the_weakest_defect_is_the_minimum() -> None:
    report = evaluate_scores(frame(["open", "PASS"], [0.2, 0.8]), KPI)
    assert report.threshold is not None and report.threshold < 0.2
    assert report.threshold == math.nextafter(0.2, -math.inf)
    assert report.far_pct == 100.0


def test_recall_constraint_below_100_picks_the_highest_threshold_meeting_it() -> None:
    kpi = KpiTarget.parse("FAR<5%@recall=50%")
    df = frame(["open", "open", "open", "open", "PASS", "PASS"], [0.9, 0.8, 0.3, 0.2, 0.5, 0.1])
    report = evaluate_scores(df, kpi)
    assert report.threshold == 0.5  # 0.9 and 0.8 flagged: recall 50 %, no false alarm
    assert (report.tp, report.fn, report.fp) == (2, 2, 0)
    assert report.kpi_met


def test_kpi_met_and_labels_are_normalised() -> None:
    df = frame([" pass ", "Pass", "OPEN", "Short"], [0.1, 0.2, 0.7, 0.9])
    report = evaluate_scores(df, KpiTarget.parse("FAR<1%@recall=100%"))
    assert (report.n_pass, report.n_defect) == (2, 2)
    assert report.far_pct == 0.0 and report.kpi_met
    assert report.best_f1 == pytest.approx(1.0)
    assert report.best_f1_threshold is not None and 0.2 <= report.best_f1_threshold < 0.7


def test_all_pass_is_unreachable_with_a_reason() -> None:
    report = evaluate_scores(frame(["PASS"] * 3, [0.1, 0.5, 0.9]), KPI)
    assert not report.reachable and not report.kpi_met
    assert report.threshold is None and report.recall_pct is None and report.far_pct is None
    assert report.unreachable_reason and "NO_PASS" in report.unreachable_reason
    assert report.best_f1 is None


def test_all_defect_has_undefined_far_and_fails_the_kpi() -> None:
    report = evaluate_scores(frame(["open", "short"], [0.4, 0.6]), KPI)
    assert report.reachable and report.far_pct is None and report.recall_pct == 100.0
    assert not report.kpi_met
    assert report.min_supported_far_pct is None
    assert report.support_note and "no PASS" in report.support_note


def test_nan_score_is_a_clear_error_naming_the_row() -> None:
    with pytest.raises(InputError) as err:
        evaluate_scores(frame(["PASS", "open", "PASS"], [0.1, float("nan"), 0.3]), KPI)
    assert "row 3" in err.value.render()
    assert "siamese_score" in err.value.render()


def test_non_numeric_score_and_missing_column_are_errors() -> None:
    with pytest.raises(InputError, match="siamese_score"):
        evaluate_scores(frame(["PASS", "open"], ["0.1", "high"]), KPI)  # type: ignore[list-item]
    with pytest.raises(InputError, match="siamese_score"):
        evaluate_scores(pd.DataFrame({"label": ["PASS"]}), KPI)


@pytest.mark.parametrize(("n_pass", "has_note"), [(250, True), (2999, True), (3000, False), (5000, False)])
def test_support_note_uses_three_over_n(n_pass: int, has_note: bool) -> None:
    labels = ["PASS"] * n_pass + ["open"]
    scores = [*np.linspace(0.0, 0.5, n_pass).tolist(), 0.9]
    report = evaluate_scores(frame(labels, scores), KPI)
    assert report.min_supported_far_pct == pytest.approx(300.0 / n_pass)
    assert (report.support_note is not None) == has_note
    if has_note:
        assert str(n_pass) in report.support_note and "3000" in report.support_note


def test_report_is_json_serialisable_without_nan() -> None:
    report = evaluate_scores(frame(["open"], [0.5]), KPI)
    text = report.model_dump_json()
    assert "NaN" not in text
    assert KpiReport.model_validate_json(text) == report


def test_select_best_lowest_far_among_those_meeting_the_constraint() -> None:
    candidates = [
        ("baseline", 40.0, 100.0),
        ("iter1", 5.0, 90.0),  # lower FAR but misses defects
        ("iter2", 12.0, 100.0),
        ("iter3", None, None),
        ("iter4", 12.0, 100.0),  # tie: the earlier one wins
    ]
    assert select_best(candidates, KPI) == "iter2"
    assert select_best([("a", 1.0, 99.0)], KPI) is None
    assert select_best([], KPI) is None
    assert select_best(candidates, KpiTarget.parse("FAR<1%@recall=90%")) == "iter1"


def test_write_evaluation_files(tmp_path: Path) -> None:
    df = frame(["PASS", "PASS", "PASS", "open", "short"], [0.05, 0.4, 0.7, 0.6, 0.95])
    report = evaluate_scores(df, KPI)
    write_evaluation(report, df, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "metrics.csv", "confusion.json", "score_histogram.svg", "far_vs_recall.svg"} <= names
    assert KpiReport.model_validate_json((tmp_path / "metrics.json").read_text()) == report
    confusion = json.loads((tmp_path / "confusion.json").read_text())
    assert confusion["matrix"] == [[report.tn, report.fp], [report.fn, report.tp]] == [[2, 1], [0, 2]]
    sweep = pd.read_csv(tmp_path / "metrics.csv")
    assert len(sweep) == 6  # five distinct scores + one below them all
    assert float(report.threshold) in set(sweep["threshold"])
    for svg in ("score_histogram.svg", "far_vs_recall.svg"):
        root = ElementTree.fromstring((tmp_path / svg).read_text())
        assert root.tag.endswith("svg")
