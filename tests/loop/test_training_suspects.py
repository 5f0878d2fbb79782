"""Suspect TRAINING labels (issue 15): RCA scores the training CSV with the chosen checkpoint and flags rows
whose label disagrees with the model and their neighbours, shown with images in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app

BASELINE_ONLY = ["--backend", "fake", "--max-iterations", "0", "--epochs", "2", "--seed", "1", "--yes"]


def _flip_defects_to_pass(ws: Path, n: int) -> list[int]:
    """Relabel the first `n` defect rows of the base training CSV as PASS; their data row numbers (header = 1)."""
    path = ws / "train" / "base" / "training_set.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    idx = df.index[df["label"] != "PASS"][:n]
    df.loc[idx, "label"] = "PASS"
    df.to_csv(path, index=False)
    return [int(i) + 2 for i in idx]


def _baseline_rca(ws: Path) -> tuple[Path, dict]:
    (run,) = sorted((ws / "results").glob("run_*"))
    state = json.loads((run / "deft_state.json").read_text())
    return run, state["iterations"]["baseline"]


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_mislabelled_training_rows_are_flagged_and_shown_with_images(demo_ws: Path) -> None:
    flipped = _flip_defects_to_pass(demo_ws, 4)
    result = CliRunner().invoke(app, ["run", "-w", str(demo_ws), *BASELINE_ONLY], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    run, baseline = _baseline_rca(demo_ws)
    rca = baseline["stages"]["rca"]
    scored = pd.read_csv(run / rca["outputs"]["rca.training_scores"]["path"])
    assert len(scored) == baseline["counts"]["training_rows"] and "siamese_score" in scored.columns
    suspects = pd.read_parquet(run / rca["outputs"]["rca.suspects"]["path"])
    training = suspects[suspects["set"] == "training"]
    # The planted flips are found, and nothing else in the training set is called a label error.
    assert len(training) >= 2 and set(training["row"]) <= set(flipped), (training, flipped)
    assert (training["label"] == "PASS").all() and not training["sets_threshold"].any()
    assert baseline["counts"]["suspect_training_labels"] == len(training)
    assert f"{len(training)} suspect training row(s) of {len(scored)}" in rca["summary"]
    html = (run / "DEFT_Loop_Report.html").read_text()
    section = html[html.index("Suspect training rows"):]
    assert f"{len(training)} of {len(scored)} training row(s) of training_set.csv" in section
    first = int(training["row"].iat[0])
    card = section[: section.index(f"training row {first}")]
    assert card.count('<img class="thumb" src="data:image') >= 2  # input and golden of the first card


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_no_score_training_skips_the_job_and_says_so(demo_ws: Path) -> None:
    _flip_defects_to_pass(demo_ws, 4)
    result = CliRunner().invoke(app, ["run", "-w", str(demo_ws), *BASELINE_ONLY, "--no-score-training"],
                                env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    run, baseline = _baseline_rca(demo_ws)
    rca = baseline["stages"]["rca"]
    assert "training rows not scored (--no-score-training)" in rca["summary"]
    assert "rca.training_scores" not in rca["outputs"] and "suspect_training_labels" not in baseline["counts"]
    suspects = pd.read_parquet(run / rca["outputs"]["rca.suspects"]["path"])
    assert (suspects["set"] == "KPI").all()
    assert "Suspect training rows" not in (run / "DEFT_Loop_Report.html").read_text()
