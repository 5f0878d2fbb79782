"""Shared terminal views: the Pre-Flight Summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.workspace.preflight import PreflightReport

_MARK = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def print_preflight_summary(report: PreflightReport, config: LoopConfig | None) -> None:
    from rich.table import Table

    from deft_aoi.console import err_console
    from deft_aoi.secrets import redact

    console = err_console()
    table = Table(title=f"Pre-Flight Summary — {report.workspace}", show_lines=False, expand=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        table.add_row(check.name, f"[{_STYLE[check.status]}]{_MARK[check.status]}[/]", redact(check.detail))
    console.print(table)
    if config is not None:
        params = Table(title="Parameters", expand=False)
        params.add_column("parameter")
        params.add_column("value")
        params.add_column("source")
        for name, value, source in config.table():
            params.add_row(name, value, source)
        console.print(params)
    verdict = "READY" if report.ready else "NOT READY"
    console.print(f"[{'green' if report.ready else 'bold red'}]{verdict}[/]: "
                  f"{sum(c.failed for c in report.checks)} failed, "
                  f"{sum(c.status == 'warn' for c in report.checks)} warning(s)")


def preflight_document(report: PreflightReport, config: LoopConfig | None) -> dict[str, Any]:
    from deft_aoi.secrets import redact

    return {
        "workspace": str(report.workspace),
        "ready": report.ready,
        "checks": [{**c.model_dump(), "detail": redact(c.detail)} for c in report.checks],
        "parameters": [{"name": n, "value": v, "source": s} for n, v, s in (config.table() if config else [])],
    }
