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
    from deft_aoi.loop.state import RunState


DETACH_HELP = ("Leave once the next container / Slurm job is submitted: it runs on without deft (close the "
               "terminal, log out); `deft resume` re-attaches to it, or collects it if it finished. Not for "
               "--backend local, whose jobs run inside deft.")


def _confirm(yes: bool) -> None:
    from deft_aoi.errors import UsageError

    if yes or os.environ.get("DEFT_YES", "").lower() in ("1", "true", "yes"):
        return
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: pass --yes (or set DEFT_YES=1) to start the loop")
    if not typer.confirm("Start the loop with these parameters? After this it runs unattended", default=False):
        raise typer.Exit(1)


def _finish(state: RunState) -> None:
    from deft_aoi.console import say
    from deft_aoi.workspace.layout import RunLayout

    run = RunLayout(Path(state.results_dir))
    if state.failure is not None and state.failure.kind == "detached":
        say(f"run {state.run_id}: detached at {state.failure.iteration} · {state.failure.stage}; the job runs on. "
            f"Come back with `deft resume -w {state.workspace}` (`deft status` shows where the run stands)")
        return
    say(f"run {state.run_id}: {state.status} ({state.stop_reason or '—'}); best iteration: "
        f"{state.best_iteration or '—'}")
    report, best = run.report_html, run.best_model_json
    if report.exists():
        say(f"report:     {report}")
    if best.exists():
        say(f"best model: {best}")


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
        _finish(loop.start(report, config, detach=detach))

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

        _finish(Loop(workspace).resume(run_id, detach=detach))
