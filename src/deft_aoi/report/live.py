"""The operator's live view of a run, read from disk (state + log) on every refresh.

Disk is canonical (CONTRACTS §8), so the view works from any terminal, for a run started elsewhere, and
never talks to the loop process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import DeftError
from deft_aoi.loop.state import RunState

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

LOG_LINES = 8
DASH = "—"


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.4g} %"


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.4g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return DASH
    minutes, sec = divmod(round(value), 60)
    return f"{minutes}:{sec:02d}" if minutes else f"{value:.1f} s"


def _elapsed_since(iso: str, now: datetime) -> float | None:
    try:
        started = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return max(0.0, (now - started).total_seconds())


def _running_stage(state: RunState) -> tuple[str, str, str] | None:
    """(iteration, stage, started_at) of the stage in progress, if any."""
    for it in reversed(state.ordered_iterations()):
        for name, rec in reversed(list(it.stages.items())):
            if rec.status == "in_progress":
                return it.name, name, rec.started_at
    return None


def status_renderable(run_root: Path, *, now: datetime | None = None) -> RenderableType:
    """One frame of the live view: run header, stage running now, iteration table, latest log lines."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from deft_aoi.loop.status_view import effective_state
    from deft_aoi.report.collect import load_run
    from deft_aoi.report.sections import status_words
    from deft_aoi.secrets import redact
    from deft_aoi.workspace.layout import RunLayout

    now = now or datetime.now(UTC)
    try:
        state, log, _notes = load_run(Path(run_root))
    except DeftError as exc:
        return Panel(Text(f"waiting for the run: {redact(exc.render())}"), title=str(run_root))
    state = effective_state(state, RunLayout(Path(run_root)))

    best = state.iterations.get(state.best_iteration or "")
    latest = next((it for it in reversed(state.ordered_iterations()) if it.far_pct is not None), None)
    shown = best or latest
    target = state.kpi
    words = None if shown is None else status_words(shown.far_pct, shown.recall_pct, target)
    head = Table.grid(padding=(0, 2))
    run_status = state.status + (f" · {state.stop_reason}" if state.stop_reason else "")
    head.add_row("run", state.run_id, "status", run_status)
    head.add_row("KPI", state.kpi_target, "now", words or DASH)
    head.add_row(
        "iteration",
        f"{state.current_iteration} of {state.max_iterations}",
        "best",
        DASH if best is None else f"{best.name} (FAR {_pct(best.far_pct)})",
    )
    running = _running_stage(state)
    if running is not None:
        it_name, stage, started = running
        head.add_row("running", f"{it_name} · {stage}", "for", _seconds(_elapsed_since(started, now)))

    table = Table(title="iterations", title_justify="left", expand=False)
    for col in ("iteration", "status", "last stage", "rows", "FAR", "recall", "threshold", "duration"):
        table.add_column(col, justify="right" if col in ("rows", "FAR", "recall", "threshold", "duration") else "left")
    for it in state.ordered_iterations():
        durations = [r.duration_sec for r in it.stages.values() if r.duration_sec is not None]
        total = it.counts.total
        table.add_row(
            it.name + (" ★" if it.name == state.best_iteration else ""),
            it.status,
            it.stage_completed or DASH,
            DASH if total is None else f"{total:,}",
            _pct(it.far_pct),
            _pct(it.recall_pct),
            _num(it.threshold),
            _seconds(it.duration_sec or (sum(durations) if durations else None)),
        )

    recent = Table(title="latest stages", title_justify="left", show_header=False, box=None, padding=(0, 1))
    for entry in log[-LOG_LINES:]:
        recent.add_row(
            f"{entry.seq}",
            entry.iter,
            entry.stage,
            Text(entry.status, style="green" if entry.status == "ok" else "red"),
            _seconds(entry.duration_sec),
            Text(redact(entry.summary)),
        )
    parts: list[RenderableType] = [head, table, recent]
    if state.failure is not None:
        f = state.failure
        text = f"{'hard stop' if f.hard_stop else 'failure'} ({f.kind}) at {f.iteration or DASH} · {f.stage or DASH}: "
        text += redact(f.message) + (f"\nfix: {redact(f.fix)}" if f.fix else "")
        parts.append(Panel(Text(text), title="stopped", border_style="red"))
    return Panel(Group(*parts), title=f"DEFT loop · {state.run_id}", border_style="blue")


def _is_running(run_root: Path) -> bool:
    from deft_aoi.loop.status_view import effective_state
    from deft_aoi.report.collect import load_run
    from deft_aoi.workspace.layout import RunLayout

    try:
        state, _log, _notes = load_run(Path(run_root))
    except DeftError:  # the first state is not written yet, or the run's records are unreadable
        from deft_aoi.loop.status_view import loop_alive

        return loop_alive(RunLayout(Path(run_root)))
    # A killed run's state still says "running": only a live lock holder keeps the view open.
    return effective_state(state, RunLayout(Path(run_root))).status == "running"


def watch(run_root: Path, interval_s: float = 2.0, *, console: Console | None = None) -> None:
    """Refresh the live view every `interval_s` until the run is no longer running, or Ctrl-C.

    Drawn on stderr (stdout stays free for machine output); the final frame stays on screen.
    """
    from rich.live import Live

    from deft_aoi.console import err_console

    run_root = Path(run_root)
    if not run_root.is_dir():
        from deft_aoi.errors import InputError

        raise InputError("run directory not found", file=run_root)
    console = console or err_console()
    try:
        with Live(status_renderable(run_root), console=console, auto_refresh=False, transient=False) as live:
            wait_until_stopped(run_root, interval_s,
                               on_tick=lambda: live.update(status_renderable(run_root), refresh=True))
            live.update(status_renderable(run_root), refresh=True)
    except KeyboardInterrupt:
        return


def wait_until_stopped(run_root: Path, interval_s: float = 2.0, *, on_tick: Callable[[], None] | None = None) -> None:
    """Poll the run on disk every `interval_s` until it is no longer running."""
    while _is_running(Path(run_root)):
        time.sleep(interval_s)
        if on_tick is not None:
            on_tick()
