"""Train throughput of the local backend (image pairs per second) on a deeppcb-dev subset.

    .venv/bin/python bench/local_train_speed.py [--rows 300] [--epochs 5] [--size 128]

Runs a warm-up job (imports, decode cache), then a timed train job per device (CPU, and CUDA when
torch sees one) and prints the median per-epoch rate from the job log plus the whole job's wall time.
The demo budget assumes ~300 rows at 128 px train in about 1-2 s per epoch on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb-dev"
RATE_RE = re.compile(r"epoch \d+/\d+ .*\(([\d.]+) s, (\d+) img-pairs/s\)")


def write_spec(root: Path, rows: int, size: int, epochs: int) -> Path:
    images = DEEPPCB / "kpi" / "images"
    train = pd.read_csv(DEEPPCB / "train/base/training_set.csv", dtype=str, keep_default_na=False)
    kpi = pd.read_csv(DEEPPCB / "kpi/testing_set.csv", dtype=str, keep_default_na=False)
    pd.concat([train, kpi]).head(rows).to_csv(root / "train.csv", index=False)
    spec = {
        "results_dir": str(root / "results"),
        "train": {"num_epochs": epochs, "checkpoint_interval": 1, "validation_interval": 1,
                  "classify": {"cls_weight": [1.0, 10.0]}, "optim": {"lr": 1e-3}},
        "dataset": {"classify": {
            "train_dataset": {"csv_path": str(root / "train.csv"), "images_dir": str(images)},
            "validation_dataset": {"csv_path": str(DEEPPCB / "train/base/validation_set.csv"),
                                   "images_dir": str(images)},
            "image_ext": ".jpg", "batch_size": 16, "workers": 2, "input_map": {"SolderLight": 0},
            "image_width": size, "image_height": size,
        }},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def run_job(spec: Path, out: Path, epochs: int) -> tuple[float, list[float]]:
    from deft_aoi.runners.base import Job
    from deft_aoi.runners.local import LocalRunner
    from deft_aoi.workspace.layout import WorkspaceLayout

    runner = LocalRunner(WorkspaceLayout.at(spec.parent))
    log = out.with_suffix(".log")
    started = time.perf_counter()
    result = runner.run(Job(name="bench", image="", log_file=log, workdir=spec.parent,
                            argv=("visual_changenet", "train", "-e", str(spec), f"results_dir={out}",
                                  f"train.num_epochs={epochs}")))
    wall = time.perf_counter() - started
    if not result.ok:
        sys.exit(f"train failed:\n{log.read_text()}")
    rates = [float(m[2]) for m in RATE_RE.finditer(log.read_text())]
    return wall, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="spec image_width/height (px)")
    args = parser.parse_args()
    if not DEEPPCB.is_dir():
        sys.exit(f"deeppcb-dev not found at {DEEPPCB}")
    from deft_aoi.runners.local import require_torch

    require_torch()  # the local backend's import sets the OpenMP wait policy, which must precede torch's
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = write_spec(root, args.rows, args.size, args.epochs)
        for device in devices:
            os.environ["DEFT_LOCAL_DEVICE"] = device
            run_job(spec, root / f"warm_{device}", 1)
            wall, rates = run_job(spec, root / f"timed_{device}", args.epochs)
            median = statistics.median(rates) if rates else float("nan")
            print(f"{device:5s} rows={args.rows} size={args.size}px epochs={args.epochs}: "
                  f"median {median:.0f} pairs/s per epoch ({args.rows / median:.2f} s/epoch), "
                  f"job wall {wall:.1f} s ({args.rows * args.epochs / wall:.0f} pairs/s incl. validation)")


if __name__ == "__main__":
    main()
