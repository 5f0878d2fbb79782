"""Shared terminal views: the Pre-Flight Summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.workspace.preflight import PreflightReport

_MARK = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def print_preflight_summary(report: PreflightReport, config: LoopConfig | None) -> None:
    from deft_aoi.console import err_console, print_table
    from deft_aoi.secrets import redact

    console = err_console()
    # Result first: piped, each check is one greppable line such as `FAIL  training CSV  <path>: …`.
    rows = [[(_MARK[c.status], _STYLE[c.status]), c.name, redact(c.detail)] for c in report.checks]
    print_table(console, ("result", "check", "detail"), rows, title=f"Pre-Flight Summary — {report.workspace}",
                fold=("detail",))
    if config is not None:
        print_table(console, ("parameter", "value", "source"), config.table(),
                    title="Parameters", fold=("value",))
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
