"""What `deft status` reports, computed from disk only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deft_aoi.loop.artefacts import chosen_checkpoint
from deft_aoi.loop.graph import drop_unfinished_stages, next_step
from deft_aoi.loop.state import Failure, IterationState, RunState
from deft_aoi.loop.store import StateStore
from deft_aoi.workspace.iterations import BASELINE, is_baseline
from deft_aoi.workspace.layout import WORKSPACE_LOCK_FILE, RunLayout

if TYPE_CHECKING:
    from deft_aoi.config import KpiTarget


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
    """Where the handed-off model is: best_model.json, the best iteration's checkpoint and its ONNX export when
    the run made one (finished runs only)."""
    if state.status != "finished":
        return None
    checkpoint = chosen_checkpoint(run, state, state.best_iteration) if state.best_iteration else None
    return {
        "json": str(run.best_model_json) if run.best_model_json.is_file() else None,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "onnx": str(run.best_model_onnx) if run.best_model_onnx.is_file() else None,  # --export onnx
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


def status_words(
    far_pct: float | None, recall_pct: float | None, target: KpiTarget | None, *, unreachable: str | None = None
) -> str | None:
    """Where the KPI stands, in neutral words ("0.4 pp above target"); None when nothing is measured yet."""
    if unreachable:
        return f"KPI not reachable at any threshold: {unreachable}"
    if far_pct is None or target is None:
        return None
    if recall_pct is not None and recall_pct + 1e-9 < target.constraint_pct:
        return f"recall {recall_pct:.4g} % is below the required {target.constraint_pct:g} %"
    gap = far_pct - target.target_pct
    if target.is_met(far_pct, recall_pct if recall_pct is not None else target.constraint_pct):
        return "target met" if gap == 0 else f"target met: {abs(gap):.3g} pp below target"
    if gap == 0:
        return "at the target value (the KPI asks for strictly below)"
    return f"{gap:.3g} pp above target"


def headline_iteration(state: RunState) -> IterationState | None:
    """The iteration a run's result is: the best one, else the latest with a measured KPI."""
    if state.best_iteration and state.best_iteration in state.iterations:
        return state.iterations[state.best_iteration]
    measured = [it for it in state.ordered_iterations() if it.far_pct is not None or it.kpi_report]
    if measured:
        return measured[-1]
    return None


# The gate's decisions that end a run (loop/stages/decision.py records them as the run's stop_reason).
_STOP_WORDS = {"kpi_met": "KPI met", "max_iterations": "max iterations reached"}


def end_words(state: RunState) -> str | None:
    """How the run ended, in the words the report and the end of `deft run` both use; None while it runs.

    The five ends: KPI met, max iterations, hard stop, failed stage, interrupt (Ctrl-C)."""
    failure = state.failure
    where = "" if failure is None or failure.stage is None else f" at {failure.iteration or '—'} · {failure.stage}"
    if state.status == "finished":
        words = _STOP_WORDS.get(state.stop_reason or "", state.stop_reason or "finished")
        if state.stop_reason == "max_iterations":
            words += f" ({state.max_iterations} of {state.max_iterations})"
        return words
    if failure is not None and failure.hard_stop:
        return f"hard stop ({failure.kind}){where}"
    if state.status == "interrupted":
        if failure is not None and failure.kind == "killed":
            return "killed or crashed (no deft process holds the run)"
        return f"interrupted (Ctrl-C){where}"
    if state.status == "failed":
        return f"failed stage{where}" + ("" if failure is None else f" ({failure.kind})")
    return None


def outcome(state: RunState) -> dict[str, Any]:
    """The result of a run as it stands: how it ended, the final FAR (the best iteration's, else the latest
    measured) with its interval, whether the KPI is met, and the change from the baseline."""
    final = headline_iteration(state)
    baseline = state.iterations.get(BASELINE)
    far = None if final is None else final.far_pct
    recall = None if final is None else final.recall_pct
    report = None if final is None else final.kpi_report
    unreachable = None
    if report and report.get("reachable") is False:
        unreachable = str(report.get("unreachable_reason") or "no threshold meets the recall constraint")
    base_far = None if baseline is None else baseline.far_pct
    return {
        "ended": end_words(state),
        "iteration": None if final is None else final.name,
        "far_pct": far,
        "recall_pct": recall,
        "far_ci_pct": kpi_error_bars(report)["far_ci_pct"],
        "kpi_met": state.kpi.is_met(far, recall),
        "kpi_words": status_words(far, recall, state.kpi, unreachable=unreachable),
        "baseline_far_pct": base_far,
        "change_pp": None if far is None or base_far is None else far - base_far,
    }


def outcome_lines(state: RunState) -> list[str]:
    """The end of a run in a few plain lines: how it ended, final FAR ± interval, KPI met or not, change."""
    doc = outcome(state)
    lines = [f"run {state.run_id} ended: {doc['ended'] or state.status}"]
    if doc["far_pct"] is None:
        lines.append(f"final FAR: — (no iteration measured) · KPI not met ({state.kpi_target})")
        return lines
    ci = doc["far_ci_pct"]
    interval = "" if not ci else f" (95% CI {ci[0]:.2f}–{ci[1]:.2f}%)"
    recall = "" if doc["recall_pct"] is None else f" at recall {doc['recall_pct']:.4g}%"
    lines.append(f"final FAR: {doc['far_pct']:.2f}%{interval}{recall} · {doc['iteration']}")
    lines.append(f"KPI {'met' if doc['kpi_met'] else 'not met'} ({doc['kpi_words']}; target {state.kpi_target})")
    if is_baseline(doc["iteration"]) or doc["change_pp"] is None:
        lines.append("change from baseline: none (the baseline is the result)" if is_baseline(doc["iteration"])
                     else "change from baseline: — (baseline not measured)")
    else:
        lines.append(f"change from baseline: {doc['baseline_far_pct']:.2f}% → {doc['far_pct']:.2f}% "
                     f"({doc['change_pp']:+.2f} pp)")
    return lines


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
                "training_rows": it.counts.training_rows if it.counts.total is None else it.counts.total,
                "duration_sec": it.duration_sec,
                **kpi_error_bars(it.kpi_report),
            }
            for it in state.ordered_iterations()
        ],
        "outcome": outcome(state),
        "next_action": next_action(state),
        "failure": state.failure.model_dump() if state.failure else None,
        "last_log": [e.model_dump() for e in log[-5:]],
        "notes": list(store.notes),  # what could not be read and was skipped or rebuilt
    }
