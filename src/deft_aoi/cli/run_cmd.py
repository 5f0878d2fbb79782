"""`deft run` and `deft resume`: pre-flight → one confirmation → the autonomous loop. The loop's settings are
flags generated from their declaration (config.LoopConfig, via cli/settings.py); the work is `api.Loop`'s."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deft_aoi.cli.options import RUN_HELP, WORKSPACE_HELP
from deft_aoi.cli.settings import given_settings, settings_command

if TYPE_CHECKING:
    from deft_aoi.api import Loop


# NVIDIA's recipe asks the user to answer go / yes / looks good at its one gate; "y" is the shell's habit.
GO_ANSWERS = frozenset({"go", "yes", "y", "looks good"})
STOP_ANSWERS = frozenset({"", "no", "n", "stop", "abort", "quit", "q"})
GO_PROMPT = "Start the loop with these parameters? After this it runs unattended [go/yes/looks good · no]: "


def answer_is_go(answer: str) -> bool | None:
    """True for a go word (any case, spaces and a trailing full stop or exclamation mark ignored), False for a
    stop word or an empty answer, None for anything else (ask again)."""
    words = " ".join(answer.strip().rstrip(".!").split()).lower()
    if words in GO_ANSWERS:
        return True
    if words in STOP_ANSWERS:
        return False
    return None


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


DETACH_HELP = ("Leave once the next container / Slurm job is submitted: it runs on without deft (close the "
               "terminal, log out); `deft resume` re-attaches to it, or collects it if it finished. Not for "
               "--backend local, whose jobs run inside deft.")


def _confirm(yes: bool) -> None:
    from deft_aoi.console import err_console
    from deft_aoi.errors import UsageError

    if yes or os.environ.get("DEFT_YES", "").lower() in ("1", "true", "yes"):
        return
    if not _stdin_is_terminal():
        raise UsageError("no terminal to confirm on: pass --yes (or set DEFT_YES=1) to start the loop")
    console = err_console()  # the question goes to stderr, like every message: stdout stays the data's
    while True:
        try:
            decision = answer_is_go(console.input(GO_PROMPT, markup=False))
        except EOFError:  # Ctrl-D: no answer is no go
            decision = False
        if decision is not None:
            break
        console.print("answer go, yes, y or looks good to start; no (or Enter) to stop", markup=False)
    if not decision:
        raise typer.Exit(1)


def _finish(loop: Loop) -> None:
    """The end of a run, whatever ended it: how, the final FAR with its interval, KPI met or not (and by how
    much), the change from the baseline, and where the report and model are. Read from disk, so a hard stop,
    a failed stage and Ctrl-C say it too (the error itself follows)."""
    from deft_aoi.console import say
    from deft_aoi.loop.status_view import outcome_lines
    from deft_aoi.loop.store import StateStore

    if loop.run is None:  # stopped before a run existed
        return
    run = loop.run
    try:
        state = StateStore(run).load()
    except Exception as exc:  # never hide the error that ended the run behind one of our own
        say(f"warning: cannot read the run's state to summarise it: {exc}")
        return
    if state.failure is not None and state.failure.kind == "detached":
        say(f"run {state.run_id}: detached at {state.failure.iteration} · {state.failure.stage}; the job runs on. "
            f"Come back with `deft resume -w {state.workspace}` (`deft status` shows where the run stands)")
        return
    for line in outcome_lines(state):
        say(line)
    if run.report_html.exists():
        say(f"report:     {run.report_html}")
    if run.best_model_json.exists():
        say(f"best model: {run.best_model_json}")
    if run.best_model_onnx.exists():
        say(f"onnx:       {run.best_model_onnx}")


def register(app: typer.Typer) -> None:
    @app.command("run", cls=settings_command())
    def run(
        ctx: typer.Context,
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Skip the confirmation (also DEFT_YES=1)."),
        detach: bool = typer.Option(False, "--detach", help=DETACH_HELP),
    ) -> None:
        """Pre-flight, confirm once, then run the loop until the KPI is met or it stops."""
        from deft_aoi.api import Loop
        from deft_aoi.cli.views import print_preflight_summary

        loop = Loop(workspace, **given_settings(ctx))
        report, config = loop.preflight()
        print_preflight_summary(report, config)
        report.require_ready()
        _confirm(yes)
        try:
            loop.start(report, config, detach=detach)
        finally:
            _finish(loop)

    @app.command("resume")
    def resume(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        run_id: str | None = typer.Option(None, "--run", help=RUN_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Accepted as on `deft run` (also DEFT_YES=1), so "
                                 "scripts pass the same flags to both; resume continues a confirmed run and "
                                 "never asks."),
        detach: bool = typer.Option(False, "--detach", help=DETACH_HELP),
    ) -> None:
        """Continue the latest unfinished run from what is on disk (re-attaching to a job left running)."""
        from deft_aoi.api import Loop

        loop = Loop(workspace)
        try:
            loop.resume(run_id, detach=detach)
        finally:
            _finish(loop)
