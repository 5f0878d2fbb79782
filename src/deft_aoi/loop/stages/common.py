"""Small helpers the stages share: reading earlier stages' outputs from the state, time stamps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import StageFailed

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.loop.engine import StageContext


def stamp(ctx: StageContext) -> str:
    """`YYYYMMDD_HHMMSS` of the stage's start, for `rca_results/<TS>/`-style dirs."""
    return ctx.started_at.replace("-", "").replace(":", "").replace("T", "_").removesuffix("Z")[:15]


def count_rows(csv: Path) -> int:
    """Data rows of a CSV by counting lines (sizes a job timeout; no parse needed)."""
    with open(csv, "rb") as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)


def run_path(ctx: StageContext, value: str | None, what: str) -> Path:
    if not value:
        raise StageFailed(f"{ctx.iteration}: {what} is not recorded in the state; an earlier stage is missing")
    path = Path(value)
    return path if path.is_absolute() else ctx.services.run.root / path


def stage_output(ctx: StageContext, iteration: str, stage: str, key: str) -> Path:
    it = ctx.state.iterations.get(iteration)
    rec = it.stages.get(stage) if it else None
    if rec is None or rec.status != "complete" or key not in rec.outputs:
        raise StageFailed(f"{iteration}/{stage} has no committed output '{key}'")
    return run_path(ctx, rec.outputs[key], f"{iteration}/{stage}:{key}")


def reference_frames(ctx: StageContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation and KPI rows in workspace coordinates, for leakage checks."""
    from deft_aoi.workspace.changenet_csv import read_changenet_csv, rebase_paths

    ws = ctx.services.workspace
    val = rebase_paths(read_changenet_csv(ws.validation_csv), ws.kpi_images, ws.root)
    kpi = rebase_paths(read_changenet_csv(ws.kpi_csv), ws.kpi_images, ws.root)
    return val, kpi
