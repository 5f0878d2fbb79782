"""`deft status` as a new user reads it: piped, plain lines; finished, where the model is."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from deft_aoi.cli.app import app


def _status(run: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["status", "-w", str(run.parent.parent), *extra],
                              env={"NO_COLOR": "1", "COLUMNS": "60"})


def test_finished_run_says_finished_and_where_the_model_is(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    result = _status(run)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "finished · best: iter2" in lines
    assert f"best model: {run / 'best_model.json'}" in lines
    assert not any(line.startswith(("next:", "stage:")) for line in lines), result.stdout
    assert "(complete)" not in result.stdout

    doc = json.loads(_status(run, "--json").stdout)
    assert doc["stage"] == "finished" and doc["next_action"] is None
    assert doc["best_model"]["json"] == str(run / "best_model.json")


def test_unfinished_run_still_says_what_is_next(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="baseline")
    result = _status(run)
    assert result.exit_code == 0, result.output
    assert any(line.startswith("next: ") for line in result.stdout.splitlines())
    assert "best model:" not in result.stdout


def test_piped_kpi_trend_is_one_plain_line_per_iteration(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    lines = _status(run).stdout.splitlines()
    assert not any(ch in "\n".join(lines) for ch in "│┃━─")
    rows = [line for line in lines if re.match(r"(baseline|iter\d) +complete +", line)]
    assert [r.split()[0] for r in rows] == ["baseline", "iter1", "iter2"]


def test_piped_watch_waits_then_prints_the_plain_status(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    result = _status(run, "--watch")
    assert result.exit_code == 0, result.output
    assert "finished · best: iter2" in result.stdout.splitlines()
    assert not any(ch in result.output for ch in "│┃━─╭")  # no live panel drawn into a pipe
