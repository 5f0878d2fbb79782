"""Small inline SVG charts, hand-written so reports stay self-contained and need no plotting library.

Every function returns a complete `<svg>` document as a string; output is deterministic for equal input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import pandas as pd

PALETTE = ("#2b7bb9", "#d9534f", "#f0ad4e", "#5cb85c", "#8e44ad", "#16a085", "#7f8c8d", "#c0392b")
PASS_COLOUR = "#2b7bb9"
# Big sweeps (one row per distinct score) are thinned to this many vertices; the curve looks the same.
MAX_POINTS = 2000
N_BINS = 40


@dataclass(frozen=True)
class _Canvas:
    """Pixel geometry of one chart: the plot area sits inside the margins."""

    width: int = 560
    height: int = 300
    left: int = 56
    right: int = 64
    top: int = 40
    bottom: int = 44

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # pixel row of the plot's bottom edge
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _nice_step(span: float, n: int = 5) -> float:
    """A 1-2-2.5-5 × 10^k step giving about n intervals over span (round tick labels)."""
    raw = span / n if span > 0 else 1.0
    power: float = 10 ** math.floor(math.log10(raw))  # int ** int is typed Any (a negative power is a float)
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _nice_max(value: float) -> float:
    step = _nice_step(value)
    return max(step, math.ceil(value / step - 1e-9) * step)


def _frame(c: _Canvas, title: str, x_label: str, y_label: str, y2_label: str | None = None) -> list[str]:
    mid_y = (c.y0 + c.y1) / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {c.width} {c.height}" width="{c.width}" '
        f'height="{c.height}" font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{c.x0}" y="{c.y1}" width="{c.x1 - c.x0}" height="{c.y0 - c.y1}" fill="#fff" stroke="#999"/>',
        f'<text x="{c.width / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<text x="{(c.x0 + c.x1) / 2}" y="{c.height - 8}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="14" y="{mid_y}" text-anchor="middle" transform="rotate(-90 14 {mid_y})">{escape(y_label)}</text>',
    ]
    if y2_label:
        x2 = c.x1 + 50
        parts.append(
            f'<text x="{x2}" y="{mid_y}" text-anchor="middle" '
            f'transform="rotate(90 {x2} {mid_y})">{escape(y2_label)}</text>'
        )
    return parts


class _Axis:
    """Maps data values onto pixel positions of one axis; ticks every `step` from lo."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, step: float | None = None) -> None:
        if not hi > lo:
            hi = lo + 1.0
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1
        self.step = step or (hi - lo) / 5

    def __call__(self, value: float) -> float:
        return round(self.p0 + (value - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0), 2)

    def ticks(self) -> list[float]:
        n = round((self.hi - self.lo) / self.step)
        return [self.lo + self.step * i for i in range(n + 1)]


def _x_ticks(parts: list[str], c: _Canvas, ax: _Axis, fmt: str = "{:g}") -> None:
    for v in ax.ticks():
        x = ax(v)
        parts.append(f'<line x1="{x}" y1="{c.y0}" x2="{x}" y2="{c.y0 + 4}" stroke="#999"/>')
        parts.append(f'<text x="{x}" y="{c.y0 + 16}" text-anchor="middle">{fmt.format(v)}</text>')


def _y_ticks(parts: list[str], c: _Canvas, ay: _Axis, *, right: bool = False, fmt: str = "{:g}") -> None:
    for v in ay.ticks():
        y = ay(v)
        if right:
            parts.append(f'<text x="{c.x1 + 6}" y="{y + 4}" text-anchor="start">{fmt.format(v)}</text>')
        else:
            parts.append(f'<line x1="{c.x0}" y1="{y}" x2="{c.x1}" y2="{y}" stroke="#eee"/>')
            parts.append(f'<text x="{c.x0 - 6}" y="{y + 4}" text-anchor="end">{fmt.format(v)}</text>')


def _legend(parts: list[str], entries: Sequence[tuple[str, str]], x: float, y: float, *, vertical: bool) -> None:
    """Swatches in the margin (never over the data): a column, or a row that advances by label length."""
    for name, colour in entries:
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}">{escape(name)}</text>')
        if vertical:
            y += 15
        else:
            x += 30 + 6.5 * len(name)


