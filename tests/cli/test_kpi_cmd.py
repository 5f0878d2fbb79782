"""`deft kpi INFERENCE_CSV` through a local Typer app (the lead wires it into cli/app.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from deft_aoi.cli import kpi_cmd
from deft_aoi.errors import DeftError, InputError, UsageError


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    kpi_cmd.register(app)

    @app.callback()
    def _root() -> None:  # keeps `kpi` a named sub-command, as in the real app
        pass

    return app


def write_inference(path: Path, labels: list[str], scores: list[str]) -> Path:
    n = len(labels)
    pd.DataFrame(
        {
            "input_path": [f"p{i}/test" for i in range(n)],
            "golden_path": [f"p{i}/golden" for i in range(n)],
            "label": labels,
            "object_name": [f"c{i}" for i in range(n)],
            "siamese_score": scores,
        }
    ).to_csv(path, index=False)
    return path


def test_default_kpi_is_the_config_declaration(app: typer.Typer, tmp_path: Path) -> None:
    from deft_aoi.cli.app import app as deft
    from deft_aoi.config import DEFAULT_KPI, KpiTarget

    shown = CliRunner().invoke(deft, ["kpi", "--help"], terminal_width=200).output
    assert f"[default: {DEFAULT_KPI}]" in shown
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "PASS", "open"], ["0.1", "0.7", "0.6"])
    doc = json.loads(CliRunner().invoke(app, ["kpi", str(csv), "--json"]).stdout)
    assert doc["kpi_text"] == KpiTarget.parse(DEFAULT_KPI).text


def test_json_output_on_stdout(app: typer.Typer, tmp_path: Path) -> None:
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "PASS", "open"], ["0.1", "0.7", "0.6"])
    result = CliRunner().invoke(app, ["kpi", str(csv), "--json", "--kpi", "FAR<60%@recall=100%"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["threshold"] == 0.1 and data["far_pct"] == 50.0 and data["kpi_met"] is True
    assert data["kpi_text"] == "FAR<60%@recall=100%"


def test_human_output_and_out_dir(app: typer.Typer, tmp_path: Path) -> None:
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "open"], ["0.2", "0.9"])
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["kpi", str(csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "FAR" in result.stdout and "threshold       0.2" in result.stdout
    # FAR 0 % meets the target on this set, but one PASS row cannot support it: the note goes to stderr.
    assert "KPI met         yes" in result.stdout
    assert "note:" in result.stderr and "support" in result.stderr
    assert "note:" not in result.stdout
    assert (out / "metrics.json").is_file() and (out / "far_vs_recall.svg").is_file()


def test_unreachable_is_reported(app: typer.Typer, tmp_path: Path) -> None:
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "PASS"], ["0.2", "0.9"])
    result = CliRunner().invoke(app, ["kpi", str(csv), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["reachable"] is False and "NO_PASS" in data["unreachable_reason"]


def test_bad_score_names_file_and_row(app: typer.Typer, tmp_path: Path) -> None:
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "open"], ["0.2", "oops"])
    result = CliRunner().invoke(app, ["kpi", str(csv)])
    assert isinstance(result.exception, InputError)
    assert result.exception.row == 3 and str(csv) in result.exception.render()


@pytest.mark.parametrize("score", ["1.5", "-0.01", "inf"])
def test_score_outside_zero_one_is_refused(app: typer.Typer, tmp_path: Path, score: str) -> None:
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "open", "open"], ["0.2", "0.9", score])
    result = CliRunner().invoke(app, ["kpi", str(csv)])
    assert isinstance(result.exception, InputError)
    assert result.exception.row == 4 and "siamese_score" in result.exception.render()
    assert "not a probability in [0, 1]" in result.exception.render()


def test_bad_kpi_text_is_a_usage_error(app: typer.Typer, tmp_path: Path) -> None:
    csv = write_inference(tmp_path / "inference.csv", ["PASS", "open"], ["0.2", "0.9"])
    result = CliRunner().invoke(app, ["kpi", str(csv), "--kpi", "recall>1"])
    assert isinstance(result.exception, UsageError)


def test_missing_file_is_an_input_error(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kpi", str(tmp_path / "nope.csv")])
    assert isinstance(result.exception, DeftError) and "not found" in result.exception.render()


def test_registering_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, typer; from deft_aoi.cli import kpi_cmd; kpi_cmd.register(typer.Typer()); "
        "print(','.join(m for m in ('pandas','numpy','torch','faiss','PIL','docker','jinja2','pydantic') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
