"""Stages that grow the training set: route gaps → ingest synthetic pool → mine → assemble → validate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.analysis.assembly import assemble, set_aside_by, write_assembly
from deft_aoi.analysis.leakage import excluded_mask
from deft_aoi.analysis.routing import route, write_routing
from deft_aoi.analysis.validation import raise_if_failed, validate_rows, write_validation
from deft_aoi.errors import StageFailed
from deft_aoi.loop.results import Counts, IterationValues
from deft_aoi.loop.stage_contract import CatalogDir, StageContext, StageOutcome
from deft_aoi.loop.stages.common import reference_frames, training_csv
from deft_aoi.mining.loop_adapter import mine_iteration
from deft_aoi.mining.params import MineConfig
from deft_aoi.preflight.hygiene import read_exclusions
from deft_aoi.synth.staging import label_counts_text, load_source_pool, verify_synth_sources, write_ingest_summary
from deft_aoi.workspace.catalog import artefact
from deft_aoi.workspace.changenet_csv import read_changenet_csv, rebase_paths, write_changenet_csv
from deft_aoi.workspace.stored_paths import read_parquet

if TYPE_CHECKING:
    import pandas as pd


def targets_from(ctx: StageContext) -> str:
    """The iteration whose RCA gaps this one mines for: the previous one, unless its gate found it worse than
    the best so far (analysis/guard.py); then the best one's, whose checkpoint this iteration fine-tunes."""
    previous = ctx.previous_iteration()
    guard = ctx.state.iterations[previous].guard if previous in ctx.state.iterations else None
    return previous if guard is None else guard.best_iteration


class RouteStage(CatalogDir):
    name = "route"
    reads = ("rca.kpi_gaps",)
    reads_earlier = ("rca.kpi_gaps",)  # the previous iteration's (or the best one's: `targets_from`)
    writes = ("route.mining_gaps", "route.anomalygen_gaps", "route.summary")

    def run(self, ctx: StageContext) -> StageOutcome:
        root = ctx.services.workspace.root
        source = targets_from(ctx)
        result = route(read_parquet(ctx.input("rca.kpi_gaps", source), root))
        write_routing(result, ctx.out, root=root)
        whose = "" if source == ctx.previous_iteration() else f" (targets from {source}'s RCA: the best so far)"
        return StageOutcome(
            summary=f"{len(result.mining_gaps)} gap images → mining, {len(result.anomalygen_gaps)} → anomalygen"
                    + whose,
            updates=IterationValues(counts=Counts(mining_targets=len(result.mining_gaps))),
        )


class IngestStage(CatalogDir):
    name = "ingest"
    reads = ("stage_synth.manifest",)
    writes = ("ingest.summary",)

    def run(self, ctx: StageContext) -> StageOutcome:
        s = ctx.services
        ctx.input("stage_synth.manifest")  # staged once per run: synth/staging reads it under the run dir
        verify_synth_sources(s.workspace, s.run.root)
        summary = write_ingest_summary(s.run.root, ctx.output("ingest.summary"), ctx.iteration)
        counts = summary["counts"]
        return StageOutcome(
            summary=f"synthetic pool unchanged; {counts['sdg_rows']} synthetic rows "
                    f"({label_counts_text(summary['labels'], summary['declared_types'])}) + "
                    f"{counts['mining_pool_rows']} "
                    "mining-pool rows available (no generator launched)",
        )


def mined_ledger(ctx: StageContext) -> set[str]:
    """Pool images mined in earlier iterations (absolute, under the workspace's current root): never mined twice."""
    ledger: set[str] = set()
    for name in ctx.state.iterations:
        path = None if name == ctx.iteration else ctx.find("mine.rows", name)
        if path is None:
            continue
        rows = read_parquet(path, ctx.services.workspace.root)
        if "filepath" in rows.columns:
            ledger.update(rows["filepath"].astype(str))
    return ledger


def drop_exclusions(pool: pd.DataFrame, exclusions_file: Path) -> tuple[pd.DataFrame, int]:
    """The candidate pool without the rows pre-flight found leaking (a filter before mining, whatever the
    mining strategy). A run started before exclusion lists existed has no file: nothing is dropped."""
    if not exclusions_file.is_file():
        return pool, 0
    mask = excluded_mask(pool, read_exclusions(exclusions_file))
    return pool[~mask].reset_index(drop=True), int(mask.sum())


