from __future__ import annotations

import pandas as pd
import pytest

from deft_aoi.config import KpiTarget
from deft_aoi.loop.results import Counts
from deft_aoi.loop.state import (
    LogEntry,
    MiningFilterConfig,
    RunConfigRecord,
    RunState,
    StageRecord,
)
from deft_aoi.report import sections

TARGET = KpiTarget.parse("FAR<0.1%@recall=100%")


def _state() -> RunState:
    cfg = RunConfigRecord(
        specs_file="s", train_csv="t", validation_csv="v", kpi_csv="k", images_dir="i", train_container="c",
        backend="fake", num_gpus=1, batch_size=8, num_epochs=1, seed=0, top_k_per_label=50,
        mining_engine="builtin", encoder="builtin",
        mining_filter=MiningFilterConfig(top_k_per_target=5, min_similarity=0.9),
    )
    return RunState(run_id="run_x", started_at="t", workspace="/w", kpi_target=TARGET.text, results_dir="/r",
                    max_iterations=2, config=cfg)


@pytest.mark.parametrize(
    ("far", "recall", "expected"),
    [
        (0.5, 100.0, "0.4 pp above target"),
        (0.05, 100.0, "target met: 0.05 pp below target"),
        (0.1, 100.0, "at the target value (the KPI asks for strictly below)"),
        (0.0, 98.5, "recall 98.5 % is below the required 100 %"),
        (None, None, None),
    ],
)
def test_status_words(far: float | None, recall: float | None, expected: str | None) -> None:
    assert sections.status_words(far, recall, TARGET) == expected


def test_status_words_unreachable() -> None:
    assert sections.status_words(None, None, TARGET, unreachable="no NO_PASS rows").startswith("KPI not reachable")


def test_iteration_rows_far_change_and_duration() -> None:
    state = _state()
    base = state.iteration("baseline")
    base.far_pct, base.duration_sec = 10.0, 0.0
    base.stages["train"] = StageRecord(status="complete", started_at="t", duration_sec=4.0)
    base.stages["inference"] = StageRecord(status="complete", started_at="t", duration_sec=1.5)
    it1 = state.iteration("iter1")
    it1.far_pct, it1.duration_sec = 7.5, 30.0
    it1.counts = Counts(training_rows=100, delta=12)
    state.best_iteration = "iter1"
    rows = sections.iteration_rows(state)
    assert [r.name for r in rows] == ["baseline", "iter1"]
    assert rows[0].far_change_pp is None and rows[0].duration_sec == 5.5
    assert rows[1].far_change_pp == pytest.approx(-2.5)
    assert rows[1].training_rows == 100 and rows[1].delta == 12 and rows[1].total is None
    assert rows[1].is_best and not rows[0].is_best


def test_headline_iteration_prefers_best_then_latest_measured() -> None:
    state = _state()
    assert sections.headline_iteration(state) is None
    state.iteration("baseline").far_pct = 3.0
    state.iteration("iter1")  # started, not measured
    assert sections.headline_iteration(state).name == "baseline"  # type: ignore[union-attr]
    state.iteration("iter1").far_pct = 2.0
    assert sections.headline_iteration(state).name == "iter1"  # type: ignore[union-attr]
    state.best_iteration = "baseline"
    assert sections.headline_iteration(state).name == "baseline"  # type: ignore[union-attr]


def test_label_scores_and_confusion() -> None:
    df = pd.DataFrame({"label": ["PASS", "pass ", "PASS", "Short", "short", "open"],
                       "siamese_score": [0.1, 0.6, 0.3, 0.7, 0.2, 0.9]})
    rows = {r.label: r for r in sections.label_scores(df, 0.5)}
    assert list(rows) == ["PASS", "open", "short"]
    assert rows["PASS"].n == 3 and rows["PASS"].wrong == 1 and rows["PASS"].max_score == 0.6
    assert rows["short"].wrong == 1 and rows["short"].median_score == pytest.approx(0.45)
    c = sections.confusion_from_scores(df, 0.5)
    assert (c.tn, c.fp, c.fn, c.tp) == (2, 1, 1, 2)
    assert sections.label_scores(df, None)[0].wrong is None


