"""Stages that run the model (through the runner) and score it: train → inference → evaluate → RCA."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import StageFailed
from deft_aoi.loop.artefacts import link_checkpoint
from deft_aoi.loop.results import Counts, IterationValues, RunValues
from deft_aoi.loop.stage_contract import CatalogDir, LoopServices, StageContext, StageOutcome
from deft_aoi.loop.stages.common import (
    checkpoints,
    chosen_checkpoint,
    chosen_inference_csv,
    count_rows,
    inference_csvs,
    training_csv,
)
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS, CHECKPOINT_KINDS, checkpoint_key
from deft_aoi.workspace.iterations import BASELINE, is_baseline

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.runners.tao.commands import TaoContext


def tao_context(s: LoopServices, *, rows: int, epochs: int = 1) -> TaoContext:
    """The containers' context; `rows` × `epochs` size the job timeout (LoopConfig.job_timeout_s)."""
    from deft_aoi.runners.tao.commands import TaoContext
    from deft_aoi.runners.tao.versions import load_versions
    from deft_aoi.secrets import SECRET_NAMES, load_env_file

    versions = load_versions(s.workspace)
    env = {k: v for k, v in load_env_file(s.workspace.env_file).items() if k in SECRET_NAMES}
    return TaoContext(
        workspace=s.workspace,
        spec=s.spec,
        image=versions.pyt,
        env=env,
        batch_size=s.config.batch_size.value,
        seed=s.config.seed.value,
        labels=s.labels,
        timeout_s=s.config.job_timeout_s(rows, epochs),
        gpu_plan=s.runner.gpu_plan(versions.pyt),
    )


def training_set(ctx: StageContext) -> tuple[Path, Path]:
    """(train CSV, its images dir) of this iteration: the workspace's CSV with the KPI images for the
    baseline, else the assembled CSV, whose paths are workspace-relative."""
    ws = ctx.services.workspace
    return training_csv(ctx, ctx.iteration), ws.kpi_images if is_baseline(ctx.iteration) else ws.root


def training_inputs(ctx: StageContext) -> tuple[Path, Path, Path | None]:
    """(train CSV, its images dir, checkpoint to fine-tune from) for this iteration."""
    train_csv, images_dir = training_set(ctx)
    if is_baseline(ctx.iteration):
        seed = ctx.services.config.baseline_checkpoint.value
        return train_csv, images_dir, Path(seed) if seed else None
    start = finetune_start(ctx.services.config.finetune_from.value, ctx.state.best_iteration,
                           ctx.previous_iteration())
    return train_csv, images_dir, None if start is None else chosen_checkpoint(ctx, start)


def finetune_start(protocol: str, best_iteration: str | None, previous: str) -> str | None:
    """The iteration whose checkpoint an iteration's training starts from (None = from scratch).

    best (default): the best iteration so far (lowest FAR@recall100), else the previous one;
    baseline: always the baseline's checkpoint, trained on the combined set (each iteration is then a
    fresh fine-tune of the same model, so one bad iteration cannot compound);
    scratch: no checkpoint, the combined set from random initialisation.
    """
    if protocol == "scratch":
        return None
    if protocol == "baseline":
        return BASELINE
    return best_iteration or previous


