"""What `deft status` reports, computed from disk only."""

from __future__ import annotations

from typing import Any

from deft_aoi.loop.graph import drop_unfinished_stages, next_step
from deft_aoi.loop.state import Failure, RunState
from deft_aoi.loop.store import StateStore
from deft_aoi.workspace.layout import WORKSPACE_LOCK_FILE, RunLayout


def loop_alive(run: RunLayout) -> bool:
    """A deft process holds the run (or its workspace, in the instant before the run lock is taken)."""
    from deft_aoi.loop.lock import is_held

    return is_held(run.lock_file) or is_held(run.root.parent / WORKSPACE_LOCK_FILE)


def effective_state(state: RunState, run: RunLayout) -> RunState:
    """The state as it really stands: "running" with no live process behind it means killed or crashed."""
    if state.status != "running" or loop_alive(run):
        return state
    copy = state.model_copy(deep=True)
    copy.status = "interrupted"
    copy.failure = Failure(kind="killed", message="no deft process is running this run: it was killed or crashed",
                           stage=None, iteration=None, hard_stop=False, fix="`deft resume` continues it")
    return copy


def next_action(state: RunState) -> str | None:
    """What to do next; None once the run has finished (the handoff leaves nothing to do)."""
    if state.status == "finished":
        return None
    if state.failure and state.failure.hard_stop:
        return f"hard stop ({state.failure.kind}): {state.failure.fix or 'fix the cause'}; then start a new run"
    step = next_step(_as_resumable(state))
    if step is None:
        return "none"
    verb = "deft resume" if state.status in ("failed", "interrupted") else "running"
    return f"{step[0]} · {step[1]} ({verb})"


def _as_resumable(state: RunState) -> RunState:
    """Next step as `resume` would see it: unfinished stages count as not done."""
    copy = state.model_copy(deep=True)
    drop_unfinished_stages(copy)
    return copy


def current_stage(state: RunState) -> str | None:
    if state.status == "finished":
        return "finished"
    for it in reversed(state.ordered_iterations()):
        for name, rec in reversed(list(it.stages.items())):
            if rec.status != "complete":
                return f"{it.name} · {name} ({rec.status})"
        if it.stages:
            last = max(it.stages.items(), key=lambda kv: kv[1].started_at)
            return f"{it.name} · {last[0]} (complete)"
    return None


def best_model(state: RunState, run: RunLayout) -> dict[str, str | None] | None:
    """Where the handed-off model is: best_model.json and the best iteration's checkpoint (finished runs only)."""
    if state.status != "finished":
        return None
    best = state.iterations.get(state.best_iteration or "")
    return {
        "json": str(run.best_model_json) if run.best_model_json.is_file() else None,
        "checkpoint": best.best_ckpt_path if best is not None else None,
    }


def kpi_error_bars(report: dict[str, Any] | None) -> dict[str, Any]:
    """The KPI's error bars from an iteration's recorded KPI report (older runs lack them: None/[])."""
    report = report or {}
    low, high = report.get("far_ci_low_pct"), report.get("far_ci_high_pct")
    return {
        "far_ci_pct": None if low is None or high is None else [low, high],
        "far_at_recall99_pct": report.get("far_at_recall99_pct"),
        "threshold_defects": report.get("threshold_defects") or [],
    }


def status_document(run: RunLayout) -> dict[str, Any]:
    store = StateStore(run)
    state = effective_state(store.load(), run)
    log = store.read_log()
    return {
        "run_id": state.run_id,
        "results_dir": str(run.root),
        "status": state.status,
        "stop_reason": state.stop_reason,
        "kpi_target": state.kpi_target,
        "max_iterations": state.max_iterations,
        "current_iteration": state.current_iteration,
        "stage": current_stage(state),
        "best_iteration": state.best_iteration,
        "best_model": best_model(state, run),
        "iterations": [
            {
                "name": it.name,
                "status": it.status,
                "far_pct": it.far_pct,
                "recall_pct": it.recall_pct,
                "threshold": it.threshold,
                "kpi_met": it.kpi_met,
                "training_rows": it.counts.get("total", it.counts.get("training_rows")),
                "duration_sec": it.duration_sec,
                **kpi_error_bars(it.kpi_report),
            }
            for it in state.ordered_iterations()
        ],
        "next_action": next_action(state),
        "failure": state.failure.model_dump() if state.failure else None,
        "last_log": [e.model_dump() for e in log[-5:]],
        "notes": list(store.notes),  # what could not be read and was skipped or rebuilt
    }
