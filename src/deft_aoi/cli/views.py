"""Shared terminal views: the Pre-Flight Summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.preflight.checks import PreflightReport

_MARK = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}
_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


TAO_RULE = "TAO rule: "
PLAN_NAME_WIDTH = 14  # the longest row names ("backbone file", "mining budget") and one space


def _width() -> int:
    """The terminal's width now (COLUMNS first, as a pipe or a test sets it), else 80."""
    import shutil

    return max(40, shutil.get_terminal_size((80, 24)).columns)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrapped(head: str, items: list[str], width: int) -> list[str]:
    """`head item, item, …` wrapped at `width` (continuation lines indented under the first item)."""
    import textwrap

    return textwrap.wrap(", ".join(items), width=width, initial_indent=head,
                         subsequent_indent=" " * len(head), break_on_hyphens=False, break_long_words=False)


def summary_lines(report: PreflightReport, config: LoopConfig | None, width: int) -> list[tuple[str, str | None]]:
    """The Pre-Flight Summary as (line, rich style) pairs, each line within `width` except the full text of a
    failed or warning check (those are never cut: a failing TAO rule keeps its source).

    Order: the plan (KPI target and iterations first), then the checks — failures and warnings in full, the
    passing checks by name (passing TAO rules as one count), then settings given beyond the plan, then the
    verdict. Every detail stays in `deft preflight --json`."""
    from deft_aoi.preflight.summary import plan
    from deft_aoi.secrets import redact

    lines: list[tuple[str, str | None]] = [(f"Pre-Flight Summary — {report.workspace}", "bold")]  # path uncut
    shown: set[str] = set()
    if config is not None:
        for row in plan(report, config):
            lines.append((_fit(f"  {row.name:<{PLAN_NAME_WIDTH}}{row.value}", width), None))
        shown = {"kpi", "max_iterations", "num_epochs", "batch_size", "backend", "encoder", "top_k_per_target",
                 "min_similarity", "mining_engine"}  # in the plan rows above
    checks = report.checks
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "warn", "fail", "skip")}
    lines.append((f"checks: {counts['pass']} ok · {counts['warn']} warn · {counts['fail']} FAIL · "
                  f"{counts['skip']} skipped (details: deft preflight --json)", None))
    for status in ("fail", "warn"):
        for c in checks:
            if c.status == status:
                lines.append((f"{_MARK[status]:<5} {c.name}  {redact(c.detail)}", _STYLE[status]))
    from deft_aoi.runners.base import GPU_CHECK

    # The GPUs row is a plan row above (preflight/summary.py), not a name in the ok list.
    passed = [c.name for c in checks if c.status == "pass" and not c.name.startswith(TAO_RULE) and c.name != GPU_CHECK]
    rules = [c for c in checks if c.name.startswith(TAO_RULE)]
    if rules:
        ok_rules = sum(c.status == "pass" for c in rules)
        na_rules = sum(c.status == "skip" for c in rules)
        passed.append(f"TAO rules ({ok_rules} of {len(rules)} pass" + (f", {na_rules} n/a)" if na_rules else ")"))
    lines += [(line, _STYLE["pass"]) for line in _wrapped("ok    ", passed, width)]
    skipped = [c.name for c in checks if c.status == "skip" and not c.name.startswith(TAO_RULE)]
    lines += [(line, _STYLE["skip"]) for line in _wrapped("skip  ", skipped, width)]
    if config is not None:
        given = [f"{name} {value} ({source})" for name, value, source in config.table()
                 if source != "default" and name not in shown]
        defaults = sum(1 for _, _, source in config.table() if source == "default")
        lines += [(line, None) for line in _wrapped("settings: ", [*given, f"{defaults} at their defaults"], width)]
    verdict = "READY" if report.ready else "NOT READY"
    lines.append((f"{verdict}: {counts['fail']} failed, {counts['warn']} warning(s)",
                  "green" if report.ready else "bold red"))
    return lines


def print_preflight_summary(report: PreflightReport, config: LoopConfig | None) -> None:
    from deft_aoi.console import err_console, plain

    console = err_console()
    bare = plain(console)  # piped: the same lines, unstyled, never wrapped by us
    for line, style in summary_lines(report, config, _width()):
        console.print(line, style=None if bare else style, markup=False, highlight=False, soft_wrap=True)
    if report.hygiene is not None and any(any(c.values()) for c in report.hygiene.counts().values()):
        _print_hygiene_table(console, report, config)  # only when something leaks: the check row says "none"


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
    from deft_aoi.preflight.summary import plan
    from deft_aoi.secrets import redact

    return {
        "pool_hygiene": hygiene_document(report, list_file),
        "workspace": str(report.workspace),
        "ready": report.ready,
        "checks": [{**c.model_dump(), "detail": redact(c.detail)} for c in report.checks],
        "plan": [] if config is None else [{"name": r.name, "value": r.value} for r in plan(report, config)],
        "parameters": [{"name": n, "value": v, "source": s} for n, v, s in (config.table() if config else [])],
    }
