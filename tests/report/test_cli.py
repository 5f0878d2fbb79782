from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from deft_aoi.cli.report_cmd import register
from deft_aoi.errors import UsageError


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # a group, so the command is invoked by name as in `deft report`
        pass

    return app


def test_default_is_latest_run(app: typer.Typer, make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    older = run.parent / "run_20240101_000000"
    shutil.copytree(run, older)
    result = CliRunner().invoke(app, ["report", "--workspace", str(run.parent.parent)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "DEFT_Loop_Report.html")
    assert (run / "DEFT_Loop_Report.html").is_file()
    assert not (older / "DEFT_Loop_Report.html").exists()


def test_run_by_id_and_json(app: typer.Typer, make_run: Callable[..., Path]) -> None:
    run = make_run(kind="baseline")
    result = CliRunner().invoke(app, ["report", "-w", str(run.parent.parent), "--run", run.name, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"report": str(run / "DEFT_Loop_Report.html"), "run": run.name}


def test_run_by_path(app: typer.Typer, make_run: Callable[..., Path], tmp_path: Path) -> None:
    run = make_run(kind="hardstop")
    result = CliRunner().invoke(app, ["report", "-w", str(tmp_path / "elsewhere"), "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "Hard stop" in (run / "DEFT_Loop_Report.html").read_text()


def test_no_runs_is_a_usage_error(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", "-w", str(tmp_path)])
    assert isinstance(result.exception, UsageError)
    assert "no deft run here" in str(result.exception)


def test_unknown_run_is_a_usage_error(app: typer.Typer, make_run: Callable[..., Path]) -> None:
    run = make_run(kind="baseline")
    result = CliRunner().invoke(app, ["report", "-w", str(run.parent.parent), "--run", "run_19990101_000000"])
    assert isinstance(result.exception, UsageError)
    assert "not found" in str(result.exception)
