"""Stage results are typed (loop/results.py): a stage's values and counts refuse unknown keys, a committed record
is applied through the same models, and records / states of older versions still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from deft_aoi.analysis.guard import ExcludedGroup, GuardDecision
from deft_aoi.loop.apply import apply_committed
from deft_aoi.loop.commit import stage_record
from deft_aoi.loop.results import Counts, IterationValues, RunValues
from deft_aoi.loop.stage_contract import StageOutcome
from deft_aoi.loop.state import IterationState
from deft_aoi.loop.store import StateStore
from deft_aoi.workspace.layout import RunLayout

from .test_engine import make_state


def _record(stage: str, **kw: object) -> dict:
    return stage_record(iteration="iter1", stage=stage, started_at="t", ended_at="t", duration_sec=0.0, summary="",
                        output_dir=f"iter1/{stage}", workspace="/w", **kw)  # type: ignore[arg-type]


def test_a_stage_result_with_an_unknown_key_is_refused_where_it_is_returned() -> None:
    with pytest.raises(ValidationError, match="far_pc"):
        StageOutcome(summary="x", updates={"far_pc": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="mined_rael"):
        Counts.model_validate({"mined_real": 1, "mined_rael": 2})
    with pytest.raises(ValidationError, match="best_iter"):
        StageOutcome(summary="x", run_updates={"best_iter": "iter1"})  # type: ignore[arg-type]
    typed = StageOutcome(summary="x", updates={"far_pct": 1.5, "counts": {"total": 3}})  # type: ignore[arg-type]
    assert typed.updates.far_pct == 1.5 and typed.updates.counts.total == 3


def test_a_committed_record_is_applied_typed_and_an_unknown_value_is_not_dropped() -> None:
    run = RunLayout(Path("/nowhere/results/run_1"))
    state = make_state(run, 2)
    apply_committed(state, _record("mine", updates={"counts": {"mined_real": 4, "knn_pool": 9}}))
    apply_committed(state, _record("assemble", updates={"counts": {"total": 12, "delta": 4}}))
    apply_committed(state, _record("evaluate", updates=IterationValues(far_pct=2.5, chosen_checkpoint="latest")
                                   .model_dump(exclude_unset=True), run_updates={"best_iteration": "iter1"}))
    it = state.iterations["iter1"]
    # counts of several stages merge; values a stage did not set stay as they were
    assert it.counts == Counts(mined_real=4, knn_pool=9, total=12, delta=4)
    assert it.far_pct == 2.5 and it.chosen_checkpoint == "latest" and it.threshold is None
    assert state.best_iteration == "iter1"
    with pytest.raises(ValidationError, match="far_pc"):
        apply_committed(state, _record("evaluate", updates={"far_pc": 1.0}))
    with pytest.raises(ValidationError, match="stop_reasn"):
        apply_committed(state, _record("gate", run_updates={"stop_reasn": "kpi_met"}))


def test_the_state_file_keeps_the_counts_a_stage_set_and_nothing_else() -> None:
    it = IterationState(name="iter1", index=1, counts=Counts(total=3))
    assert json.loads(it.model_dump_json())["counts"] == {"total": 3}
    assert set(IterationValues.model_fields) < set(IterationState.model_fields)  # values declared once
    assert RunValues.model_fields.keys() <= {"best_iteration", "stop_reason", "current_iteration"}


def test_states_and_records_of_older_versions_load(tmp_path: Path) -> None:
    """Older versions wrote every mining count with a `knn_` prefix (`knn_selected_pass`...) and kept values
    never read (`train_csv`, `rca_gaps_parquet`): a state file and a stage record holding them still load; the
    retired keys are dropped by name, the rest kept."""
    old = {"name": "iter1", "index": 1, "train_csv": "x.csv",
           "counts": {"knn_selected_pass": 3, "knn_selected": 5, "mined_real": 5}}
    it = IterationState.model_validate(old)
    assert it.counts == Counts(mined_real=5)

    run = RunLayout(tmp_path / "results" / "run_1")
    store = StateStore(run)
    store.write_initial(make_state(run, 1))
    mine = run.root / "iter1" / "mine"
    mine.mkdir(parents=True)
    (mine / ".stage.json").write_text(json.dumps(_record(
        "mine", updates={"counts": {"knn_selected_pass": 3, "mined_real": 5}, "rca_gaps_parquet": "g.parquet"})))
    store.append_log(iteration="iter1", stage="mine", status="ok", summary="", duration_sec=0.0)
    state = store.rebuild()
    assert state.iterations["iter1"].counts == Counts(mined_real=5)
    assert not store.notes


def test_the_gates_guard_is_a_typed_value_that_comes_back_from_its_record() -> None:
    """The guard (analysis/guard.py) travels in the gate's record as JSON and lands in the state as the model;
    a redo that finds the iteration not worse records None, which clears it."""
    guard = GuardDecision(iteration="iter1", action="exclude", far_pct=40.0, best_iteration="baseline",
                          best_far_pct=10.0, rows=3, groups=[ExcludedGroup(source="real", label="PASS",
                                                                           target_label="PASS", n=3)])
    state = make_state(RunLayout(Path("/nowhere/results/run_1")), 2)
    recorded = IterationValues(decision="continue", guard=guard).model_dump(mode="json", exclude_unset=True)
    apply_committed(state, _record("gate", updates=json.loads(json.dumps(recorded))))
    assert state.iterations["iter1"].guard == guard
    apply_committed(state, _record("gate", updates=IterationValues(guard=None).model_dump(exclude_unset=True)))
    assert state.iterations["iter1"].guard is None
    with pytest.raises(ValidationError, match="action"):
        apply_committed(state, _record("gate", updates={"guard": {**recorded["guard"], "action": "shrink"}}))
    assert Counts(set_aside=2).set_aside == 2
