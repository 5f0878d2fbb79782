"""`print_table`: a rich table on a terminal, plain unwrapped lines when piped or in CI."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from deft_aoi.console import plain_table_lines, print_table

LONG = "/very/long/workspace/path/that/does/not/fit/in/forty/columns/train/base/training_set.csv"
ROWS = [[("FAIL", "bold red"), "training CSV", f"{LONG}: missing column golden_path\n  hint: add it"],
        [("ok", "green"), "spec", "resnet18, 1 light"]]


def _render(terminal: bool) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=40, color_system=None)
    print_table(console, ("result", "check", "detail"), ROWS, title="Pre-Flight Summary", fold=("detail",))
    return buffer.getvalue()


def test_piped_rows_are_single_aligned_lines() -> None:
    lines = _render(terminal=False).splitlines()
    assert lines == [
        "Pre-Flight Summary",
        "result  check         detail",
        f"FAIL    training CSV  {LONG}: missing column golden_path  hint: add it",
        "ok      spec          resnet18, 1 light",
    ]


def test_terminal_gets_a_rich_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    out = _render(terminal=True)
    assert "│" in out or "┃" in out
    assert all(len(line) <= 40 for line in out.splitlines())  # folded inside its cell, not overflowing


def test_ci_is_plain_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert LONG in _render(terminal=True)


def test_plain_lines_of_an_empty_table_are_title_and_header() -> None:
    assert plain_table_lines("KPI trend", ("iteration", "status"), []) == ["KPI trend", "iteration  status"]
