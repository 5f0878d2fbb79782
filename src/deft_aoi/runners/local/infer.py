"""`visual_changenet inference` and `evaluate` in-process.

Inference writes `inference.csv` = the infer CSV's rows and columns + `siamese_score` (softmax
probability of the defect class) through tao/outputs.write_inference_csv. Evaluate writes
`evaluation.json` (loss, accuracy, confusion at 0.5) for the test dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deft_aoi.console import progress
from deft_aoi.errors import InputError
from deft_aoi.io_utils import atomic_write_text
from deft_aoi.runners.local.argv import TaskConfig
from deft_aoi.runners.local.checkpoint import load_model
from deft_aoi.runners.local.data import PairImages, load_pairs
from deft_aoi.runners.local.joblog import JobControl, JobLog
from deft_aoi.runners.local.model import SiameseChangeNet, to_input
from deft_aoi.runners.local.runtime import (
    configure_threads,
    decode_workers,
    describe_device,
    model_config_of_checkpoint,
    pair_images,
    pick_device,
)
from deft_aoi.runners.tao.outputs import INFERENCE_CSV, write_inference_csv

PREDICT_BATCH = 256
DECISION_THRESHOLD = 0.5


def predict_logits(
    model: SiameseChangeNet, images: PairImages, device: torch.device, control: JobControl
) -> np.ndarray:
    """float64 logits (N, 2), computed in eval mode in large batches."""
    model.eval()
    n = len(images.table)
    out = np.empty((n, 2), dtype=np.float64)
    with torch.inference_mode(), progress() as bars:
        task = bars.add_task("scoring", total=n, rate="")
        for start in range(0, n, PREDICT_BATCH):
            control.check()
            idx = np.arange(start, min(start + PREDICT_BATCH, n))
            out[idx] = model(to_input(images.batch(idx), device)).double().cpu().numpy()
            bars.advance(task, len(idx))
    return out


def defect_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of class 1 (defect), computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probability: np.ndarray = exp[:, 1] / exp.sum(axis=1)
    return probability


def evaluation_metrics(
    logits: np.ndarray, targets: np.ndarray, cls_weight: tuple[float, float], threshold: float = DECISION_THRESHOLD
) -> dict[str, Any]:
    """Weighted cross-entropy (the training loss), accuracy and the confusion matrix at `threshold`
    (positive = defect, predicted iff probability > threshold)."""
    loss = float(
        nn.functional.cross_entropy(
            torch.from_numpy(logits),
            torch.from_numpy(targets.astype(np.int64)),
            weight=torch.tensor(cls_weight, dtype=torch.float64),
        )
    ) if len(targets) else float("nan")
    predicted = defect_probability(logits) > threshold
    actual = targets.astype(bool)
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    tn = int((~predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    return {
        "rows": len(targets),
        "loss": loss,
        "accuracy": (tp + tn) / len(targets) if len(targets) else float("nan"),
        "threshold": threshold,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def _checkpoint(cfg: TaskConfig) -> Path:
    if cfg.checkpoint is None:
        raise InputError(f"no {cfg.task}.checkpoint given (pass {cfg.task}.checkpoint=<model.pth>)", file=cfg.spec_path)
    return cfg.checkpoint


def _input_columns(csv_path: Path) -> list[str]:
    """The infer CSV's own header, so inference.csv keeps its columns (no padding to 14)."""
    import pandas as pd

    header = pd.read_csv(csv_path, nrows=0, dtype=str, encoding="utf-8-sig")
    return [str(c).strip() for c in header.columns]


def _score(cfg: TaskConfig, dataset: str, log: JobLog, control: JobControl) -> tuple[Any, np.ndarray]:
    configure_threads()
    device = pick_device(control.device)
    ckpt = _checkpoint(cfg)
    wanted = model_config_of_checkpoint(cfg, ckpt)
    model = load_model(ckpt, wanted).to(device)
    table = load_pairs(cfg.dataset(dataset), cfg.lights, cfg.image_ext)
    images = pair_images(table, wanted, decode_workers(cfg.workers))
    log.line(f"{cfg.task}: {len(table)} rows from {table.csv_path} with {ckpt} on {describe_device(device)}")
    return table, predict_logits(model, images, device, control)


def run_inference(cfg: TaskConfig, log: JobLog, control: JobControl) -> None:
    table, logits = _score(cfg, "infer", log, control)
    columns = _input_columns(table.csv_path)
    out_path = cfg.results_dir / INFERENCE_CSV
    write_inference_csv(table.rows[columns], defect_probability(logits), out_path)
    log.line(f"wrote {out_path}")


def run_evaluate(cfg: TaskConfig, log: JobLog, control: JobControl) -> None:
    table, logits = _score(cfg, "test", log, control)
    metrics = evaluation_metrics(logits, table.targets, cfg.cls_weight)
    metrics["checkpoint"] = str(_checkpoint(cfg))
    metrics["csv_path"] = str(table.csv_path)
    out_path = cfg.results_dir / "evaluation.json"
    atomic_write_text(out_path, json.dumps(metrics, indent=2) + "\n")
    log.line(
        f"evaluate: loss={metrics['loss']:.4f} accuracy={metrics['accuracy']:.4f} "
        f"confusion={metrics['confusion']}; wrote {out_path}"
    )
