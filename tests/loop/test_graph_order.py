"""The stage order of loop/graph.py checked against the stages' declared reads and writes (as DVC and Kedro derive
theirs): every artefact a stage reads from its own iteration is written by a stage that runs before it; one it
reads from an earlier iteration (`reads_earlier`) is written by some stage of the graph. Two stages with no data
between them (validate and train both read the assembled CSV) keep the order written in graph.py: validation gates
training, a rule no declaration expresses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deft_aoi.loop.graph import BASELINE_STAGES, END_STAGE, ITERATION_STAGES
from deft_aoi.loop.stages import build_stages
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS, STAGE_DIRS, artefact


def order_problems(stages: Mapping[str, object], baseline: Sequence[str], iteration: Sequence[str],
                   end: str) -> list[str]:
    """Reads the order cannot satisfy, as "<stage> reads <key> ...": empty when the order fits the declarations."""
    problems = []
    every = {*baseline, *iteration, end}
    once = set(baseline) - set(iteration)  # run once, in the baseline (the staged pool): every iteration sees it
    for order, what in ((baseline, "baseline"), (iteration, "iteration"), ([*iteration, end], "loop end")):
        for i, name in enumerate(order):
            stage = stages[name]
            earlier = set(getattr(stage, "reads_earlier", ()))
            for key in getattr(stage, "reads", ()):
                writer = artefact(key).writer
                if writer not in STAGE_DIRS:  # written at the run's start or by the engine
                    continue
                if key in earlier or name == end:
                    if writer not in every:
                        problems.append(f"{name} reads {key} from an earlier iteration; no stage writes it")
                elif what == "baseline" and writer not in baseline:
                    continue  # the baseline reads the workspace's file in its place (the customer's train CSV)
                elif writer not in order[:i] and writer not in once:
                    problems.append(f"{name} ({what}) reads {key} of its own iteration, written by {writer}, "
                                    "which does not run before it")
            assert earlier <= set(getattr(stage, "reads", ())), f"{name}: reads_earlier must be among its reads"
    return problems


def test_the_stage_order_fits_the_declared_reads_and_writes() -> None:
    assert order_problems(build_stages(), BASELINE_STAGES, ITERATION_STAGES, END_STAGE) == []


def test_every_stage_of_the_graph_is_built_and_every_built_stage_is_in_the_graph() -> None:
    assert set(build_stages()) == {*BASELINE_STAGES, *ITERATION_STAGES, END_STAGE}


def test_an_order_that_reads_before_the_write_is_reported() -> None:
    stages = build_stages()
    swapped = list(ITERATION_STAGES)
    a, b = swapped.index("assemble"), swapped.index("train")
    swapped[a], swapped[b] = swapped[b], swapped[a]
    problems = order_problems(stages, BASELINE_STAGES, swapped, END_STAGE)
    assert any(p.startswith("train (iteration) reads assemble.train_csv") for p in problems), problems
    # the route stage's read of the previous RCA is an earlier-iteration read; undeclared as such, it is reported
    route = stages["route"]
    route.reads_earlier = ()  # type: ignore[misc]
    try:
        problems = order_problems(stages, BASELINE_STAGES, ITERATION_STAGES, END_STAGE)
    finally:
        del route.reads_earlier  # back to the class's declaration
    assert any(p.startswith("route (iteration) reads rca.kpi_gaps") for p in problems), problems


def test_the_checkpoints_order_train_before_their_readers() -> None:
    """The checkpoints are catalog artefacts: the graph's order is checked against their writer and readers
    too. Inference before train (in the baseline or an iteration) is reported; the fine-tune's read of an
    earlier iteration's checkpoint is one only because it is declared as such."""
    stages = build_stages()
    readers = {name for name, stage in stages.items() if set(CHECKPOINT_KEYS) <= set(stage.reads)}
    assert readers == {"train", "inference", "evaluate", "rca", "handoff"}
    assert set(CHECKPOINT_KEYS) <= set(stages["train"].writes)
    for order, what in ((BASELINE_STAGES, "baseline"), (ITERATION_STAGES, "iteration")):
        swapped = list(order)
        a, b = swapped.index("train"), swapped.index("inference")
        swapped[a], swapped[b] = swapped[b], swapped[a]
        baseline, iteration = (swapped, ITERATION_STAGES) if what == "baseline" else (BASELINE_STAGES, swapped)
        problems = order_problems(stages, baseline, iteration, END_STAGE)
        assert f"inference ({what}) reads train.best_val of its own iteration, written by train, which does not " \
               "run before it" in problems, problems
    train = stages["train"]
    train.reads_earlier = ()  # type: ignore[misc]
    try:
        problems = order_problems(stages, BASELINE_STAGES, ITERATION_STAGES, END_STAGE)
    finally:
        del train.reads_earlier
    assert any(p.startswith("train (iteration) reads train.best_far") for p in problems), problems
