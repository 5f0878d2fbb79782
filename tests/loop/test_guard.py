"""The gate that protects (issue 25), end to end on the fake backend: an iteration forced worse than the best
so far is not built on — its added rows leave the next fine-tune set (the assembled CSV stays monotonic), the
next iteration mines for the best iteration's targets, the report and the summaries say so, and a resume
across the decision reproduces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from deft_aoi.api import Loop
from deft_aoi.loop.stage_contract import StageContext, StageOutcome
from deft_aoi.loop.stages.model import EvaluateStage

pytestmark = pytest.mark.slow

WORSE_BY = 40.0  # pp added to iter1's FAR: worse than the baseline whatever the fake model scores


class WorseEvaluate(EvaluateStage):
    """The real evaluate stage, with `iteration`'s FAR raised: the loop sees an iteration that made FAR worse."""

    def __init__(self, iteration: str = "iter1") -> None:
        self.iteration = iteration

    def run(self, ctx: StageContext) -> StageOutcome:
        outcome = super().run(ctx)
        if ctx.iteration == self.iteration and outcome.updates.far_pct is not None:
            outcome.updates.far_pct = min(100.0, outcome.updates.far_pct + WORSE_BY)
            outcome.run_updates.best_iteration = None if ctx.state.best_iteration is None else "baseline"
        return outcome


def _loop(ws: Path, **settings: Any) -> Loop:
    loop = Loop(ws, render_report=True, backend="fake", max_iterations=2, num_epochs=2, seed=1,
                kpi="FAR<=0%@recall=100%", **settings)
    return loop.with_stage(WorseEvaluate())


def _run(ws: Path, **settings: Any) -> Path:
    loop = _loop(ws, **settings)
    report, config = loop.preflight()
    assert report.ready, [c for c in report.checks if c.status == "fail"]
    loop.start(report, config)
    (run,) = sorted((ws / "results").glob("run_*"))
    return run


def _state(run: Path) -> dict[str, Any]:
    return json.loads((run / "deft_state.json").read_text())


def _keys(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["input_path"].astype(str), df["object_name"].astype(str), strict=True))


def _output(run: Path, it: dict[str, Any], stage: str, key: str) -> Path:
    return run / it["stages"][stage]["outputs"][key]["path"]


def test_a_worse_iteration_is_set_aside_and_the_next_one_builds_on_the_best(demo_ws: Path) -> None:
    run = _run(demo_ws)
    state = _state(run)
    it1, it2 = state["iterations"]["iter1"], state["iterations"]["iter2"]
    if state["iterations"]["baseline"]["far_pct"] is None:
        pytest.skip("the fake model missed the recall constraint at the baseline: nothing to compare with")
    guard = it1["guard"]
    assert guard is not None and guard["action"] == "exclude" and guard["best_iteration"] == "baseline"
    prov1 = pd.read_csv(_output(run, it1, "assemble", "assemble.provenance"), dtype=str, keep_default_na=False)
    added1 = prov1[prov1["source"] == "mining_pool"]
    assert guard["rows"] == len(added1) > 0
    assert sum(g["n"] for g in guard["groups"]) == guard["rows"]
    excluded = pd.read_parquet(_output(run, it1, "gate", "gate.excluded"))
    assert _keys(excluded) == _keys(added1)

    # iter2: the CSV keeps every row (monotonic); the fine-tune set leaves iter1's additions out.
    combined = pd.read_csv(_output(run, it2, "assemble", "assemble.train_csv"), dtype=str, keep_default_na=False)
    finetune = pd.read_csv(_output(run, it2, "assemble", "assemble.finetune_csv"), dtype=str,
                           keep_default_na=False)
    assert _keys(excluded) <= _keys(combined)
    assert not _keys(excluded) & _keys(finetune)
    assert len(finetune) == len(combined) - len(excluded) == it2["counts"]["training_rows"]
    prov2 = pd.read_csv(_output(run, it2, "assemble", "assemble.provenance"), dtype=str, keep_default_na=False)
    assert (prov2["set_aside_by"] == "iter1").sum() == len(excluded)
    assert "set aside by the gate of iter1" in it2["stages"]["assemble"]["summary"]
    # ...fine-tuned from the baseline's checkpoint (the best so far), on targets of the baseline's RCA.
    train_log = _output(run, it2, "train", "train.log").read_text()
    assert Path(state["iterations"]["baseline"]["best_ckpt_path"]).resolve().name in train_log
    assert "targets from baseline's RCA" in it2["stages"]["route"]["summary"]

    # Said where people look: the loop log, the iteration summary, the report.
    log = [json.loads(line) for line in (run / "loop_log.jsonl").read_text().splitlines()]
    gate_line = next(e for e in log if e["iter"] == "iter1" and e["stage"] == "gate")
    assert f"its {guard['rows']} added row(s) are left out of later fine-tunes" in gate_line["summary"]
    assert "**Gate** iter1 made FAR worse" in (run / "iter1_summary.md").read_text()
    assert f"{len(excluded)} set aside by earlier gates" in (run / "iter2_summary.md").read_text()
    html = (run / "DEFT_Loop_Report.html").read_text()
    section = html[html.index('id="guard"'):]
    assert "iter1" in section and f"{guard['rows']}" in section
    first = guard["groups"][0]
    assert f"<td>{first['source']}</td><td>{first['label']}</td><td>{first['target_label']}</td>" in section


