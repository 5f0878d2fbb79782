"""`deft status`: where a run stands, from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from deft_aoi.cli.options import RUN_HELP, WORKSPACE_HELP
from deft_aoi.console import echo_json


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

        from deft_aoi.api import Loop

        loop = Loop(workspace)
        run = loop.find(run_id)
        if watch:
            from deft_aoi.console import err_console, plain

            if not plain(err_console()):
                from deft_aoi.report.live import watch as live_watch

                live_watch(run.root)
                return
            # No terminal to redraw on (piped, CI): wait for the run to stop, then print the plain status.
            from deft_aoi.report.live import wait_until_stopped

            wait_until_stopped(run.root)
        doc = loop.status(run.root)
        if as_json:
            echo_json(json.dumps(doc, indent=2))
            return
        _print(doc)


def _print(doc: dict[str, Any]) -> None:
    from deft_aoi.console import out_console, print_table

    console = out_console()
    console.print(f"run {doc['run_id']} · {doc['status']}"
                  f"{' (' + doc['stop_reason'] + ')' if doc['stop_reason'] else ''} · KPI {doc['kpi_target']}",
                  markup=False)
    if doc["status"] == "finished":
        # After the handoff there is nothing left to do: say where the model is, not what to run next.
        best = doc["best_model"] or {}
        console.print(f"finished · best: {doc['best_iteration'] or '—'}", markup=False)
        console.print(f"best model: {best.get('json') or '—'}", markup=False)
        console.print(f"checkpoint: {best.get('checkpoint') or '—'}", markup=False)
        if best.get("onnx"):
            console.print(f"onnx: {best['onnx']}", markup=False)
    else:
        console.print(f"stage: {doc['stage'] or '—'} · best: {doc['best_iteration'] or '—'}", markup=False)
    rows = []
    for it in doc["iterations"]:
        far = "—" if it["far_pct"] is None else f"{it['far_pct']:.2f}"
        ci = "—" if not it.get("far_ci_pct") else f"{it['far_ci_pct'][0]:.1f}–{it['far_ci_pct'][1]:.1f}"
        r99 = "—" if it.get("far_at_recall99_pct") is None else f"{it['far_at_recall99_pct']:.2f}"
        thr = "—" if it["threshold"] is None else f"{it['threshold']:.4g}"
        setters = it.get("threshold_defects") or []
        by = "—" if not setters else f"{setters[0]['label']} (row {setters[0]['row']})"
        rows.append([it["name"], it["status"], far, ci, r99, thr, by, str(it["training_rows"] or "—")])
    print_table(console, ("iteration", "status", "FAR %", "95% CI", "FAR@r99 %", "threshold", "set by", "rows"), rows,
                title="KPI trend")
    if doc["failure"]:
        console.print(f"failure: {doc['failure']['message']}", markup=False)
    if doc["next_action"] is not None:
        console.print(f"next: {doc['next_action']}", markup=False)
    for entry in doc["last_log"]:
        console.print(f"  #{entry['seq']} {entry['ts']} {entry['iter']} · {entry['stage']} [{entry['status']}] "
                      f"{entry['summary']}", markup=False)
    for note in doc["notes"]:
        console.print(f"note: {note}", markup=False)
