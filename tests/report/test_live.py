from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from deft_aoi.report.live import status_renderable, watch


def _text(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_running_view_shows_stage_and_log(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="running")
    now = datetime(2025, 1, 1, 0, 2, 5, tzinfo=UTC)  # the evaluate stage started at 00:00:00
    text = _text(status_renderable(run, now=now))
    assert "run_20250101_000000" in text
    assert "baseline · evaluate" in text and "2:05" in text
    assert "FAR<0.1%@recall=100%" in text
    assert "train" in text and "inference" in text


def test_finished_view_shows_best_and_kpi_words(make_run: Callable[..., Path]) -> None:
    text = _text(status_renderable(make_run(kind="finished")))
    assert "iter2 (FAR 0.2 %)" in text
    assert "0.1 pp above target" in text
    assert "finished · max iterations reached" in text


def test_hard_stop_view(make_run: Callable[..., Path]) -> None:
    text = _text(status_renderable(make_run(kind="hardstop")))
    assert "hard stop (leakage)" in text
    assert "fix: remove the row" in text


def test_missing_state_waits(tmp_path: Path) -> None:
    assert "waiting for the run" in _text(status_renderable(tmp_path))


def test_watch_returns_when_run_is_not_running(make_run: Callable[..., Path]) -> None:
    console = Console(record=True, width=160, color_system=None)
    watch(make_run(kind="finished"), interval_s=0.01, console=console)
    assert "iter2" in console.export_text()


def test_watch_follows_a_run_until_it_stops(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="running")
    state_file = run / "deft_state.json"

    def finish() -> None:
        time.sleep(0.2)
        state = json.loads(state_file.read_text())
        state["status"] = "interrupted"
        state_file.write_text(json.dumps(state))

    thread = threading.Thread(target=finish)
    thread.start()
    console = Console(record=True, width=160, color_system=None)
    watch(run, interval_s=0.02, console=console)
    thread.join()
    assert "interrupted" in console.export_text()