class TrainStage(CatalogDir):
    name = "train"
    # none for the baseline: it trains on the workspace's CSV; the fine-tune set when a gate set rows aside; the
    # checkpoint an earlier iteration's evaluate chose, to fine-tune from (finetune_start)
    reads = ("assemble.train_csv", "assemble.finetune_csv", *CHECKPOINT_KEYS)
    reads_earlier = CHECKPOINT_KEYS
    writes = ("train.results", "train.spec", "train.log", *CHECKPOINT_KEYS)

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.runners.base import run_checked
        from deft_aoi.runners.tao.commands import train_job
        from deft_aoi.runners.tao.outputs import (
            best_far_checkpoint,
            best_val_checkpoint,
            latest_checkpoint,
            prune_checkpoints,
        )
        from deft_aoi.workspace.changenet_csv import read_changenet_csv

        s = ctx.services
        train_csv, images_dir, pretrained = training_inputs(ctx)
        n_rows = len(read_changenet_csv(train_csv))
        epochs = s.config.num_epochs.value
        job = train_job(
            tao_context(s, rows=n_rows, epochs=epochs),
            results_dir=ctx.out,
            train_csv=train_csv,
            train_images_dir=images_dir,
            val_csv=s.workspace.validation_csv,
            val_images_dir=s.workspace.kpi_images,
            num_epochs=epochs,
            pretrained_checkpoint=pretrained,
        )
        s.say(f"  {' '.join(job.argv)}")
        run_checked(s.runner, job)
        best, latest = best_val_checkpoint(ctx.out), latest_checkpoint(ctx.out)
        # The KPI's own measure on the validation set (TAO 7.3.0's val_far); before 7.3.0 there is none and
        # the candidate is the best_val checkpoint (scored once).
        far = best_far_checkpoint(ctx.out) or best
        # Only the inference candidates are ever read again; the rest would fill the disk (one per interval).
        pruned = prune_checkpoints(ctx.out, {best.path, latest.path, far.path})
        for kind, chosen in zip(CHECKPOINT_KINDS, (best, latest, far), strict=True):
            link_checkpoint(ctx.output(checkpoint_key(kind)), chosen.path, relative_under=ctx.out)
        mode = f"fine-tuned from {pretrained.name}" if pretrained else "from scratch"
        return StageOutcome(
            summary=f"trained on {n_rows} rows, {epochs} epochs ({mode}); best_val epoch {best.epoch}, "
                    f"best_far epoch {far.epoch}" + (f"; pruned {len(pruned)} other checkpoint(s)" if pruned else ""),
            updates=IterationValues(counts=Counts(training_rows=n_rows)),
        )


class InferenceStage(CatalogDir):
    name = "inference"
    reads = CHECKPOINT_KEYS
    writes = ("inference.best_val", "inference.latest", "inference.best_far")

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.runners.base import run_checked
        from deft_aoi.runners.tao.commands import inference_job
        from deft_aoi.runners.tao.outputs import check_inference_csv

        s = ctx.services
        files = checkpoints(ctx, ctx.iteration)  # a run recorded before best_far was a candidate has two kinds
        if not files:
            raise StageFailed(f"{ctx.iteration}: no checkpoints committed by the train stage")
        tao = tao_context(s, rows=count_rows(s.workspace.kpi_csv))
        csvs: dict[str, Path] = {}
        done: dict[Path, Path] = {}  # checkpoint → its inference.csv
        for kind, ckpt in files.items():
            if ckpt in done:  # two kinds name one checkpoint: one inference serves both
                csvs[kind] = done[ckpt]
                continue
            job = inference_job(tao, results_dir=ctx.out / kind, checkpoint=ckpt,
                                infer_csv=s.workspace.kpi_csv, infer_images_dir=s.workspace.kpi_images)
            s.say(f"  {' '.join(job.argv)}")
            run_checked(s.runner, job)
            out = ctx.output(f"inference.{kind}")
            if not out.is_file():
                raise StageFailed(f"inference on {kind} checkpoint wrote no inference.csv (log: {job.log_file})")
            check_inference_csv(out, s.workspace.kpi_csv)
            csvs[kind] = done[ckpt] = out
        return StageOutcome(summary=f"scored the KPI set with {len(done)} checkpoint(s)")


class EvaluateStage(CatalogDir):
    name = "evaluate"
    # the checkpoints too: which kinds name one checkpoint (scored once, under the first)
    reads = ("inference.best_val", "inference.latest", "inference.best_far", *CHECKPOINT_KEYS)
    writes = ("evaluate.metrics", "evaluate.sweep", "evaluate.confusion", "evaluate.candidates",
              "evaluate.histogram", "evaluate.far_recall")

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.kpi import evaluate_scores, select_best, write_evaluation
        from deft_aoi.io_utils import atomic_write_text
        from deft_aoi.runners.tao.outputs import read_inference_csv

        s = ctx.services
        inference = inference_csvs(ctx)
        if not inference:
            raise StageFailed(f"{ctx.iteration}: no committed inference CSV; the inference stage is missing")
        results = {}
        for kind, path in inference.items():
            df = read_inference_csv(path)
            results[kind] = (evaluate_scores(df, s.kpi), df)

        def rank(kind: str) -> tuple[int, float]:
            report = results[kind][0]
            return (0 if report.far_pct is not None else 1, report.far_pct if report.far_pct is not None else 0.0)

        chosen = min(results, key=lambda k: (rank(k), CHECKPOINT_KINDS.index(k)))
        report, df = results[chosen]
        write_evaluation(report, df, ctx.out)
        atomic_write_text(ctx.output("evaluate.candidates"), "{\n" + ",\n".join(
            f'  "{k}": {r.model_dump_json()}' for k, (r, _) in results.items()) + "\n}\n")
        candidates = [(name, other.far_pct, other.recall_pct) for name, other in ctx.state.iterations.items()
                      if name != ctx.iteration and "evaluate" in other.stages
                      and other.stages["evaluate"].status == "complete"]
        candidates.append((ctx.iteration, report.far_pct, report.recall_pct))
        best = select_best(candidates, s.kpi)
        far = "—" if report.far_pct is None else f"{report.far_pct:.2f}%"
        thr = "—" if report.threshold is None else f"{report.threshold:.4g}"
        return StageOutcome(
            summary=f"FAR={far} threshold={thr} ({chosen} checkpoint)",
            updates=IterationValues(
                far_pct=report.far_pct,
                recall_pct=report.recall_pct,
                threshold=report.threshold,
                kpi_met=report.kpi_met,
                kpi_report=report.model_dump(mode="json"),
                chosen_checkpoint=chosen,
            ),
            run_updates=RunValues(best_iteration=best),
        )


