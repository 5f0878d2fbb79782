"""The plan's facts (preflight/summary.py); its layout on a screen: tests/cli/test_views.py (CLI)."""

from __future__ import annotations

from pathlib import Path

from deft_aoi.preflight.summary import mining_targets, run_words, synthetic_types
from deft_aoi.workspace.layout import WorkspaceLayout


def test_mining_targets_are_the_weakest_top_k_of_each_label_per_light() -> None:
    assert mining_targets({"PASS": 250, "open": 63, "spur": 45}, 50, 1) == 50 + 50 + 45
    assert mining_targets({"PASS": 250, "open": 63, "spur": 45}, 50, 2) == 2 * 145
    assert mining_targets({}, 50, 1) == 0


def test_synthetic_types_from_defect_spec_or_the_generic_label(tmp_path: Path) -> None:
    layout = WorkspaceLayout.at(tmp_path)
    assert synthetic_types(layout) == "one type, synthetic_defect (no defect_spec.jsonl)"
    layout.defect_spec.parent.mkdir(parents=True)
    layout.defect_spec.write_text('{"defect_type": "open", "count": 3}\n{"defect_type": "short", "count": 7}\n')
    assert synthetic_types(layout) == "short 7, open 3"


def test_run_words_say_new_and_what_is_kept(tmp_path: Path) -> None:
    layout = WorkspaceLayout.at(tmp_path)
    assert run_words(layout) == "new run (results/run_<TS>)"
    (layout.results_root / "run_20260101_000000").mkdir(parents=True)
    assert "1 earlier kept, latest run_20260101_000000" in run_words(layout)
