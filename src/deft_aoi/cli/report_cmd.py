"""`deft report`: render DEFT_Loop_Report.html for a run from what is on disk."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        workspace: Path = typer.Option(
            Path("~/workspace"), "--workspace", "-w", help="Customer workspace (holds results/run_*)."
        ),
        run: str | None = typer.Option(
            None, "--run", help="Run id (run_YYYYMMDD_HHMMSS) or path to a run dir; default: the latest run."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print {\"report\": path} as JSON on stdout."),
    ) -> None:
        """Render the run's self-contained HTML report (DEFT_Loop_Report.html) and print its path."""
        import json

        from deft_aoi.console import out_console, say
        from deft_aoi.report.locate import resolve_run_dir
        from deft_aoi.report.render import render_report

        run_root = resolve_run_dir(workspace.expanduser(), run)
        path = render_report(run_root)
        if json_out:
            out_console().print(json.dumps({"report": str(path), "run": run_root.name}), markup=False)
        else:
            say(f"report written for {run_root.name}")
            out_console().print(str(path), markup=False)
