"""The engine's ordering, skipping, stopping and commit rules, with stand-in stages (no backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deft_aoi.config import resolve_config
from deft_aoi.errors import HardStop, Interrupted, StageFailed
from deft_aoi.loop.engine import Engine
from deft_aoi.loop.graph import BASELINE_STAGES, END_STAGE, ITERATION_STAGES, next_step
from deft_aoi.loop.lock import LockHeld, exclusive_lock
from deft_aoi.loop.stage_contract import LoopServices, StageContext, StageOutcome
from deft_aoi.loop.state import MiningFilterConfig, RunConfigRecord, RunState
from deft_aoi.loop.store import StateStore
from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout


class FakeStage:
    """Writes one file; FAR falls by 10 points per iteration; can be told to fail once."""

    def __init__(self, name: str, calls: list, fail: dict) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail

    def output_dir(self, ctx: StageContext) -> str:
        return f"{ctx.iteration}/{self.name}" if self.name != END_STAGE else "handoff"

    def run(self, ctx: StageContext) -> StageOutcome:
        self.calls.append((ctx.iteration, self.name))
        (ctx.out / "out.txt").write_text(f"{ctx.iteration}/{self.name}")
        key = (ctx.iteration, self.name)
        if key in self.fail:
            exc = self.fail.pop(key)
            raise exc
        updates: dict = {}
        if self.name == "evaluate":
            far = max(0.0, 40.0 - 10.0 * ctx.index)
            updates = {"far_pct": far, "recall_pct": 100.0, "threshold": 0.5, "kpi_met": far < ctx.state.kpi_met_below}
        if self.name == "gate":
            it = ctx.state.iterations[ctx.iteration]
            decision = "kpi_met" if it.kpi_met else ("max_iterations" if ctx.index >= ctx.max_iterations
                                                     else "continue")
            return StageOutcome(summary=decision, updates={"decision": decision}, closes_iteration=True,
                                run_updates={} if decision == "continue" else {"stop_reason": decision})
        return StageOutcome(summary=f"{self.name} done", updates=updates,
                            closes_run=self.name == END_STAGE)


def make_state(run: RunLayout, max_iterations: int) -> RunState:
    record = RunConfigRecord(specs_file="s", train_csv="t", validation_csv="v", kpi_csv="k", images_dir="i",
                             train_container="c", backend="fake", num_gpus=0, batch_size=4, num_epochs=1, seed=0,
                             top_k_per_label=5, mining_engine="builtin", encoder="builtin",
                             mining_filter=MiningFilterConfig(top_k_per_target=5, min_similarity=0.9))
    return RunState(run_id=run.run_id, started_at="2026-01-01T00:00:00Z", workspace=str(run.root.parent),
                    kpi_target="FAR<5%@recall=100%", results_dir=str(run.root), max_iterations=max_iterations,
                    config=record)


def make_engine(tmp_path: Path, max_iterations: int = 3, kpi_below: float = 5.0, fail: dict | None = None):
    run = RunLayout(tmp_path / "results" / "run_20260101_000000")
    store = StateStore(run)
    state = make_state(run, max_iterations)
    store.write_initial(state)
    RunState.kpi_met_below = kpi_below  # type: ignore[attr-defined] - test-only knob read by FakeStage
    calls: list = []
    fail = fail if fail is not None else {}
    names = set(BASELINE_STAGES) | set(ITERATION_STAGES) | {END_STAGE}
    stages = {n: FakeStage(n, calls, fail) for n in names}
    config = resolve_config({"backend": "fake", "kpi": "FAR<5%@recall=100%"}, {})
    services = LoopServices(workspace=WorkspaceLayout(tmp_path), run=run, spec=None,  # type: ignore[arg-type]
                            config=config, kpi=config.kpi_target, runner_factory=lambda: None)  # type: ignore
    return Engine(services, stages, store), store, state, calls


def test_full_graph_order_and_stop_at_max_iterations(tmp_path: Path) -> None:
    engine, store, state, calls = make_engine(tmp_path, max_iterations=2, kpi_below=-1)
    state = engine.run(state)
    expected = [("baseline", s) for s in BASELINE_STAGES]
    for k in (1, 2):
        expected += [(f"iter{k}", s) for s in ITERATION_STAGES]
    expected.append(("iter2", END_STAGE))
    assert calls == expected
    assert state.status == "finished" and state.stop_reason == "max_iterations"
    log = store.read_log()
    assert [(e.iter, e.stage) for e in log] == expected
    assert [e.seq for e in log] == list(range(1, len(expected) + 1))
    assert (tmp_path / "results/run_20260101_000000/iter1/mine/out.txt").read_text() == "iter1/mine"


def test_kpi_met_stops_early(tmp_path: Path) -> None:
    engine, _, state, calls = make_engine(tmp_path, max_iterations=5, kpi_below=25)  # iter2 FAR 20 < 25
    state = engine.run(state)
    assert state.stop_reason == "kpi_met"
    assert calls[-1] == ("iter2", END_STAGE)
    assert not any(it == "iter3" for it, _ in calls)


def test_failed_stage_is_redone_and_completed_stages_are_not(tmp_path: Path) -> None:
    engine, store, state, calls = make_engine(tmp_path, max_iterations=1, kpi_below=-1,
                                              fail={("iter1", "mine"): StageFailed("backend died")})
    with pytest.raises(StageFailed):
        engine.run(state)
    assert state.status == "failed" and not state.failure.hard_stop
    assert state.iterations["iter1"].stages["mine"].status == "failed"
    assert store.read_log()[-1].status == "error"
    reloaded = store.load()
    before = list(calls)
    state = engine.run(engine.reconcile(reloaded))
    redone = calls[len(before):]
    assert redone[0] == ("iter1", "mine")
    assert ("baseline", "train") not in redone
    oks = [(e.iter, e.stage) for e in store.read_log() if e.status == "ok"]
    assert len(oks) == len(set(oks)), "exactly one ok entry per completed stage"
    assert state.status == "finished"


def test_hard_stop_records_failure_and_keeps_outputs(tmp_path: Path) -> None:
    engine, store, state, _ = make_engine(tmp_path, max_iterations=1,
                                          fail={("iter1", "validate"): HardStop("leakage", "row 3 leaked")})
    with pytest.raises(HardStop):
        engine.run(state)
    saved = json.loads(store.run.state_file.read_text())
    assert saved["status"] == "failed"
    assert saved["failure"]["hard_stop"] is True and saved["failure"]["kind"] == "leakage"
    assert (store.run.root / "iter1/validate/out.txt").exists()


def test_crash_between_commit_and_log_is_reconciled(tmp_path: Path) -> None:
    engine, store, state, _ = make_engine(tmp_path, max_iterations=1, kpi_below=-1)
    engine.run(state)
    lines = store.run.log_file.read_text().splitlines(keepends=True)
    store.run.log_file.write_text("".join(lines[:-2]) + lines[-2][:10])  # lose one entry, tear the next
    state = store.load()
    engine.reconcile(state)
    oks = [(e.iter, e.stage) for e in store.read_log() if e.status == "ok"]
    assert len(oks) == len(set(oks)) == len(lines)


def test_state_rebuilt_from_log_matches(tmp_path: Path) -> None:
    engine, store, state, _ = make_engine(tmp_path, max_iterations=2, kpi_below=-1)
    state = engine.run(state)
    store.run.state_file.unlink()
    rebuilt = store.load()
    assert rebuilt.status == "finished"
    for name, it in state.iterations.items():
        assert rebuilt.iterations[name].far_pct == it.far_pct
        assert set(rebuilt.iterations[name].stages) == set(it.stages)


def test_next_step_on_empty_state(tmp_path: Path) -> None:
    state = make_state(RunLayout(tmp_path / "run_x"), 3)
    assert next_step(state) == ("baseline", BASELINE_STAGES[0])


def test_lock_refuses_second_holder_naming_pid(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with exclusive_lock(lock, "run A"), pytest.raises(LockHeld, match=r"pid \d+"), exclusive_lock(lock, "run A"):
        pass
    with exclusive_lock(lock, "run A"):  # released: taken again
        pass


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "7"])
def test_lock_whose_file_holds_foreign_json_is_still_a_clear_refusal(tmp_path: Path, content: str) -> None:
    """The holder's note is read for the message only: JSON that is not an object names no pid, no traceback."""
    import fcntl
    import os

    lock = tmp_path / ".lock"
    lock.write_text(content, encoding="utf-8")
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts as another process would
        with pytest.raises(LockHeld, match=r"pid \?"), exclusive_lock(lock, "run A"):
            pass
    finally:
        os.close(fd)


def test_interrupt_from_a_runner_marks_the_stage_interrupted(tmp_path: Path) -> None:
    engine, store, state, _ = make_engine(tmp_path, max_iterations=1,
                                          fail={("baseline", "train"): Interrupted("container stopped")})
    with pytest.raises(Interrupted):
        engine.run(state)
    saved = store.load()
    assert saved.status == "interrupted"
    assert saved.iterations["baseline"].stages["train"].status == "interrupted"
    assert saved.failure is not None and not saved.failure.hard_stop