def test_defect_and_scores_names_the_bad_row() -> None:
    df = pd.DataFrame({"label": ["PASS", "short", "PASS"], "siamese_score": ["0.1", "x", "0.2"]})
    assert sections.defect_and_scores(df) == (
        "'siamese_score' is missing or not a finite number in 1 row(s); first at row 3"
    )
    good = sections.defect_and_scores(df.assign(siamese_score=[0.1, 0.9, 0.2]))
    assert not isinstance(good, str)
    assert good[0].tolist() == [False, True, False]


def test_stat_note() -> None:
    assert sections.stat_note({"support_note": "too few"}, TARGET) == "too few"
    assert sections.stat_note({"support_note": None, "n_pass": 10}, TARGET) is None
    note = sections.stat_note({"n_pass": 250}, TARGET)
    assert note is not None and "1.2 %" in note and "3000 PASS rows" in note
    assert sections.stat_note({"n_pass": 5000}, TARGET) is None
    assert sections.stat_note(None, TARGET) is None


def test_validation_view_accepts_lists_or_counts() -> None:
    view = sections.validation_view(
        {"ok": False, "checks": [{"name": "leak", "ok": False, "message": "2 rows"}, "plain"],
         "missing_images": ["a", "b"], "leaked_rows": 3}, "iter1", "x")
    assert view.ok is False and view.missing_images == 2 and view.leaked_rows == 3 and view.near_duplicates is None
    assert (view.checks[0].name, view.checks[0].status, view.checks[0].detail) == ("leak", "fail", "2 rows")
    assert view.checks[1].name == "plain" and view.checks[1].status is None


def test_stage_rows_log_then_unlogged_records() -> None:
    state = _state()
    it = state.iteration("baseline")
    it.stages["train"] = StageRecord(status="complete", started_at="t", duration_sec=10.0)
    it.stages["inference"] = StageRecord(status="in_progress", started_at="t")
    log = [
        LogEntry(seq=2, ts="b", iter="baseline", stage="train", status="ok", summary="ok", duration_sec=10.0),
        LogEntry(seq=1, ts="a", iter="baseline", stage="train", status="error", summary="oom", duration_sec=2.5),
    ]
    rows = sections.stage_rows(state, log)
    assert [(r.stage, r.status) for r in rows] == [("train", "error"), ("train", "ok"), ("inference", "in_progress")]
    assert [r.bar_pct for r in rows] == [25.0, 100.0, 0.0]


def test_short_name() -> None:
    assert sections.short_name("/a/b/c/d/e.png") == "c/d/e.png"
    assert sections.short_name(None) == "—"


def test_finite_and_counts() -> None:
    assert sections.finite("0.5") == 0.5
    assert sections.finite(float("nan")) is None
    assert sections.finite(True) is None
    assert sections.as_count({"a": 1}) == 1
    assert sections.as_count("x") is None


def test_pool_hygiene_view_counts_rows_and_twins() -> None:
    record = {"near_duplicate_threshold": 0.998, "near_duplicate_encoder": "pixel-pair v1",
              "counts": {"mining_pool": {"key": 1, "content": 0, "near_duplicate": 2},
                         "synthetic": {"key": 0, "content": 0, "near_duplicate": 0}},
              "same_board": {"kpi_rows": 5, "kpi_total": 10, "share": 0.5}, "excluded_rows": 3}
    excl = pd.DataFrame({"source": ["mining_pool"] * 3, "row": ["7", "8", "9"], "input_path": ["p/a"] * 3,
                         "object_name": ["d0", "d1", "d2"], "label": ["open", "PASS", ""],
                         "kind": ["key", "near_duplicate", "near_duplicate"], "twin_set": ["kpi"] * 3,
                         "twin_row": ["2", "3", "4"], "twin_input_path": ["k/a"] * 3,
                         "twin_object_name": ["d0", "d1", "d2"], "similarity": ["1.0", "0.9991", "0.9985"]})
    view = sections.pool_hygiene_view(record, excl, 2, "pool_exclusions.csv")
    assert view is not None
    assert view.counts == [("mining pool", 1, 0, 2), ("synthetic pairs", 0, 0, 0)]
    assert view.excluded_total == 3 and [e.row for e in view.excluded] == ["7", "8"]
    assert view.excluded[1].twin == "kpi row 3 (k/a/d1)" and view.excluded[1].similarity == pytest.approx(0.9991)
    assert view.same_board == "5 of 10 KPI rows (50.0 %) share a boardname with training or pool rows"
    assert sections.pool_hygiene_view(None, None, 2, None) is None


