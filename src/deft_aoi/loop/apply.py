"""How a committed stage record changes the state. Shared by the engine (live, through loop/commit.py) and the
store (rebuild), so a state rebuilt from disk equals the one written while running."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter

from deft_aoi.loop.state import IterationState, RunState, StageRecord, legacy_updates

_ITERATION_FIELDS = set(IterationState.model_fields) - {"name", "index", "stages", "counts"}
_RUN_FIELDS = {"best_iteration", "stop_reason", "current_iteration"}


@cache
def _field_type(name: str) -> TypeAdapter[Any]:
    annotation = IterationState.model_fields[name].annotation
    assert annotation is not None  # every IterationState field is annotated
    return TypeAdapter(annotation)


def apply_committed(state: RunState, record: dict[str, Any]) -> None:
    it = state.iteration(record["iteration"])
    it.stages[record["stage"]] = StageRecord(
        status="complete",
        started_at=record["started_at"],
        ended_at=record.get("ended_at"),
        duration_sec=record.get("duration_sec"),
        summary=record.get("summary", ""),
        output_dir=record.get("output_dir"),
        inputs=record.get("inputs", {}),
        outputs=record.get("outputs", {}),
        jobs=record.get("jobs") or [],
    )
    it.stage_completed = record["stage"]
    if it.status != "complete":  # the loop-end handoff lands in an iteration the gate already closed
        it.status = "in_progress"
    it.duration_sec = round(sum(s.duration_sec or 0.0 for s in it.stages.values()), 3)
    updates = {**legacy_updates(record["stage"], record.get("outputs")), **(record.get("updates") or {})}
    for key, value in updates.items():
        if key == "counts":
            it.counts.update(value)
        elif key in _ITERATION_FIELDS:
            # Typed as the field says (assignment skips pydantic's validation): a recorded model (the gate's
            # guard) comes back from JSON as a dict.
            setattr(it, key, _field_type(key).validate_python(value))
    for key, value in (record.get("run_updates") or {}).items():
        if key in _RUN_FIELDS:
            setattr(state, key, value)
    if record.get("closes_iteration"):
        it.status = "complete"
    if record.get("closes_run"):
        state.status = "finished"
        state.finished_at = record.get("ended_at")
