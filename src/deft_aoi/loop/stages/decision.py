"""The gate after each iteration and the loop-end handoff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from deft_aoi.analysis.guard import NO_TARGET, GuardDecision, decide_guard
from deft_aoi.analysis.leakage import row_keys
from deft_aoi.errors import HardStop, StageFailed
from deft_aoi.loop.graph import CONTINUE
from deft_aoi.loop.results import IterationValues, RunValues
from deft_aoi.loop.stage_contract import CatalogDir, StageContext, StageOutcome
from deft_aoi.loop.stages.common import chosen_checkpoint
from deft_aoi.loop.stages.model import tao_context
from deft_aoi.runners.base import run_checked
from deft_aoi.runners.tao.commands import export_job
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS, artefact
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, normalise_labels, read_changenet_csv
from deft_aoi.workspace.iterations import BASELINE, is_baseline, iteration_name
from deft_aoi.workspace.stored_paths import read_parquet, write_parquet


def decide(kpi_met: bool, index: int, max_iterations: int) -> str:
    if kpi_met:
        return "kpi_met"
    if index >= max_iterations:
        return "max_iterations"
    return CONTINUE


def _interval(report: dict[str, Any] | None) -> tuple[float | None, float | None]:
    report = report or {}
    return report.get("far_ci_low_pct"), report.get("far_ci_high_pct")


def added_rows(ctx: StageContext) -> pd.DataFrame:
    """The rows this iteration's assembly added (not those already present), in the training CSV's
    coordinates: the 14 ChangeNet columns + source (real | synthetic), matched_target (the KPI image that
    pulled the row in, absolute) and target_label (that target's label; NO_TARGET when unknown)."""
    root = ctx.services.workspace.root
    combined = read_changenet_csv(ctx.input("assemble.train_csv", ctx.iteration))
    provenance = pd.read_csv(ctx.input("assemble.provenance", ctx.iteration), dtype=str, keep_default_na=False)
    new = provenance["source"] == "mining_pool"  # assembly's tag of the rows it added (analysis/assembly.py)
    positions = provenance.loc[new, "row"].astype(int).to_numpy() - 2  # CSV row (header = 1) → position
    added = combined.iloc[positions][list(CHANGENET_COLUMNS)].reset_index(drop=True)
    added["source"] = provenance.loc[new, "pool_origin"].replace("", "real").to_numpy()
    mined = read_parquet(ctx.input("mine.rows", ctx.iteration), root)
    target = (pd.Series(mined["matched_target"].astype(str).to_numpy(), index=row_keys(mined).to_numpy())
              if "matched_target" in mined.columns else pd.Series(dtype=str))
    target = target[~target.index.duplicated()]
    added["matched_target"] = target.reindex(row_keys(added).to_numpy()).fillna("").to_numpy()
    gaps = read_parquet(ctx.input("route.mining_gaps", ctx.iteration), root)
    label_of = (dict(zip(gaps["filepath"].astype(str), normalise_labels(gaps["label"].astype(str)), strict=True))
                if {"filepath", "label"} <= set(gaps.columns) else {})
    added["target_label"] = [label_of.get(t, NO_TARGET) for t in added["matched_target"]]
    return added


def protect(ctx: StageContext) -> GuardDecision | None:
    """The guard of an iteration that continues (analysis/guard.py): None when it is not worse than the best
    so far or `--on-worse off`; else the decision, and its excluded rows written to `gate.excluded`."""
    s = ctx.services
    it = ctx.state.iterations[ctx.iteration]
    if s.config.on_worse.value == "off":
        return None
    earlier = [(other.name, other.far_pct, other.recall_pct) for other in ctx.state.ordered_iterations()
               if other.index < it.index and "evaluate" in other.stages
               and other.stages["evaluate"].status == "complete"]
    added = added_rows(ctx)
    decision = decide_guard(ctx.iteration, it.far_pct, it.recall_pct, earlier, added, s.kpi)
    if decision is not None:
        write_parquet(added, ctx.output("gate.excluded"), s.workspace.root)
    return decision


class GateStage(CatalogDir):
    name = "gate"
    # It decides on the iteration's typed values (kpi_met, kpi_unreachable, counts), read from the state; the
    # files are the iteration's additions and what pulled them in: the guard's input (`protect`).
    reads = ("assemble.train_csv", "assemble.provenance", "mine.rows", "route.mining_gaps")
    writes = ("gate.summary", "gate.excluded")

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
        # Only an iteration the loop goes on from can be built on; at the end the best one is handed off anyway.
        guard = protect(ctx) if decision == CONTINUE and not is_baseline(ctx.iteration) else None
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
                set_aside=it.counts.set_aside or 0,
                guard=None if guard is None else guard.words(),
            )
            atomic_write_text(ctx.output("gate.summary"), text)  # idempotent: a redo rewrites the same file
        far = "—" if it.far_pct is None else f"{it.far_pct:.2f}%"
        return StageOutcome(
            summary=f"{decision}: FAR={far} vs target {ctx.services.kpi.describe()}"
                    + ("" if guard is None else f"; guard: {guard.words()}"),
            updates=IterationValues(decision=decision, guard=guard),
            run_updates=RunValues() if decision == CONTINUE else RunValues(stop_reason=decision),
            closes_iteration=True,
        )