class MineStage(CatalogDir):
    name = "mine"
    reads = ("route.mining_gaps", "stage_synth.source_pool", "run.pool_exclusions", "mine.rows")
    reads_earlier = ("mine.rows",)  # the rows earlier iterations mined: never mined twice (mined_ledger)
    writes = ("mine.rows", "mine.pool_csv", "mine.validation", "mine.spec", "mine.report")

    def run(self, ctx: StageContext) -> StageOutcome:
        s = ctx.services
        engine = s.config.mining_engine.value  # validated with the rest of the config (config.validate_config)
        gaps = ctx.input("route.mining_gaps", ctx.iteration)
        targets = read_parquet(gaps, s.workspace.root)
        pool_file = ctx.input("stage_synth.source_pool")
        # run scope, so always a path; the file is absent in runs started before exclusion lists existed
        exclusions = ctx.find("run.pool_exclusions", ctx.iteration)
        pool, n_excluded = load_source_pool(s.run.root), 0
        if exclusions is not None:
            pool, n_excluded = drop_exclusions(pool, exclusions)
        access = None
        if engine == "data_services":
            from deft_aoi.loop.stages.container_mining import data_services_access

            access = data_services_access(ctx)
        params = MineConfig.from_loop_config(s.config)
        outcome = mine_iteration(targets, pool, workspace=s.workspace, lights=s.spec.lights,
                                 image_ext=s.spec.image_ext, params=params,
                                 out_dir=ctx.out, ledger=mined_ledger(ctx), engine=engine,
                                 data_services=access, targets_source=gaps,
                                 pool_source=pool_file)
        rows = outcome.rows  # written once by mining, as `mine.rows` (with its views)
        validation, kpi = reference_frames(ctx)
        report = validate_rows(rows, workspace=s.workspace, lights=s.spec.lights, image_ext=s.spec.image_ext,
                               validation=validation, kpi=kpi, phase="mined")
        write_validation(report, ctx.output("mine.validation"))
        raise_if_failed(report)
        n_synth = int((rows["source"] == "synthetic").sum())
        counts = {k: int(v) for k, v in outcome.counts.items()}
        cutoff = outcome.cutoff
        how = (f"; {params.selection_strategy} selection, cut-off {cutoff:.4f}" if engine != "data_services"
               and cutoff is not None else "")
        return StageOutcome(
            summary=f"mined {len(rows)} rows ({len(rows) - n_synth} real, {n_synth} synthetic) for "
                    f"{counts.get('targets', len(targets))} targets from {len(pool)} candidates "
                    f"({n_excluded} excluded at pre-flight){how}; leakage check passed",
            updates=IterationValues(counts=Counts.model_validate({
                "mined_real": len(rows) - n_synth, "mined_synthetic": n_synth, "mined_total": len(rows),
                "pool_excluded": n_excluded,
                # mining's own count names (a new one must be declared on Counts: it is refused otherwise)
                **{f"knn_{k}": v for k, v in counts.items() if not k.startswith("selected")},
                **{k: v for k, v in counts.items() if k.startswith("selected")}})),
        )


def set_aside_rows(ctx: StageContext) -> dict[str, pd.DataFrame]:
    """Iteration → the rows its gate set aside (analysis/guard.py), for every earlier iteration whose gate did.
    Each earlier gate's `gate.excluded` is looked up (a declared read); only a gate that recorded a guard wrote it."""
    out: dict[str, pd.DataFrame] = {}
    for it in ctx.state.ordered_iterations():
        if it.index >= ctx.index or "gate" not in it.stages:
            continue
        path = ctx.find("gate.excluded", it.name)
        if it.guard is None:
            continue
        if path is None or not path.is_file():
            raise StageFailed(f"{it.name}: its gate set rows aside but {artefact('gate.excluded').path} is "
                              "missing; the gate stage must be redone")
        out[it.name] = read_parquet(path, ctx.services.workspace.root)
    return out


class AssembleStage(CatalogDir):
    name = "assemble"
    reads = ("assemble.train_csv", "mine.rows", "gate.excluded")
    # the previous iteration's training CSV (the workspace's for iter1), and the rows earlier gates set aside
    reads_earlier = ("assemble.train_csv", "gate.excluded")
    writes = ("assemble.train_csv", "assemble.provenance", "assemble.finetune_csv")

    def run(self, ctx: StageContext) -> StageOutcome:
        s = ctx.services
        if ctx.index == 1:
            previous = rebase_paths(read_changenet_csv(s.workspace.train_csv), s.workspace.kpi_images,
                                    s.workspace.root)
            previous_source = "base_train"
        else:
            previous = read_changenet_csv(training_csv(ctx, ctx.previous_iteration(), assembled=True))
            previous_source = "previous_iter_train"
        mined = read_parquet(ctx.input("mine.rows", ctx.iteration), s.workspace.root)
        result = assemble(previous, previous_source, mined)  # type: ignore[arg-type]
        # The CSV stays monotonic (CONTRACTS §3.5); rows earlier gates set aside are only left out of the
        # fine-tune set the train job reads.
        aside = set_aside_by(result.combined, set_aside_rows(ctx))
        result.provenance["set_aside_by"] = aside.to_numpy()
        write_assembly(result, ctx.out, ctx.index)
        n_aside = int((aside != "").sum())
        if n_aside:
            write_changenet_csv(result.combined[(aside == "").to_numpy()], ctx.output("assemble.finetune_csv"))
        total = len(result.combined)
        aside_words = (f"; {n_aside} set aside by the gate of {', '.join(sorted(set(aside[aside != ''])))}: "
                       f"fine-tune on {total - n_aside}") if n_aside else ""
        return StageOutcome(
            summary=f"{result.n_previous} previous + {result.n_new_unique} new = {total} rows "
                    f"({result.n_duplicates} duplicates skipped){aside_words}",
            updates=IterationValues(counts=Counts(
                previous_rows=result.n_previous, new_unique=result.n_new_unique, duplicates=result.n_duplicates,
                total=total, delta=total - result.n_previous, set_aside=n_aside)),
        )


class ValidateStage(CatalogDir):
    name = "validate"
    reads = ("assemble.train_csv",)
    writes = ("validate.report",)

    def run(self, ctx: StageContext) -> StageOutcome:
        s = ctx.services
        combined = read_changenet_csv(training_csv(ctx, ctx.iteration, assembled=True))
        validation, kpi = reference_frames(ctx)
        report = validate_rows(combined, workspace=s.workspace, lights=s.spec.lights, image_ext=s.spec.image_ext,
                               validation=validation, kpi=kpi, phase="combined")
        write_validation(report, ctx.output("validate.report"))
        raise_if_failed(report)
        return StageOutcome(summary=f"{len(combined)} rows valid: columns, images, no leakage")
