"""How a committed stage record changes the state. Shared by the engine (live, through loop/commit.py) and the
store (rebuild), so a state rebuilt from disk equals the one written while running."""

from __future__ import annotations

from typing import Any

from deft_aoi.loop.results import RunValues, recorded_checkpoints, values_from_record
from deft_aoi.loop.state import RunState, StageRecord, legacy_updates


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
    # Typed: a key no model declares is refused here (pydantic), never dropped on the way to the state.
    updates = record.get("updates") or {}
    values = values_from_record({**legacy_updates(record["stage"], record.get("outputs")), **updates})
    if record["stage"] == "train":  # its checkpoints are catalog artefacts; an older record returned their paths
        it.recorded_checkpoints = recorded_checkpoints(updates) or {}
    for key in values.model_fields_set:  # only what the stage set: the rest of the iteration stays as it is
        setattr(it, key, it.counts.merged(values.counts) if key == "counts" else getattr(values, key))
    run_values = RunValues.model_validate(record.get("run_updates") or {})
    for key in run_values.model_fields_set:
        setattr(state, key, getattr(run_values, key))
    if record.get("closes_iteration"):
        it.status = "complete"
    if record.get("closes_run"):
        state.status = "finished"
        state.finished_at = record.get("ended_at")