def test_off_builds_on_every_iteration(demo_ws: Path) -> None:
    run = _run(demo_ws, on_worse="off")
    state = _state(run)
    it2 = state["iterations"]["iter2"]
    assert state["iterations"]["iter1"]["guard"] is None
    assert "assemble.finetune_csv" not in it2["stages"]["assemble"]["outputs"]
    assert it2["counts"]["training_rows"] == it2["counts"]["total"]
    assert 'id="guard"' not in (run / "DEFT_Loop_Report.html").read_text()


def test_resume_across_the_decision_reproduces_it(demo_ws: Path) -> None:
    """A run killed after the gate set rows aside (at the next assembly) resumes to the decision it recorded:
    the same guard, and a fine-tune set of exactly the assembled rows less the ones set aside."""

    from deft_aoi.loop.stages.data import AssembleStage

    kill = [True]

    class Assemble(AssembleStage):
        """Dies at iter2's assembly (after iter1's gate committed its decision) until the resume."""

        def run(self, ctx: StageContext) -> StageOutcome:
            if ctx.iteration == "iter2" and kill[0]:
                raise RuntimeError("killed")
            return super().run(ctx)

    loop = _loop(demo_ws).with_stage(Assemble())
    report, config = loop.preflight()
    with pytest.raises(Exception, match=r"killed|internal"):  # the engine records it as a failed stage
        loop.start(report, config)
    (run,) = sorted((demo_ws / "results").glob("run_*"))
    before = _state(run)
    guard = before["iterations"]["iter1"]["guard"]
    assert guard is not None and before["status"] != "finished"
    kill[0] = False
    _loop(demo_ws).with_stage(Assemble()).resume(str(run))
    state = _state(run)
    assert state["status"] == "finished" and state["iterations"]["iter1"]["guard"] == guard
    it1, it2 = state["iterations"]["iter1"], state["iterations"]["iter2"]
    excluded = pd.read_parquet(_output(run, it1, "gate", "gate.excluded"))
    combined = pd.read_csv(_output(run, it2, "assemble", "assemble.train_csv"), dtype=str, keep_default_na=False)
    finetune = pd.read_csv(_output(run, it2, "assemble", "assemble.finetune_csv"), dtype=str,
                           keep_default_na=False)
    assert len(excluded) == guard["rows"] == it2["counts"]["set_aside"] > 0
    assert _keys(finetune) == _keys(combined) - _keys(excluded) and len(finetune) == len(combined) - guard["rows"]
    assert "targets from baseline's RCA" in it2["stages"]["route"]["summary"]
