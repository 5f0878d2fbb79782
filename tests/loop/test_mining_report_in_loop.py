"""The loop's Mining_Report.md (issue 27 point 7): it names the committed files, not the stage's scratch dir,
and states the selection step, so the rows mined follow from the lines above them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from deft_aoi.cli.app import app
from mining._mining_util import check_report_adds_up
from run_files import artefacts


def test_the_loops_mining_report_adds_up_and_names_committed_files(demo_ws: Path) -> None:
    result = CliRunner().invoke(app, ["run", "-w", str(demo_ws), "--yes", "--backend", "fake", "--max-iterations",
                                      "1", "--epochs", "2", "--seed", "1"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    (run,) = sorted((demo_ws / "results").glob("run_*"))
    report = artefacts(run, "mine.report")["iter1"]
    text = report.read_text()
    spec = (report.parent / "embedding_spec.yaml").read_text()
    assert ".scratch" not in text and ".scratch" not in spec
    assert "synth_pool/source_pool.parquet" in text and "mining_gaps.parquet" in text
    counts = check_report_adds_up(text)
    assert "selected" in counts, text  # the default `auto` strategy is kpi on the builtin engine
    rows = pd.read_parquet(artefacts(run, "mine.rows")["iter1"])
    assert counts["mined"] == len(rows)
    assert counts["synthetic"] == int((rows["source"] == "synthetic").sum())