def export_onnx(ctx: StageContext, checkpoint: Path) -> Path:
    """`visual_changenet export` of `checkpoint` to the run's `handoff.onnx` (--export onnx); its job's
    status.json, spec and log land in `handoff.export`."""
    s = ctx.services
    onnx = ctx.output("handoff.onnx")
    # NVIDIA's export.py asserts the file does not exist yet: a redone handoff (crash after the export) replaces it.
    onnx.unlink(missing_ok=True)
    job = export_job(tao_context(s, rows=1), results_dir=ctx.output("handoff.export"), checkpoint=checkpoint,
                     onnx_file=onnx)
    s.say(f"  {' '.join(job.argv)}")
    run_checked(s.runner, job)
    if not onnx.is_file() or onnx.stat().st_size == 0:
        raise StageFailed(f"visual_changenet export exited 0 but wrote no {onnx} (log: {job.log_file})")
    return onnx


class HandoffStage(CatalogDir):
    name = "handoff"
    # of the best iteration: its spec and the checkpoint its evaluate chose (the threshold is a typed value)
    reads = ("train.spec", *CHECKPOINT_KEYS)
    writes = ("handoff.best_model", "handoff.inference_spec", "handoff.onnx", "handoff.export")

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.handoff import write_best_model

        s = ctx.services
        best_name = ctx.state.best_iteration
        if best_name is None:
            raise StageFailed("no iteration met the recall constraint, so there is no model to hand off")
        best = ctx.state.iterations[best_name]
        if best.threshold is None or best.far_pct is None:
            raise StageFailed(f"{best_name} has no checkpoint/threshold recorded")
        checkpoint = chosen_checkpoint(ctx, best_name)
        train_spec = ctx.find("train.spec", best_name)
        onnx = export_onnx(ctx, checkpoint) if s.config.export.value == "onnx" else None
        write_best_model(
            s.run.root,
            checkpoint=checkpoint,
            threshold=best.threshold,
            far_pct=best.far_pct,
            iteration=best_name,
            spec=s.spec,
            images_dir=s.workspace.kpi_images,
            infer_csv=s.workspace.kpi_csv,
            training_spec=train_spec if train_spec is not None and train_spec.is_file() else s.spec.path,
            workspace=s.workspace.root,
            onnx=onnx,
        )
        return StageOutcome(
            summary=f"best {best_name}: FAR={best.far_pct:.2f}% at threshold {best.threshold:.4g} → "
                    f"{artefact('handoff.best_model').path}"
                    + ("" if onnx is None else f" + {artefact('handoff.onnx').path}"),
            closes_iteration=True,  # the handoff runs inside the last iteration, which the gate had closed
            closes_run=True,
        )
