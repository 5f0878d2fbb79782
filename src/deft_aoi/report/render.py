"""DEFT_Loop_Report.html: one jinja2 template, autoescaped, written atomically into the run dir."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.io_utils import atomic_write_text
from deft_aoi.report.collect import collect
from deft_aoi.report.model import ReportView
from deft_aoi.workspace.layout import RunLayout

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "report.html.j2"
DASH = "—"
SVG_NS = "http://www.w3.org/2000/svg"


def _dash(value: Any) -> Any:
    return DASH if value is None or value == "" else value


def _num(value: float | None, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}g}"


def _pct(value: float | None, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}g} %"


def _pp(value: float | None) -> str:
    return DASH if value is None else f"{value:+.3g} pp"


def _int(value: int | None, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+,}" if signed else f"{value:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _inline_svg(svg: str) -> str:
    """Inline SVG in HTML5 needs no namespace declaration; dropping it keeps the page free of any URL."""
    return svg.replace(f' xmlns="{SVG_NS}"', "", 1)


@cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deft_aoi.report", "templates"),
        autoescape=True,  # every value from disk (object names, labels, messages) is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(dash=_dash, num=_num, pct=_pct, pp=_pp, int=_int, duration=_duration)
    return env


def render_html(view: ReportView) -> str:
    """The page for a view. The SVGs are our own chart output (their text is escaped when built), so
    they are the only strings inserted unescaped."""
    from markupsafe import Markup

    svgs = {name: Markup(_inline_svg(getattr(view, name))) if getattr(view, name) else None
            for name in ("trend_svg", "score_svg", "far_recall_svg")}
    return environment().get_template(TEMPLATE).render(view=view, svg=svgs)


FIGURE_TAGS = ("<svg", "<img")
INCOMPLETE_SUFFIX = ".incomplete.html"
_NOTES_META = '<meta name="deft-report-notes" content="{}">'
_NOTES_RE = re.compile(r'<meta name="deft-report-notes" content="(\d+)">')


def page_quality(html: str) -> tuple[int, int]:
    """(figures, notes) of a rendered page: charts and thumbnails, and how many files the collector found
    present but unreadable (a page from before the marker counts none)."""
    found = _NOTES_RE.search(html)
    return sum(html.count(tag) for tag in FIGURE_TAGS), int(found.group(1)) if found else 0


def render_report(run_root: Path, *, keep_better: bool = False) -> Path:
    """Render `<run_root>/DEFT_Loop_Report.html` from what is on disk and return its path.

    Needs only `deft_state.json` (raises InputError when the dir is not a run); any other missing or
    unreadable file leaves its section showing "—". With `keep_better` (`deft report`, run on records that
    may have been damaged since the loop wrote its report), a page with fewer figures or more unreadable
    files than the report already there never replaces it: it is written beside it, `*.incomplete.html`,
    and that path is returned, so the caller can say so. The loop itself always writes the report."""
    run = RunLayout(Path(run_root))
    view = collect(run.root)
    html = render_html(view).replace("<head>", "<head>\n" + _NOTES_META.format(len(view.notes)), 1)
    target = run.report_html
    if keep_better:
        try:
            old_figures, old_notes = page_quality(run.report_html.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            old_figures, old_notes = 0, 0
        figures, notes = page_quality(html)
        if run.report_html.exists() and (figures < old_figures or notes > old_notes):
            target = run.report_html.with_name(run.report_html.stem + INCOMPLETE_SUFFIX)
    atomic_write_text(target, html)
    return target
