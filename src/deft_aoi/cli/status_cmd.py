"""`deft status`: where a run stands, from disk."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.options import RUN_HELP, WORKSPACE_HELP


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        run_id: str | None = typer.Option(None, "--run", help=RUN_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        watch: bool = typer.Option(False, "--watch", help="Live view, refreshed from disk until the run stops."),
    ) -> None:
        """Run id, iteration, stage, KPI trend, next action and the last log entries."""
        import json

        from deft_aoi.loop.session import find_run
        from deft_aoi.loop.status_view import status_document
        from deft_aoi.workspace.layout import WorkspaceLayout

        run = find_run(WorkspaceLayout.at(workspace), run_id)
        if watch:
            from deft_aoi.report.live import watch as live_watch

            live_watch(run.root)
            return
        doc = status_document(run)
        if as_json:
            typer.echo(json.dumps(doc, indent=2))
            return
        _print(doc)


def _print(doc: dict) -> None:
    from rich.table import Table

    from deft_aoi.console import out_console

    console = out_console()
    console.print(f"run {doc['run_id']} · {doc['status']}"
                  f"{' (' + doc['stop_reason'] + ')' if doc['stop_reason'] else ''} · KPI {doc['kpi_target']}")
    console.print(f"stage: {doc['stage'] or '—'} · best: {doc['best_iteration'] or '—'}")
    table = Table(title="KPI trend")
    for col in ("iteration", "status", "FAR %", "threshold", "rows"):
        table.add_column(col)
    for it in doc["iterations"]:
        far = "—" if it["far_pct"] is None else f"{it['far_pct']:.2f}"
        thr = "—" if it["threshold"] is None else f"{it['threshold']:.4g}"
        table.add_row(it["name"], it["status"], far, thr, str(it["training_rows"] or "—"))
    console.print(table)
    if doc["failure"]:
        console.print(f"failure: {doc['failure']['message']}", markup=False)
    console.print(f"next: {doc['next_action']}", markup=False)
    for entry in doc["last_log"]:
        console.print(f"  #{entry['seq']} {entry['ts']} {entry['iter']} · {entry['stage']} [{entry['status']}] "
                      f"{entry['summary']}", markup=False)