def score_histogram_svg(df: pd.DataFrame, threshold: float | None) -> str:
    """Score histograms, one outline per label (PASS filled), with the KPI threshold as a dashed line.

    Counts are shown as a share of each label's rows so a rare defect type is as visible as PASS.
    """
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import PASS_LABEL, normalise_labels

    c = _Canvas(width=700, right=170, top=28)
    labels = normalise_labels(df["label"]) if len(df) else pd.Series([], dtype=str)
    label_arr = labels.to_numpy()
    scores = pd.to_numeric(df["siamese_score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(scores)
    parts = _frame(c, "Score histogram per label", "siamese_score", "share of label's rows (%)")
    lo = float(min(0.0, scores[finite].min())) if finite.any() else 0.0
    hi = float(max(1.0, scores[finite].max())) if finite.any() else 1.0
    edges = np.linspace(lo, hi, N_BINS + 1)
    names = sorted(set(label_arr[finite]), key=lambda n: (n != PASS_LABEL, n))
    shares = {}
    for name in names:
        sel = finite & (label_arr == name)
        counts, _ = np.histogram(scores[sel], bins=edges)
        shares[name] = 100.0 * counts / max(int(sel.sum()), 1)
    y_max = max((float(v.max()) for v in shares.values()), default=0.0)
    ax = _Axis(lo, hi, c.x0, c.x1)
    top = _nice_max(max(y_max, 1.0))
    ay = _Axis(0.0, top, c.y0, c.y1, step=_nice_step(top))
    _x_ticks(parts, c, ax)
    _y_ticks(parts, c, ay)
    legend = []
    defect_colours = iter(PALETTE[1:] * (1 + len(names) // (len(PALETTE) - 1)))
    for name in names:
        is_pass = name == PASS_LABEL
        colour = PASS_COLOUR if is_pass else next(defect_colours)
        pts = [f"{ax(edges[0])},{ay(0)}"]
        for j, share in enumerate(shares[name]):
            pts.append(f"{ax(edges[j])},{ay(share)}")
            pts.append(f"{ax(edges[j + 1])},{ay(share)}")
        pts.append(f"{ax(edges[-1])},{ay(0)}")
        fill = 0.25 if is_pass else 0.04
        parts.append(
            f'<polyline points="{" ".join(pts)}" fill="{colour}" fill-opacity="{fill}" stroke="{colour}" '
            f'stroke-width="{2 if is_pass else 1.2}"><title>{escape(name)}</title></polyline>'
        )
        legend.append((f"{name} (n={int((label_arr == name).sum())})", colour))
    if threshold is not None and math.isfinite(threshold):
        x = ax(min(max(threshold, lo), hi))
        shown = 0.0 if abs(threshold) < 1e-12 else threshold  # "just below 0" reads as 0
        parts.append(f'<line x1="{x}" y1="{c.y1}" x2="{x}" y2="{c.y0}" stroke="#333" stroke-dasharray="5,3"/>')
        parts.append(f'<text x="{x}" y="{c.y1 - 4}" text-anchor="middle">threshold {shown:.4g}</text>')
    _legend(parts, legend, c.x1 + 24, c.y1 + 10, vertical=True)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _thin(n: int) -> list[int]:
    if n <= MAX_POINTS:
        return list(range(n))
    step = (n - 1) / (MAX_POINTS - 1)
    return sorted({round(i * step) for i in range(MAX_POINTS)} | {n - 1})


def far_recall_svg(sweep: pd.DataFrame) -> str:
    """Recall (y) against FAR (x) over every threshold of a `threshold_sweep` frame (an ROC curve in %)."""
    import numpy as np

    c = _Canvas(top=28)
    parts = _frame(c, "FAR vs recall over thresholds", "FAR (%)", "recall (%)")
    ax = _Axis(0.0, 100.0, c.x0, c.x1, step=20.0)
    ay = _Axis(0.0, 100.0, c.y0, c.y1, step=20.0)
    _x_ticks(parts, c, ax)
    _y_ticks(parts, c, ay)
    far = sweep["far"].to_numpy(dtype=np.float64) if len(sweep) else np.empty(0)
    recall = sweep["recall"].to_numpy(dtype=np.float64) if len(sweep) else np.empty(0)
    ok = np.isfinite(far) & np.isfinite(recall)
    far, recall = far[ok], recall[ok]
    if far.size:
        pts = " ".join(f"{ax(far[i])},{ay(recall[i])}" for i in _thin(far.size))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{PASS_COLOUR}" stroke-width="2"/>')
        full = recall >= 100.0
        if full.any():
            # Lowest FAR at full recall = the highest threshold catching every defect (any row order).
            best = float(far[full].min())
            x, y = ax(best), ay(100.0)
            anchor, dx = ("end", -8) if best > 60 else ("start", 8)
            parts.append(f'<circle cx="{x}" cy="{y}" r="4" fill="#d9534f"/>')
            parts.append(
                f'<text x="{x + dx}" y="{y + 16}" text-anchor="{anchor}">FAR@recall100 = {_fmt(best)}%</text>'
            )
    else:
        parts.append(
            f'<text x="{(c.x0 + c.x1) / 2}" y="{(c.y0 + c.y1) / 2}" text-anchor="middle">'
            "undefined: the set needs both PASS and NO_PASS rows</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _series(
    parts: list[str], points: Sequence[tuple[str, float | None, float | None]], index: int, ax: _Axis,
    ay: _Axis, colour: str, dash: str, unit: str,
) -> None:
    """Dots for every defined value, lines between consecutive ones; a None breaks the line."""
    segments: list[list[str]] = [[]]
    for i, point in enumerate(points):
        value = cast(float | None, point[index])  # `index` picks one of the two value columns, never the name
        if value is None or not math.isfinite(value):
            segments.append([])
            continue
        segments[-1].append(f"{ax(i)},{ay(value)}")
        parts.append(
            f'<circle cx="{ax(i)}" cy="{ay(value)}" r="3.5" fill="{colour}">'
            f"<title>{escape(point[0])}: {value:.3g}{unit}</title></circle>"
        )
    for seg in segments:
        if len(seg) > 1:
            parts.append(
                f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )


def trend_svg(points: Sequence[tuple[str, float | None, float | None]], target: float | None) -> str:
    """FAR % (left axis, solid) and threshold (right axis, dashed) per iteration, with the FAR target line.

    `points` are (iteration name, far_pct, threshold); None values leave a gap in that series.
    """
    c = _Canvas()
    parts = _frame(c, "FAR and threshold per iteration", "iteration", "FAR (%)", "threshold")
    fars = [p[1] for p in points if p[1] is not None and math.isfinite(p[1])]
    ths = [p[2] for p in points if p[2] is not None and math.isfinite(p[2])]
    far_top = _nice_max(max([*fars, target if target is not None and math.isfinite(target) else 0.0, 1.0]))
    th_lo = min([*ths, 0.0])
    th_hi = max([*ths, 1.0])
    n = len(points)
    ax = _Axis(-0.5, n - 0.5 if n else 0.5, c.x0, c.x1)
    ay = _Axis(0.0, far_top, c.y0, c.y1, step=_nice_step(far_top))
    ay2 = _Axis(th_lo, th_hi, c.y0, c.y1)
    _y_ticks(parts, c, ay)
    _y_ticks(parts, c, ay2, right=True, fmt="{:.2f}")
    for i, (name, _, _) in enumerate(points):
        parts.append(f'<text x="{ax(i)}" y="{c.y0 + 16}" text-anchor="middle">{escape(name)}</text>')
    if target is not None and math.isfinite(target):
        y = ay(target)
        parts.append(
            f'<line x1="{c.x0}" y1="{y}" x2="{c.x1}" y2="{y}" stroke="#5cb85c" stroke-dasharray="6,3" '
            'stroke-width="1.5"/>'
        )
        parts.append(
            f'<text x="{c.x1 - 4}" y="{y - 4}" text-anchor="end" fill="#3c763d">target {target:g}%</text>'
        )
    _series(parts, points, 1, ax, ay, "#d9534f", "", "%")
    _series(parts, points, 2, ax, ay2, "#2b7bb9", ' stroke-dasharray="4,3"', "")
    _legend(parts, [("FAR %", "#d9534f"), ("threshold", "#2b7bb9")], c.x0, c.y1 - 8, vertical=False)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