class RcaStage(CatalogDir):
    name = "rca"
    # the training CSV too: the suspect check scores it (none for the baseline: the workspace's CSV), with the
    # checkpoint evaluate chose
    reads = ("inference.best_val", "inference.latest", "inference.best_far", "assemble.train_csv",
             "assemble.finetune_csv", *CHECKPOINT_KEYS)
    writes = ("rca.kpi_gaps", "rca.threshold", "rca.metrics", "rca.breakdown", "rca.unreachable", "rca.suspects",
              "rca.training_scores")

    def run(self, ctx: StageContext) -> StageOutcome:
        from deft_aoi.analysis.rca import run_rca, write_rca
        from deft_aoi.runners.tao.outputs import read_inference_csv

        s = ctx.services
        inference = read_inference_csv(chosen_inference_csv(ctx))
        result = run_rca(inference, images_dir=s.workspace.kpi_images, lights=s.spec.lights,
                         image_ext=s.spec.image_ext, kpi=s.kpi, top_k_per_label=s.config.top_k_per_label.value)
        write_rca(result, ctx.out, root=s.workspace.root)
        summary = (f"KPI unreachable: {result.breakdown.splitlines()[0] if result.breakdown else ''}"
                   if result.unreachable else
                   f"{len(result.gaps)} weak sample images; targets: {', '.join(result.target_defects) or '—'}")
        counts = Counts()
        if not result.unreachable:
            training, training_note = score_training_rows(ctx)
            suspects, note = suspect_labels(ctx, inference, training)
            summary += f"; {note}" + (f"; {training_note}" if training is None else "")
            if suspects is not None:
                from deft_aoi.analysis.suspects import TRAINING_SET
                from deft_aoi.workspace.stored_paths import write_parquet

                write_parquet(suspects, ctx.output("rca.suspects"), s.workspace.root)
                in_training = suspects["set"] == TRAINING_SET
                counts = Counts(suspect_labels=int((~in_training).sum()),
                                suspect_sets_threshold=int(suspects["sets_threshold"].sum()))
                if training is not None:
                    counts.suspect_training_labels = int(in_training.sum())
        values = IterationValues(kpi_unreachable=result.unreachable, rca_target_defects=list(result.target_defects))
        if counts.model_fields_set:  # set only when the check ran: the record carries no empty counts
            values.counts = counts
        return StageOutcome(summary=summary, updates=values)


