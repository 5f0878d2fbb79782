"""The gate that protects (issue 25), pure: when an iteration makes FAR@recall100 worse than the best so far,
the rows it added are left out of every later fine-tune set.

Why exclusion, not deletion or down-weighting: CONTRACTS §3.5 keeps the assembled training CSV monotonic
(every earlier row kept; a smaller assembly is a `silent_drop` hard stop), so the CSV's history stays whole
and the exclusion is a filter between it and the train job (`analysis/assembly.py: set_aside_by`). TAO's
ChangeNet reads a 14-column CSV with no per-row weight, so down-weighting could not be expressed on the docker
backend; an exclusion works on every backend alike.

Why the whole iteration's additions, grouped: one fine-tune per iteration is one experiment, so which of
its groups (source, label, label of the target that pulled them) moved FAR cannot be told apart from it
alone; the groups are reported so a person sees what was set aside. The next iteration then fine-tunes
from the best checkpoint (`finetune_from` best) on the best iteration's rows plus fresh ones, with targets
from the best model's RCA, instead of building on the worse model. Rows set aside are never mined again
(the mined ledger keeps them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, cast

from pydantic import BaseModel, Field

from deft_aoi.analysis.kpi import select_best
from deft_aoi.workspace.changenet_csv import normalise_labels

# The recorded decision is part of the loop's state (loop/results.py), which loads without pandas: this module
# only types frames, and the one function that builds a frame from keys lives with the assembly.
if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.config import KpiTarget

GuardAction = Literal["exclude"]
NO_TARGET = "—"  # a row mined for no known target (a control arm, an older run)


class ExcludedGroup(BaseModel):
    """Rows an iteration added, by where they came from and what pulled them in."""

    source: str  # real (mining pool) | synthetic
    label: str
    target_label: str
    n: int


class GuardDecision(BaseModel):
    """What the gate did about an iteration that made FAR worse than the best so far (recorded in the state)."""

    iteration: str  # the worse one
    action: GuardAction
    far_pct: float | None  # None: it missed the recall constraint
    best_iteration: str
    best_far_pct: float
    rows: int  # rows it added, now left out of later fine-tunes
    groups: list[ExcludedGroup] = Field(default_factory=list)

    def words(self) -> str:
        far = "missed the recall constraint" if self.far_pct is None else f"FAR {self.far_pct:.2f}%"
        return (f"{self.iteration} made FAR worse than the best so far ({far} vs {self.best_far_pct:.2f}% at "
                f"{self.best_iteration}): its {self.rows} added row(s) are left out of later fine-tunes, which "
                f"start from {self.best_iteration}'s checkpoint and RCA")


def best_before(candidates: Sequence[tuple[str, float | None, float | None]], kpi: KpiTarget
                ) -> tuple[str, float] | None:
    """(name, FAR) of the best of the earlier iterations (name, far_pct, recall_pct): lowest FAR among
    those meeting the recall constraint, the earliest on a tie; None when none does."""
    best = select_best(candidates, kpi)
    if best is None:
        return None
    far = next(f for n, f, _ in candidates if n == best)
    assert far is not None  # select_best only picks a candidate with a FAR
    return best, far


def is_worse(far_pct: float | None, recall_pct: float | None, best_far_pct: float, kpi: KpiTarget) -> bool:
    """Worse than the best so far: a higher FAR, or the recall constraint missed (no FAR to compare)."""
    if far_pct is None or recall_pct is None or recall_pct + 1e-9 < kpi.constraint_pct:
        return True
    return far_pct > best_far_pct


def group_rows(added: pd.DataFrame) -> list[ExcludedGroup]:
    """`added` (columns source, label, target_label) counted by those three, largest group first."""
    if added.empty:
        return []
    frame = added.assign(label=normalise_labels(added["label"].astype(str)),
                         target_label=added["target_label"].fillna(NO_TARGET).astype(str))
    counts = frame.groupby(["source", "label", "target_label"]).size()
    # Grouped by three columns, every key is a 3-tuple (pandas-stubs types a key as any Hashable).
    keyed = [(cast(tuple[str, str, str], k), int(n)) for k, n in counts.items()]
    return [ExcludedGroup(source=str(k[0]), label=str(k[1]), target_label=str(k[2]), n=n)
            for k, n in sorted(keyed, key=lambda kn: (-kn[1], kn[0]))]


def decide_guard(iteration: str, far_pct: float | None, recall_pct: float | None,
                 earlier: Sequence[tuple[str, float | None, float | None]], added: pd.DataFrame,
                 kpi: KpiTarget) -> GuardDecision | None:
    """The gate's protection for `iteration`: None when it is not worse than the best of `earlier` (or no
    earlier iteration has a FAR to compare with); else an exclusion of every row it added (`added`: one row
    each, columns source, label, target_label)."""
    best = best_before(earlier, kpi)
    if best is None or not is_worse(far_pct, recall_pct, best[1], kpi):
        return None
    return GuardDecision(iteration=iteration, action="exclude", far_pct=far_pct, best_iteration=best[0],
                         best_far_pct=best[1], rows=len(added), groups=group_rows(added))

