"""Shared terminal views: the Pre-Flight Summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.preflight.checks import PreflightReport

_MARK = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def print_preflight_summary(report: PreflightReport, config: LoopConfig | None) -> None:
    from deft_aoi.console import err_console, print_table
    from deft_aoi.secrets import redact

    console = err_console()
    # Result first: piped, each check is one greppable line such as `FAIL  training CSV  <path>: …`.
    rows: list[list[str | tuple[str, str]]] = [
        [(_MARK[c.status], _STYLE[c.status]), c.name, redact(c.detail)] for c in report.checks
    ]
    print_table(console, ("result", "check", "detail"), rows, title=f"Pre-Flight Summary — {report.workspace}",
                fold=("detail",))
    if report.hygiene is not None:
        _print_hygiene_table(console, report, config)
    if config is not None:
        print_table(console, ("parameter", "value", "source"), config.table(),
                    title="Parameters", fold=("value",))
    verdict = "READY" if report.ready else "NOT READY"
    console.print(f"[{'green' if report.ready else 'bold red'}]{verdict}[/]: "
                  f"{sum(c.failed for c in report.checks)} failed, "
                  f"{sum(c.status == 'warn' for c in report.checks)} warning(s)")


_SOURCES = {"mining_pool": "mining pool", "synthetic": "synthetic pairs", "training": "base training set",
            "kpi": "KPI set (itself)"}


def _print_hygiene_table(console: Any, report: PreflightReport, config: LoopConfig | None) -> None:
    """Counts by source and kind, and what the loop does with them (plain lines when piped)."""
    from deft_aoi.console import print_table
    from deft_aoi.preflight.hygiene import KINDS

    assert report.hygiene is not None
    exclude = config.exclude_leaks.value if config is not None else True
    actions = {"mining_pool": "excluded from mining" if exclude else "refuse to start",
               "synthetic": "excluded from mining" if exclude else "refuse to start",
               "training": "key/content: refuse to start; near duplicate: warning",
               "kpi": "warning (counted twice in FAR)"}
    rows: list[list[str]] = []
    for source, counts in report.hygiene.counts().items():
        if source in report.hygiene.n_rows:
            rows.append([_SOURCES[source], *(str(counts[k]) for k in KINDS),
                         actions[source] if any(counts.values()) else "—"])
    board = report.hygiene.same_board
    rows.append(["same board (KPI rows)", "", "", "", f"{board['kpi_rows']} of {board['kpi_total']}: warning"])
    print_table(console, ("rows of", *KINDS, "action"), rows,
                title=f"Leakage by kind (vs validation/KPI; near duplicate: cosine ≥ {report.hygiene.threshold:g})")


def hygiene_document(report: PreflightReport, list_file: str | None) -> dict[str, Any] | None:
    if report.hygiene is None:
        return None
    h = report.hygiene
    return {**h.config(), "counts": h.counts(), "excluded_rows": len(h.exclusions), "exclusions_file": list_file,
            "same_board": h.same_board, "embedded_now": h.embedded, "from_cache": h.cached, "hashed_now": h.hashed,
            "timings_s": {k: round(v, 3) for k, v in h.timings.items()},
            "findings": h.findings.to_dict(orient="records")}


def preflight_document(report: PreflightReport, config: LoopConfig | None,
                       list_file: str | None = None) -> dict[str, Any]:
    from deft_aoi.secrets import redact

    return {
        "pool_hygiene": hygiene_document(report, list_file),
        "workspace": str(report.workspace),
        "ready": report.ready,
        "checks": [{**c.model_dump(), "detail": redact(c.detail)} for c in report.checks],
        "parameters": [{"name": n, "value": v, "source": s} for n, v, s in (config.table() if config else [])],
    }
