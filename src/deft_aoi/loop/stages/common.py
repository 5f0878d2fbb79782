"""Small helpers the stages share: earlier stages' outputs, the workspace's reference sets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import StageFailed
from deft_aoi.loop import artefacts
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS, CHECKPOINT_KINDS, checkpoint_key
from deft_aoi.workspace.iterations import is_baseline

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.loop.stage_contract import StageContext


def count_rows(csv: Path) -> int:
    """Data rows of a CSV by counting lines (sizes a job timeout; no parse needed)."""
    with open(csv, "rb") as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)


def training_csv(ctx: StageContext, iteration: str, *, assembled: bool = False) -> Path:
    """The CSV `iteration` trains on: the workspace's for the baseline, else that iteration's fine-tune set
    (artefacts.fine_tune_set: a declared read of `assemble.finetune_csv`, then `assemble.train_csv`); with
    `assembled`, always its monotonic assembled CSV (`assemble.train_csv` only). StageFailed when it is missing."""
    if is_baseline(iteration):
        path: Path | None = ctx.services.workspace.train_csv
    else:
        path = ctx.find("assemble.train_csv", iteration)
        if path is not None and not assembled:
            path = artefacts.fine_tune_set(path, ctx.find("assemble.finetune_csv", iteration))
    if path is None or not path.exists():
        raise StageFailed(f"{iteration}: no training CSV ({path or 'assemble.train_csv not committed'}); "
                          "an earlier stage is missing")
    return path


def checkpoints(ctx: StageContext, iteration: str) -> dict[str, Path]:
    """The checkpoints `iteration`'s train stage wrote, by kind (declared reads of the catalog's `train.<kind>`)."""
    return {kind: path for kind in CHECKPOINT_KINDS if (path := ctx.find(checkpoint_key(kind), iteration)) is not None}


def chosen_checkpoint(ctx: StageContext, iteration: str) -> Path:
    """The checkpoint `iteration`'s evaluate stage chose (artefacts.chosen_checkpoint). Which kind that is, is
    the run's data: every kind is a declared read. StageFailed when evaluate has not chosen."""
    for key in CHECKPOINT_KEYS:
        ctx.uses(key)
    kind = ctx.state.iterations[iteration].chosen_checkpoint if iteration in ctx.state.iterations else None
    path = None if kind is None else ctx.find(checkpoint_key(kind), iteration)
    if path is None:
        raise StageFailed(f"{iteration}: evaluate recorded no chosen checkpoint")
    return path


def _find_inference(ctx: StageContext) -> None:
    """This iteration's inference CSVs and checkpoints as declared reads, found (and so recorded) through the
    context; which kind a reader ends up with is decided from them (artefacts.inference_csvs)."""
    for kind in CHECKPOINT_KINDS:
        ctx.find(f"inference.{kind}", ctx.iteration)
        ctx.find(checkpoint_key(kind), ctx.iteration)


def inference_csvs(ctx: StageContext) -> dict[str, Path]:
    """This iteration's inference CSVs by checkpoint kind (artefacts.inference_csvs), each a declared read, and
    the checkpoints too: two kinds naming one checkpoint share one CSV."""
    _find_inference(ctx)
    return artefacts.inference_csvs(ctx.services.run, ctx.state, ctx.iteration)


def chosen_inference_csv(ctx: StageContext) -> Path:
    """The inference CSV of the checkpoint this iteration's evaluate stage chose (declared reads)."""
    _find_inference(ctx)
    path = artefacts.chosen_inference_csv(ctx.services.run, ctx.state, ctx.state.iterations[ctx.iteration])
    if path is None:
        raise StageFailed(f"{ctx.iteration}: no committed inference CSV; the inference stage is missing")
    return path


def reference_frames(ctx: StageContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation and KPI rows in workspace coordinates, for leakage checks."""
    from deft_aoi.workspace.changenet_csv import read_changenet_csv, rebase_paths

    ws = ctx.services.workspace
    val = rebase_paths(read_changenet_csv(ws.validation_csv), ws.kpi_images, ws.root)
    kpi = rebase_paths(read_changenet_csv(ws.kpi_csv), ws.kpi_images, ws.root)
    return val, kpi