def _embed_rows(ctx: StageContext, frame: pd.DataFrame, images_dir: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Built-in pair embeddings (first light) of a ChangeNet frame, through the workspace's cache, and the
    input / golden image paths embedded."""
    from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache
    from deft_aoi.mining.embedders import get_embedder
    from deft_aoi.workspace.changenet_csv import image_paths

    s = ctx.services
    paths = image_paths(frame.reset_index(drop=True), images_dir, [s.spec.lights[0]], s.spec.image_ext)
    inputs = paths[paths["side"] == "input"].sort_values("row")["path"].astype(str).tolist()
    goldens = paths[paths["side"] == "golden"].sort_values("row")["path"].astype(str).tolist()
    embedder = get_embedder("builtin")
    emb, _ = embed_with_cache(inputs, goldens, embedder, EmbeddingCache(s.workspace.embedding_cache,
                                                                        embedder.fingerprint))
    return emb, inputs, goldens


def score_training_rows(ctx: StageContext) -> tuple[pd.DataFrame | None, str]:
    """The training CSV this iteration trained on, scored by the checkpoint evaluate chose: one more
    inference job on any backend (the model's side of the training-row suspect check). (None, why) when
    `--no-score-training` or the job fails: the check is advisory and never stops the loop.

    On by default, because the issue's must-work line asks for training rows after every evaluation and a
    mislabelled training row is what the loop would otherwise keep teaching; the cost is one forward pass
    over the training rows beside the train job's epochs × (forward + backward) over the same rows
    (deeppcb-dev, local CPU, 179 rows: +15 s on a 133 s train stage, bench/RESULTS.md; docker: a GPU pass
    plus one container start)."""
    from deft_aoi import interrupts
    from deft_aoi.errors import DeftError, DiskError, Interrupted
    from deft_aoi.runners.base import run_checked
    from deft_aoi.runners.tao.commands import inference_job
    from deft_aoi.runners.tao.outputs import check_inference_csv

    s = ctx.services
    if not s.config.score_training_rows.value:
        return None, "training rows not scored (--no-score-training)"
    try:
        train_csv, images_dir = training_set(ctx)
        checkpoint = chosen_checkpoint(ctx, ctx.iteration)
        scores = ctx.output("rca.training_scores")
        job = inference_job(tao_context(s, rows=count_rows(train_csv)), results_dir=scores.parent,
                            checkpoint=checkpoint, infer_csv=train_csv, infer_images_dir=images_dir)
        s.say(f"  {' '.join(job.argv)}")
        run_checked(s.runner, job)
        return check_inference_csv(scores, train_csv), ""
    except (Interrupted, DiskError):
        raise  # the stage stops (resumably) or fails on a full disk (OSError too): only the check is advisory
    except DeftError as exc:
        if interrupts.requested():
            raise
        return None, f"training rows not scored ({exc.render().splitlines()[0]})"


def suspect_labels(ctx: StageContext, inference: pd.DataFrame,
                   training: pd.DataFrame | None = None) -> tuple[pd.DataFrame | None, str]:
    """KPI rows — and, given the training CSV scored by the same model (`training`), training rows — whose
    label disagrees with the model AND their neighbours (KPI + this iteration's training rows); (None, why)
    when the check cannot run — it is advisory and never stops the loop."""
    import numpy as np

    from deft_aoi.analysis.kpi import frame_scores
    from deft_aoi.analysis.suspects import TRAINING_SET, combine_suspects, find_suspects, neighbour_other_share
    from deft_aoi.errors import DeftError
    from deft_aoi.workspace.changenet_csv import read_changenet_csv

    s = ctx.services
    it = ctx.state.iterations[ctx.iteration]
    try:
        is_defect, scores = frame_scores(inference)
        kpi_emb, inputs, goldens = _embed_rows(ctx, inference, s.workspace.kpi_images)
        train_csv, train_root = training_set(ctx)
        train = read_changenet_csv(train_csv) if training is None else training.reset_index(drop=True)
        train_emb, train_inputs, train_goldens = _embed_rows(ctx, train, train_root)
        train_defect, train_scores = frame_scores(train if training is not None else train.assign(siamese_score=0.0))
    except (DeftError, OSError, ValueError) as exc:
        return None, f"suspect-label check skipped ({exc})"
    reference = np.vstack([kpi_emb, train_emb])
    reference_defect = np.r_[is_defect, train_defect]
    share = neighbour_other_share(kpi_emb, reference, reference_defect, is_defect,
                                  self_index=np.arange(len(kpi_emb)))
    setters = (it.kpi_report or {}).get("threshold_defects") or []
    frame = inference.reset_index(drop=True).assign(filepath=inputs, golden_filepath=goldens)
    suspects = find_suspects(frame, is_defect, scores, share,
                             [int(setters[0]["row"])] if setters else [])
    flag = " (one sets the threshold)" if suspects["sets_threshold"].any() else ""
    note = f"{len(suspects)} suspect label(s){flag}"
    if training is not None:
        train_share = neighbour_other_share(train_emb, reference, reference_defect, train_defect,
                                            self_index=len(kpi_emb) + np.arange(len(train_emb)))
        train_frame = train.assign(filepath=train_inputs, golden_filepath=train_goldens)
        flagged = find_suspects(train_frame, train_defect, train_scores, train_share, set_name=TRAINING_SET)
        suspects = combine_suspects(suspects, flagged)
        note += f"; {len(flagged)} suspect training row(s) of {len(train)}"
    return suspects, note
