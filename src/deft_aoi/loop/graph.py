"""The stage graph of CONTRACTS §3: which stage comes next, computed from the state alone."""

from __future__ import annotations

from deft_aoi.loop.state import RunState
from deft_aoi.workspace.iterations import is_baseline, iteration_name, iteration_names

BASELINE_STAGES: tuple[str, ...] = ("stage_synth", "train", "inference", "evaluate", "rca", "gate")
ITERATION_STAGES: tuple[str, ...] = (
    "route", "ingest", "mine", "assemble", "validate", "train", "inference", "evaluate", "rca", "gate",
)
END_STAGE = "handoff"
CONTINUE = "continue"


def stages_of(iteration: str) -> tuple[str, ...]:
    return BASELINE_STAGES if is_baseline(iteration) else ITERATION_STAGES


def next_step(state: RunState) -> tuple[str, str] | None:
    """The first stage not yet complete, walking the graph in order; None when the run is done."""
    if state.status == "finished":
        return None
    for name in iteration_names(state.max_iterations):
        it = state.iterations.get(name)
        done = {s for s, rec in it.stages.items() if rec.status == "complete"} if it else set()
        for stage in stages_of(name):
            if stage not in done:
                return name, stage
        assert it is not None
        if it.decision != CONTINUE:
            return None if END_STAGE in done else (name, END_STAGE)
    return None


def drop_unfinished_stages(state: RunState) -> list[str]:
    """Forget every stage that did not commit (it is redone from scratch) and reopen failed iterations.

    Returns the output dirs those stages may have left, for the caller to remove."""
    leftovers = []
    for it in state.iterations.values():
        for name, rec in list(it.stages.items()):
            if rec.status != "complete":
                if rec.output_dir:
                    leftovers.append(rec.output_dir)
                del it.stages[name]
        if it.status in ("failed", "interrupted"):
            it.status = "in_progress"
    state.status = "running"
    return leftovers


def stage_after(state: RunState, iteration: str, stage: str) -> str:
    """Name of the stage that will run next (for the status line), from the graph alone."""
    order = stages_of(iteration)
    if stage in order[:-1]:
        return order[order.index(stage) + 1]
    if stage == "gate":
        it = state.iterations[iteration]
        return f"{iteration_name(it.index + 1)} route" if it.decision == CONTINUE else END_STAGE
    return "done"
