"""The gate after each iteration and the loop-end handoff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deft_aoi.errors import HardStop, StageFailed
from deft_aoi.loop.graph import CONTINUE
from deft_aoi.loop.results import IterationValues, RunValues
from deft_aoi.loop.stage_contract import CatalogDir, StageContext, StageOutcome
from deft_aoi.workspace.catalog import artefact
from deft_aoi.workspace.iterations import BASELINE, is_baseline, iteration_name


def decide(kpi_met: bool, index: int, max_iterations: int) -> str:
    if kpi_met:
        return "kpi_met"
    if index >= max_iterations:
        return "max_iterations"
    return CONTINUE


def _interval(report: dict[str, Any] | None) -> tuple[float | None, float | None]:
    report = report or {}
    return report.get("far_ci_low_pct"), report.get("far_ci_high_pct")


class GateStage(CatalogDir):
    name = "gate"
    reads = ()  # it decides on the iteration's typed values (kpi_met, kpi_unreachable, counts), read from the state
    writes = ("gate.summary",)

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.summary import iteration_summary
        from deft_aoi.io_utils import atomic_write_text

        it = ctx.state.iterations[ctx.iteration]
        rca = it.stages.get("rca")
        if it.kpi_unreachable:
            why = artefact("rca.unreachable").path
            raise HardStop("kpi_unreachable", f"{ctx.iteration}: no threshold reaches recall "
                           f"{ctx.services.kpi.constraint_pct:g}% on the KPI set (see {why} in "
                           f"{rca.output_dir if rca else 'rca_results'}); no routing or mining this iteration")
        decision = decide(it.kpi_met, it.index, ctx.max_iterations)
        if not is_baseline(ctx.iteration):
            baseline = ctx.state.iterations.get(BASELINE)
            prev = ctx.state.iterations[ctx.previous_iteration()]
            next_action = {"kpi_met": "KPI met: hand off the best model",
                           "max_iterations": "max_iterations reached: hand off the best iteration",
                           CONTINUE: f"continue with {iteration_name(it.index + 1)}"}[decision]
            text = iteration_summary(
                iteration=ctx.iteration,
                far_before=prev.far_pct if prev else (baseline.far_pct if baseline else None),
                far_after=it.far_pct,
                threshold=it.threshold,
                kpi=ctx.services.kpi,
                rows_before=it.counts.previous_rows or 0,
                rows_added=it.counts.new_unique or 0,
                mined_real=it.counts.mined_real or 0,
                mined_synthetic=it.counts.mined_synthetic or 0,
                target_defects=prev.rca_target_defects if prev else [],
                support_note=(it.kpi_report or {}).get("support_note"),
                next_action=next_action,
                ci_before=_interval(prev.kpi_report if prev else None),
                ci_after=_interval(it.kpi_report),
                far99_after=(it.kpi_report or {}).get("far_at_recall99_pct"),
                threshold_defects=(it.kpi_report or {}).get("threshold_defects"),
                selection=it.counts.selection_words(),
            )
            atomic_write_text(ctx.output("gate.summary"), text)  # idempotent: a redo rewrites the same file
        far = "—" if it.far_pct is None else f"{it.far_pct:.2f}%"
        return StageOutcome(
            summary=f"{decision}: FAR={far} vs target {ctx.services.kpi.describe()}",
            updates=IterationValues(decision=decision),
            run_updates=RunValues() if decision == CONTINUE else RunValues(stop_reason=decision),
            closes_iteration=True,
        )


class HandoffStage(CatalogDir):
    name = "handoff"
    reads = ("train.spec",)  # of the best iteration; its checkpoint and threshold are typed values of the state
    writes = ("handoff.best_model", "handoff.inference_spec")

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.handoff import write_best_model

        s = ctx.services
        best_name = ctx.state.best_iteration
        if best_name is None:
            raise StageFailed("no iteration met the recall constraint, so there is no model to hand off")
        best = ctx.state.iterations[best_name]
        if best.best_ckpt_path is None or best.threshold is None or best.far_pct is None:
            raise StageFailed(f"{best_name} has no checkpoint/threshold recorded")
        train_spec = ctx.find("train.spec", best_name)
        write_best_model(
            s.run.root,
            checkpoint=Path(best.best_ckpt_path),
            threshold=best.threshold,
            far_pct=best.far_pct,
            iteration=best_name,
            spec=s.spec,
            images_dir=s.workspace.kpi_images,
            infer_csv=s.workspace.kpi_csv,
            training_spec=train_spec if train_spec is not None and train_spec.is_file() else s.spec.path,
            workspace=s.workspace.root,
        )
        return StageOutcome(
            summary=f"best {best_name}: FAR={best.far_pct:.2f}% at threshold {best.threshold:.4g} → "
                    f"{artefact('handoff.best_model').path}",
            closes_iteration=True,  # the handoff runs inside the last iteration, which the gate had closed
            closes_run=True,
        )
