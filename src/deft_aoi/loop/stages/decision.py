"""The gate after each iteration and the loop-end handoff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deft_aoi.analysis.summary import selection_words
from deft_aoi.errors import HardStop, StageFailed
from deft_aoi.loop.engine import CONTINUE, StageContext, StageOutcome
from deft_aoi.loop.stages.common import run_path


def decide(kpi_met: bool, index: int, max_iterations: int) -> str:
    if kpi_met:
        return "kpi_met"
    if index >= max_iterations:
        return "max_iterations"
    return CONTINUE


def _interval(report: dict[str, Any] | None) -> tuple[float | None, float | None]:
    report = report or {}
    return report.get("far_ci_low_pct"), report.get("far_ci_high_pct")


class GateStage:
    name = "gate"

    def output_dir(self, ctx: StageContext) -> str:
        return f"{ctx.iteration}/gate"

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.summary import iteration_summary
        from deft_aoi.io_utils import atomic_write_text

        it = ctx.state.iterations[ctx.iteration]
        rca = it.stages.get("rca")
        if rca is not None and rca.outputs.get("unreachable"):
            raise HardStop("kpi_unreachable", f"{ctx.iteration}: no threshold reaches recall "
                           f"{ctx.services.kpi.constraint_pct:g}% on the KPI set (see unreachable_kpi.txt in "
                           f"{rca.output_dir}); no routing or mining this iteration")
        decision = decide(it.kpi_met, it.index, ctx.max_iterations)
        outputs: dict[str, object] = {"decision": decision}
        if ctx.iteration != "baseline":
            baseline = ctx.state.iterations.get("baseline")
            prev = ctx.state.iterations[ctx.previous_iteration()]
            next_action = {"kpi_met": "KPI met: hand off the best model",
                           "max_iterations": "max_iterations reached: hand off the best iteration",
                           CONTINUE: f"continue with iter{it.index + 1}"}[decision]
            text = iteration_summary(
                iteration=ctx.iteration,
                far_before=prev.far_pct if prev else (baseline.far_pct if baseline else None),
                far_after=it.far_pct,
                threshold=it.threshold,
                kpi=ctx.services.kpi,
                rows_before=it.counts.get("previous_rows", 0),
                rows_added=it.counts.get("new_unique", 0),
                mined_real=it.counts.get("mined_real", 0),
                mined_synthetic=it.counts.get("mined_synthetic", 0),
                target_defects=prev.rca_target_defects if prev else [],
                support_note=(it.kpi_report or {}).get("support_note"),
                next_action=next_action,
                ci_before=_interval(prev.kpi_report if prev else None),
                ci_after=_interval(it.kpi_report),
                far99_after=(it.kpi_report or {}).get("far_at_recall99_pct"),
                threshold_defects=(it.kpi_report or {}).get("threshold_defects"),
                selection=selection_words(it.counts),
            )
            summary_path = ctx.services.run.root / f"{ctx.iteration}_summary.md"
            atomic_write_text(summary_path, text)  # idempotent: a redo rewrites the same file
            outputs["summary_md"] = str(summary_path)
        far = "—" if it.far_pct is None else f"{it.far_pct:.2f}%"
        return StageOutcome(
            summary=f"{decision}: FAR={far} vs target {ctx.services.kpi.describe()}",
            outputs=outputs,
            run_updates={} if decision == CONTINUE else {"stop_reason": decision},
            closes_iteration=True,
        )


class HandoffStage:
    name = "handoff"

    def output_dir(self, ctx: StageContext) -> str:
        return "handoff"

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.handoff import write_best_model

        s = ctx.services
        best_name = ctx.state.best_iteration
        if best_name is None:
            raise StageFailed("no iteration met the recall constraint, so there is no model to hand off")
        best = ctx.state.iterations[best_name]
        if best.best_ckpt_path is None or best.threshold is None or best.far_pct is None:
            raise StageFailed(f"{best_name} has no checkpoint/threshold recorded")
        train_spec = best.stages["train"].outputs.get("spec") if "train" in best.stages else None
        json_path, spec_path = write_best_model(
            s.run.root,
            checkpoint=Path(best.best_ckpt_path),
            threshold=best.threshold,
            far_pct=best.far_pct,
            iteration=best_name,
            spec=s.spec,
            images_dir=s.workspace.kpi_images,
            training_spec=run_path(ctx, train_spec, "training spec") if train_spec else s.spec.path,
        )
        return StageOutcome(
            summary=f"best {best_name}: FAR={best.far_pct:.2f}% at threshold {best.threshold:.4g} → best_model.json",
            outputs={"best_model": str(json_path), "inference_spec": str(spec_path)},
            closes_iteration=True,  # the handoff runs inside the last iteration, which the gate had closed
            closes_run=True,
        )