def test_iteration_rows_say_when_a_change_is_not_significant() -> None:
    state = _state()
    base = state.iteration("baseline")
    base.far_pct = 60.0
    base.kpi_report = {"far_ci_low_pct": 50.0, "far_ci_high_pct": 80.0, "far_at_recall99_pct": 30.0,
                       "threshold_defects": [{"label": "open", "row": 9, "score": 0.25}]}
    it1 = state.iteration("iter1")
    it1.far_pct = 55.0
    it1.kpi_report = {"far_ci_low_pct": 45.0, "far_ci_high_pct": 70.0}
    it2 = state.iteration("iter2")
    it2.far_pct = 10.0
    it2.kpi_report = {"far_ci_low_pct": 5.0, "far_ci_high_pct": 20.0}
    it2.counts = Counts(selected_pass=4, selected_defect=2)
    rows = sections.iteration_rows(state)
    assert rows[0].significance is None and rows[0].threshold_set_by == "open (row 9, score 0.25)"
    assert rows[0].far_ci_low_pct == 50.0 and rows[0].far_at_recall99_pct == 30.0
    assert (rows[1].significance or "").startswith("not significant")
    assert (rows[2].significance or "").startswith("significant")
    assert rows[2].selection == "4 PASS, 2 defect rows added (PASS : defect = 2.00 : 1)"


def test_weak_cards_and_mined_pairs_take_the_largest_first() -> None:
    """Largest value first, non-numbers last, ties in file order; without the column, the file's first rows."""
    frame = pd.DataFrame({
        "filepath": ["/a", "/b", "/c", "/d", "/e"],
        "label": ["x", "y", "z", "w", "v"],
        "weakness": ["0.5", "n/a", "0.9", "0.5", None],
        "similarity": [0.1, 0.7, float("nan"), 0.7, 0.3],
    })

    def thumb(path: str | None) -> str | None:
        return None

    assert [c.label for c in sections.weak_cards(frame, thumb, 3)] == ["z", "x", "w"]
    assert [p.label for p in sections.mined_pairs(frame, thumb, 3)] == ["y", "w", "v"]
    assert [c.label for c in sections.weak_cards(frame.drop(columns="weakness"), thumb, 2)] == ["x", "y"]


def test_weak_cards_show_only_misclassified_rows_never_correct_ones() -> None:
    """Issue 27.10: RCA keeps the top rows per label whatever their sign, so most gap rows are classified
    correctly (negative weakness); the report's weakest samples are the false alarms and misses only."""
    frame = pd.DataFrame({
        "filepath": [f"/{i}" for i in range(7)],
        "label": ["PASS", "short", "PASS", "open", "PASS", "short", "PASS"],
        "weakness": [-0.01, -0.001, 0.2, 0.0, 0.0, 0.05, -0.3],
    })

    def thumb(path: str | None) -> str | None:
        return None

    cards = sections.weak_cards(frame, thumb, 12)
    # PASS above the threshold (0.2), a defect below it (0.05) and a defect exactly at it (called PASS);
    # a PASS row exactly at the threshold is called PASS: correct.
    assert [(c.label, c.weakness) for c in cards] == [("PASS", 0.2), ("short", 0.05), ("open", 0.0)]
    assert all(c.weakness is not None and c.weakness >= 0 for c in cards)
    assert len(sections.misclassified(frame)) == 3
