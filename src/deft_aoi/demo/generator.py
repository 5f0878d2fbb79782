"""`generate_workspace`: a complete, deterministic demo AOI workspace (CONTRACTS §1) with no downloads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from deft_aoi.demo.readme import SPLIT_FILES, readme_text
from deft_aoi.demo.spec import IMAGE_EXT, LIGHT, demo_spec_text
from deft_aoi.demo.splits import csv_frame, plan_synthetic, plan_workspace
from deft_aoi.demo.writer import (
    RowJob,
    SynthJob,
    check_target,
    install,
    run_jobs,
    staging_dir,
    tree_size,
    write_csv,
    write_jsonl,
    write_text,
)
from deft_aoi.errors import UsageError
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.scaffold import ENV_TEMPLATE, resource_text

if TYPE_CHECKING:
    import pandas as pd

SYNTH_EXT = ".png"


class DemoSummary(BaseModel):
    path: Path
    seed: int
    size: Literal["small", "medium"]
    rows: dict[str, int]
    labels: dict[str, dict[str, int]]  # split → label → rows
    nuisance_rows: dict[str, int]  # split → rows with any nuisance tag
    synthetic_pairs: dict[str, int]  # defect type → pairs
    files: int
    total_bytes: int


def count_rows(
    plan: pd.DataFrame, synth: pd.DataFrame
) -> tuple[dict[str, dict[str, int]], dict[str, int], dict[str, int]]:
    """(split → label → rows, split → rows with nuisance, defect type → synthetic pairs)."""
    labels: dict[str, dict[str, int]] = {}
    nuisance: dict[str, int] = {}
    for split in SPLIT_FILES:
        rows = plan[plan["split"] == split]
        labels[split] = {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()}
        nuisance[split] = int((rows["nuisance"] != "").sum())
    synthetic = {str(k): int(v) for k, v in synth["defect_type"].value_counts().sort_index().items()}
    return labels, nuisance, synthetic


def _images_root(layout: WorkspaceLayout, split: str) -> Path:
    return layout.mining_pool_dir if split == "mining_pool" else layout.kpi_images


def _default_workers() -> int:
    # Cores this process may use (a container's CPU set), not the host's count.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, usable))


def generate_workspace(
    out: Path,
    *,
    seed: int = 7,
    size: Literal["small", "medium"] = "small",
    force: bool = False,
    workers: int | None = None,
) -> DemoSummary:
    """Write the demo workspace to `out` (a new or empty directory; with `force`, the generator's own
    files there are replaced and everything else is left alone). Same seed and size → identical bytes."""
    if size not in ("small", "medium"):
        raise UsageError(f"unknown size {size!r}; choose small or medium")
    if seed < 0:
        raise UsageError("--seed must be ≥ 0")
    out = Path(out).expanduser().absolute()
    check_target(out, force)
    plan = plan_workspace(seed, size)
    synth = plan_synthetic(seed, size)

    stage = staging_dir(out)
    try:
        layout = WorkspaceLayout(stage)
        # Records, not itertuples: a record's values are typed (Any) where a row tuple's are pandas' scalar union.
        rows = [
            RowJob(str(_images_root(layout, r["split"])), r["input_path"], r["golden_path"], r["object_name"],
                   r["comp_type_1"], r["label"], r["nuisance"], int(r["row_seed"]))
            for r in plan.to_dict("records")
        ]
        synth_jobs = [
            SynthJob(str(layout.synth_ng_dir / f"{s['stem']}{SYNTH_EXT}"),
                     str(layout.synth_ok_dir / f"{s['stem']}{SYNTH_EXT}"), s["comp_type"], s["defect_type"],
                     int(s["row_seed"]))
            for s in synth.to_dict("records")
        ]
        run_jobs(rows, synth_jobs, LIGHT, IMAGE_EXT, workers or _default_workers())

        for split, rel in SPLIT_FILES.items():
            write_csv(csv_frame(plan[plan["split"] == split]), stage / rel)
        write_jsonl(
            layout.defect_spec,
            (
                {"defect_type": d, "count": len(g), "stems": g["stem"].tolist()}
                for d, g in synth.groupby("defect_type", sort=True)
            ),
        )
        labels, nuisance_rows, synthetic_pairs = count_rows(plan, synth)
        write_text(layout.spec_file, demo_spec_text())
        write_text(stage / ".env.example", resource_text(ENV_TEMPLATE))
        write_text(stage / "README.md", readme_text(seed=seed, size=size, labels=labels, nuisance_rows=nuisance_rows,
                                                    synthetic=synthetic_pairs, light=LIGHT, ext=IMAGE_EXT))
        files, total = tree_size(stage)
        install(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return DemoSummary(
        path=out,
        seed=seed,
        size=size,
        rows={split: sum(c.values()) for split, c in labels.items()},
        labels=labels,
        nuisance_rows=nuisance_rows,
        synthetic_pairs=synthetic_pairs,
        files=files,
        total_bytes=total,
    )
