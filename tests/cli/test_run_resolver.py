"""`status`, `resume` and `report` find a run through one resolver: same exit code, same message."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app

VERBS = ("status", "resume", "report")


def _deft(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})


def _message(output: str) -> str:
    """The output with its line breaks and runs of spaces normalised."""
    return " ".join(output.split())


@pytest.mark.parametrize("empty", [False, True], ids=["no-results-dir", "empty-results-dir"])
def test_no_run_is_exit_2_with_one_message(tmp_path: Path, empty: bool) -> None:
    if empty:
        (tmp_path / "results" / "run_20250101_000000").mkdir(parents=True)  # killed before its start record
    results = [_deft(verb, "--workspace", str(tmp_path)) for verb in VERBS]
    assert [r.exit_code for r in results] == [2, 2, 2], [r.output for r in results]
    messages = {_message(r.output) for r in results}
    assert len(messages) == 1, messages
    assert f"{tmp_path / 'results'}: no deft run here" in messages.pop()


def test_unknown_run_id_is_exit_2_with_one_message(tmp_path: Path) -> None:
    results = [_deft(verb, "--workspace", str(tmp_path), "--run", "run_19990101_000000") for verb in VERBS]
    assert [r.exit_code for r in results] == [2, 2, 2], [r.output for r in results]
    messages = {_message(r.output) for r in results}
    assert len(messages) == 1, messages
    assert "run 'run_19990101_000000' not found" in messages.pop()
