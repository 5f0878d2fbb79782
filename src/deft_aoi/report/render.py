"""DEFT_Loop_Report.html: one jinja2 template, autoescaped, written atomically into the run dir."""

from __future__ import annotations

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


def render_report(run_root: Path) -> Path:
    """Render `<run_root>/DEFT_Loop_Report.html` from what is on disk and return its path.

    Needs only `deft_state.json` (raises InputError when the dir is not a run); any other missing or
    unreadable file leaves its section showing "—"."""
    run = RunLayout(Path(run_root))
    html = render_html(collect(run.root))
    atomic_write_text(run.report_html, html)
    return run.report_html
