"""`deft report`: render DEFT_Loop_Report.html for a run from what is on disk."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.options import RUN_HELP, WORKSPACE_HELP


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        run: str | None = typer.Option(None, "--run", help=RUN_HELP),
        json_out: bool = typer.Option(False, "--json", help="Print {\"report\": path} as JSON on stdout."),
    ) -> None:
        """Render the run's self-contained HTML report (DEFT_Loop_Report.html) and print its path."""
        import json

        from deft_aoi.api import Loop
        from deft_aoi.console import out_console, say
        from deft_aoi.report.render import INCOMPLETE_SUFFIX

        loop = Loop(workspace)
        run_root = loop.find(run).root
        path = loop.report(run_root)
        if path.name.endswith(INCOMPLETE_SUFFIX):
            say(f"warning: {run_root.name}'s records now give a report with fewer figures than the one already "
                f"there; that one is kept, the new one is written beside it: {path}")
        if json_out:
            out_console().print(json.dumps({"report": str(path), "run": run_root.name}), markup=False)
        else:
            say(f"report written for {run_root.name}")
            out_console().print(str(path), markup=False)
