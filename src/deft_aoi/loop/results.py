"""What a stage hands back to the loop besides files, typed: `IterationValues` (the iteration's values a stage
sets), `Counts` (the row counts five stages fill and the gate, report and status read) and `RunValues`.

Each model refuses a key it does not declare (extra="forbid"), so a stage that returns a misspelt or a new value
fails where it returns it, instead of the value being dropped on the way to the state. `IterationState`
(loop/state.py) IS `IterationValues` plus the engine's bookkeeping, so every value is declared once.
Records and states written by older versions are read through `values_from_record` / `known_counts`, which drop
only the keys listed here as retired.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from deft_aoi.analysis.guard import GuardDecision
from deft_aoi.analysis.summary import selection_words


class Counts(BaseModel):
    """Row counts of one iteration, each set by the stage named beside it (None: that stage has not set it)."""

    model_config = ConfigDict(extra="forbid")

    # stage_synth
    synthetic_pairs: int | None = None
    mining_pool_rows: int | None = None
    # route
    mining_targets: int | None = None
    # mine: rows added, then the mining engine's own figures (`knn_` + mining's count names) and the selection's
    mined_real: int | None = None
    mined_synthetic: int | None = None
    mined_total: int | None = None
    pool_excluded: int | None = None
    knn_targets: int | None = None
    knn_pool: int | None = None
    knn_raw: int | None = None
    knn_after_cutoff: int | None = None
    knn_after_history: int | None = None
    knn_backfilled: int | None = None
    knn_after_dedup: int | None = None
    knn_duplicates_removed: int | None = None
    knn_budget: int | None = None
    knn_balance_dropped: int | None = None
    selected: int | None = None
    selected_pass: int | None = None
    selected_defect: int | None = None
    selected_pool_share_permille: int | None = None
    # assemble
    previous_rows: int | None = None
    new_unique: int | None = None
    duplicates: int | None = None
    total: int | None = None
    delta: int | None = None
    set_aside: int | None = None  # rows of the CSV earlier gates left out of this fine-tune (analysis/guard.py)
    # train
    training_rows: int | None = None
    # rca
    suspect_labels: int | None = None
    suspect_sets_threshold: int | None = None
    suspect_training_labels: int | None = None

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the counts some stage set: deft_state.json keeps the shape it had as a plain mapping."""
        return {k: v for k, v in handler(self).items() if v is not None}

    def selection_words(self) -> str | None:
        """The mine stage's selection in words, for the gate's summary and the report."""
        return selection_words(self.selected_pass, self.selected_defect, self.selected_pool_share_permille,
                               self.knn_pool)

    def merged(self, newer: Counts) -> Counts:
        """These counts with every count `newer` sets replacing ours (a stage's counts land on the iteration's)."""
        return self.model_copy(update={k: getattr(newer, k) for k in newer.model_fields_set})


def known_counts(value: Any) -> Any:
    """A counts mapping of an older state or record without the keys no stage writes any more (earlier versions
    wrote every mining count with a `knn_` prefix, `knn_selected_pass` and the like; nothing reads them)."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k in Counts.model_fields}


class IterationValues(BaseModel):
    """The values of an iteration that stages set (StageOutcome.updates) and IterationState holds."""

    model_config = ConfigDict(extra="forbid")

    # Which checkpoint kind (catalog.CHECKPOINT_KINDS) won on FAR: the file is the train stage's catalog artefact
    # of that kind (artefacts.chosen_checkpoint), never a path kept here.
    chosen_checkpoint: str | None = None
    far_pct: float | None = None
    recall_pct: float | None = None
    threshold: float | None = None
    kpi_met: bool = False
    kpi_report: dict[str, Any] | None = None
    kpi_unreachable: bool = False  # RCA found no threshold meeting the recall constraint (the gate stops)
    rca_target_defects: list[str] = Field(default_factory=list)
    decision: str | None = None  # the gate's: kpi_met | max_iterations | continue
    # The gate's protection when this iteration made FAR worse than the best so far (analysis/guard.py): its
    # added rows are left out of later fine-tunes. None: not worse, or the guard is off.
    guard: GuardDecision | None = None
    counts: Counts = Field(default_factory=Counts)


class RunValues(BaseModel):
    """The run's values a stage sets (StageOutcome.run_updates)."""

    model_config = ConfigDict(extra="forbid")

    best_iteration: str | None = None
    stop_reason: str | None = None
    current_iteration: int | None = None  # never set by a stage today; accepted in records that carry it


# IterationState fields of older versions that were written and never read: dropped when a record still has them.
# `best_ckpt_path` was always `checkpoints[chosen_checkpoint]`: derived now (artefacts.chosen_checkpoint).
RETIRED_VALUES = frozenset({"rca_gaps_parquet", "rca_threshold", "routing_mining_gaps", "routing_anomalygen_gaps",
                            "train_csv", "best_ckpt_path"})
# Older train stages returned their checkpoints as paths (kind → path) under this key, before they were catalog
# artefacts: kept as IterationState.recorded_checkpoints, which the catalog's reader falls back to.
LEGACY_CHECKPOINTS = "checkpoints"


def recorded_checkpoints(values: dict[str, Any]) -> dict[str, str] | None:
    """The checkpoint paths an older state or record holds (kind → path); None when it holds none."""
    value = values.get(LEGACY_CHECKPOINTS)
    return {str(k): str(v) for k, v in value.items() if v} if isinstance(value, dict) else None


def values_from_record(updates: dict[str, Any]) -> IterationValues:
    """A committed record's `updates`, typed: retired keys and retired counts dropped, anything else unknown refused
    (the checkpoint paths of older train records are read by `recorded_checkpoints`)."""
    kept = {k: v for k, v in updates.items() if k not in RETIRED_VALUES and k != LEGACY_CHECKPOINTS}
    if "counts" in kept:
        kept["counts"] = known_counts(kept["counts"])
    return IterationValues.model_validate(kept)
