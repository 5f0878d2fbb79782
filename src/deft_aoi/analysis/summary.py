"""`iterN_summary.md`: a human summary of one iteration, at most 300 words (CONTRACTS §8)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deft_aoi.config import KpiTarget

MAX_WORDS = 300
_MAX_DEFECTS = 12
_FREE_TEXT_WORDS = 60


def word_count(text: str) -> int:
    return len(text.split())


def _clip(text: str, words: int) -> str:
    parts = text.split()
    return text.strip() if len(parts) <= words else " ".join(parts[:words]) + " …"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _far_line(far_before: float | None, far_after: float | None) -> str:
    if far_before is not None and far_after is not None:
        delta = far_after - far_before
        return f"{_pct(far_before)} → {_pct(far_after)} ({delta:+.2f} pp)"
    return f"{_pct(far_before)} → {_pct(far_after)}"


def iteration_summary(
    *,
    iteration: str,
    far_before: float | None,
    far_after: float | None,
    threshold: float | None,
    kpi: KpiTarget,
    rows_before: int,
    rows_added: int,
    mined_real: int,
    mined_synthetic: int,
    target_defects: list[str],
    support_note: str | None,
    next_action: str,
) -> str:
    """Markdown, ≤ 300 words whatever the inputs (long free text and defect lists are clipped)."""
    # FAR is read at the threshold that keeps recall at the KPI's floor, so the constraint holds there.
    met = kpi.is_met(far_after, kpi.constraint_pct)
    verdict = "met" if met else ("not measured" if far_after is None else "not met")
    defects = ", ".join(target_defects[:_MAX_DEFECTS]) or "none"
    if len(target_defects) > _MAX_DEFECTS:
        defects += f" (+{len(target_defects) - _MAX_DEFECTS} more)"
    lines = [
        f"# {iteration} summary",
        "",
        f"- **KPI** {kpi.describe()}: **{verdict}**",
        f"- **FAR** {_far_line(far_before, far_after)}",
        f"- **Threshold** (recall {kpi.constraint_pct:g}%): {'n/a' if threshold is None else f'{threshold:.4f}'}",
        f"- **Training rows** {rows_before} + {rows_added} added = {rows_before + rows_added}",
        f"- **Mined** {mined_real + mined_synthetic} rows: {mined_real} real, {mined_synthetic} synthetic",
        f"- **Targeted defects** {defects}",
    ]
    if support_note:
        lines.append(f"- **Support** {_clip(support_note, _FREE_TEXT_WORDS)}")
    lines += ["", f"**Next:** {_clip(next_action, _FREE_TEXT_WORDS)}", ""]
    text = "\n".join(lines)
    if word_count(text) > MAX_WORDS:
        # Only the defect names can still be long (one huge token list); keep the rest intact.
        budget = max(1, MAX_WORDS - (word_count(text) - word_count(defects)))
        text = text.replace(f"- **Targeted defects** {defects}", f"- **Targeted defects** {_clip(defects, budget)}")
    return text


def write_iteration_summary(run_root: Path, iteration: str, text: str) -> Path:
    """`<run>/<iteration>_summary.md`, atomically."""
    from deft_aoi.io_utils import atomic_write_text

    path = Path(run_root) / f"{iteration}_summary.md"
    atomic_write_text(path, text)
    return path
