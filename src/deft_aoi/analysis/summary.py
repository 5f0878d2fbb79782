"""`iterN_summary.md`: a human summary of one iteration, at most 300 words (CONTRACTS §8)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.analysis.kpi import SECONDARY_RECALL_PCT, significance_words

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


def selection_words(n_pass: int | None, n_defect: int | None, share_permille: int | None,
                    pool_rows: int | None) -> str | None:
    """What the mine stage's selection took: PASS : defect ratio of the added rows and the pool share (None when
    the iteration recorded no selection)."""
    if n_pass is None:
        return None
    n_defect = n_defect or 0
    ratio = f"{n_pass / n_defect:.2f} : 1" if n_defect else "no defects"
    took = "" if share_permille is None else f"; {share_permille / 10:.1f}% of the {pool_rows or 0}-row pool"
    return f"{n_pass} PASS, {n_defect} defect rows added (PASS : defect = {ratio}){took}"


def _ci(interval: tuple[float | None, float | None]) -> str:
    low, high = interval
    return "n/a" if low is None or high is None else f"[{low:.2f}, {high:.2f}]%"


def _setters(items: list[dict[str, object]]) -> str:
    """The lowest-scored defect(s): the first sets the recall-100 % threshold."""
    if not items:
        return "n/a"
    return "; ".join(f"{item.get('label')} row {item.get('row')} (score {float(item.get('score', 0.0)):.4f})"  # type: ignore[arg-type]
                     for item in items[:3])


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
    ci_before: tuple[float | None, float | None] = (None, None),
    ci_after: tuple[float | None, float | None] = (None, None),
    far99_after: float | None = None,
    threshold_defects: list[dict[str, object]] | None = None,
    selection: str | None = None,
    set_aside: int = 0,
    guard: str | None = None,
) -> str:
    """Markdown, ≤ 300 words whatever the inputs (long free text and defect lists are clipped). `set_aside`:
    rows of the training CSV that earlier gates left out of this fine-tune; `guard`: what this gate did
    because the iteration made FAR worse than the best so far (analysis/guard.py)."""
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
        f"- **FAR 95% CI** {_ci(ci_before)} → {_ci(ci_after)}: {significance_words(ci_before, ci_after) or 'n/a'}",
        f"- **FAR@recall{SECONDARY_RECALL_PCT:g}** {_pct(far99_after)}",
        f"- **Threshold set by** {_setters(threshold_defects or [])}",
        f"- **Threshold** (recall {kpi.constraint_pct:g}%): {'n/a' if threshold is None else f'{threshold:.4f}'}",
        f"- **Training rows** {rows_before} + {rows_added} added = {rows_before + rows_added}"
        + (f"; {set_aside} set aside by earlier gates, fine-tuned on {rows_before + rows_added - set_aside}"
           if set_aside else ""),
        f"- **Mined** {mined_real + mined_synthetic} rows: {mined_real} real, {mined_synthetic} synthetic",
        f"- **Targeted defects** {defects}",
    ]
    if selection:
        lines.append(f"- **Selection** {_clip(selection, _FREE_TEXT_WORDS)}")
    if support_note:
        lines.append(f"- **Support** {_clip(support_note, _FREE_TEXT_WORDS)}")
    if guard:
        lines.append(f"- **Gate** {_clip(guard, _FREE_TEXT_WORDS)}")
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
    from deft_aoi.workspace.layout import RunLayout

    path = RunLayout(Path(run_root)).iteration_summary(iteration)
    atomic_write_text(path, text)
    return path
