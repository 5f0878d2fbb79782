"""Small real-data workspaces for the local-backend tests: subsets of deeppcb-dev with absolute paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from deft_aoi.runners.base import Job


def subset(csv: Path, n_pass: int, n_defect: int) -> pd.DataFrame:
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    passes = df[df["label"] == "PASS"].head(n_pass)
    defects = df[df["label"] != "PASS"].head(n_defect)
    return pd.concat([passes, defects]).sort_index().reset_index(drop=True)


def make_workspace(deeppcb: Path, root: Path, *, lights: dict[str, int] | None = None) -> Path:
    """Write train/val/infer CSV subsets and a spec with absolute paths; returns the spec path."""
    root.mkdir(parents=True, exist_ok=True)
    images = deeppcb / "kpi" / "images"
    subset(deeppcb / "train/base/training_set.csv", 14, 10).to_csv(root / "train.csv", index=False)
    subset(deeppcb / "train/base/validation_set.csv", 6, 6).to_csv(root / "val.csv", index=False)
    subset(deeppcb / "kpi/testing_set.csv", 10, 8).to_csv(root / "infer.csv", index=False)
    spec: dict[str, Any] = {
        "results_dir": str(root / "results"),
        "train": {
            "num_epochs": 2,
            "checkpoint_interval": 1,
            "validation_interval": 1,
            "classify": {"cls_weight": [1.0, 3.0]},
            "optim": {"lr": 1e-3, "weight_decay": 0.01},
        },
        "dataset": {
            "classify": {
                "train_dataset": {"csv_path": str(root / "train.csv"), "images_dir": str(images)},
                "validation_dataset": {"csv_path": str(root / "val.csv"), "images_dir": str(images)},
                "test_dataset": {"csv_path": str(root / "val.csv"), "images_dir": str(images)},
                "infer_dataset": {"csv_path": str(root / "infer.csv"), "images_dir": str(images)},
                "image_ext": ".jpg",
                "batch_size": 8,
                "workers": 2,
                "input_map": lights or {"SolderLight": 0},
                "image_width": 128,
                "image_height": 128,
            }
        },
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def job(task: str, spec: Path, *overrides: str, log: Path, env: dict[str, str] | None = None,
        timeout_s: float | None = None) -> Job:
    return Job(
        name=f"local-{task}",
        image="unused",
        argv=("visual_changenet", task, "-e", str(spec), *overrides),
        log_file=log,
        workdir=spec.parent,
        env=env or {},
        timeout_s=timeout_s,
    )
