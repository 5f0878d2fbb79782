"""Loop-end handoff (CONTRACTS §8): `best_model.json` and a ready-to-fill inference spec.

The inference spec keeps model.* and dataset.classify.* of the spec the best checkpoint was trained with,
drops the train/validation/test datasets, leaves the infer dataset for the consumer (OmegaConf's "???"
marks a mandatory value, so TAO names it if left unset), points inference.checkpoint at the best
checkpoint, sets model.classify.eval_margin to the KPI threshold and switches augmentation off. It keeps
`train.classify` (loss, cls_weight): TAO builds the loss while loading any checkpoint, and without it the default
contrastive loss asserts against a learnable difference module (tao_rules.loss_rule).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from deft_aoi.io_utils import atomic_write_text
from deft_aoi.runners.tao.changenet_spec import load_spec_document
from deft_aoi.workspace.layout import RunLayout

if TYPE_CHECKING:
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec

CONSUMER_FILLS = "???"
_STRIPPED_DATASETS = ("train_dataset", "validation_dataset", "test_dataset")


class BestModel(BaseModel):
    checkpoint: str
    threshold: float
    far_pct: float
    iteration: str
    backbone: str
    images_dir: str
    training_spec: str


def _augmentation_off(node: Any) -> Any:
    """Every `enable`/`augment` flag under an augmentation block set to False (inference must not augment)."""
    if isinstance(node, dict):
        return {k: (False if k in ("enable", "enabled", "augment") and isinstance(v, bool) else _augmentation_off(v))
                for k, v in node.items()}
    return node


def inference_spec(training: dict[str, Any], *, checkpoint: Path, threshold: float) -> dict[str, Any]:
    """Pure: the inference spec document derived from a training spec mapping."""
    model = copy.deepcopy(training.get("model") or {})
    model.setdefault("classify", {})
    model["classify"]["eval_margin"] = float(threshold)
    classify = copy.deepcopy(((training.get("dataset") or {}).get("classify")) or {})
    for key in _STRIPPED_DATASETS:
        classify.pop(key, None)
    classify["infer_dataset"] = {"csv_path": CONSUMER_FILLS, "images_dir": CONSUMER_FILLS}
    for key in [k for k in classify if "augment" in k]:
        classify[key] = _augmentation_off(classify[key])
    inference = copy.deepcopy(training.get("inference") or {})
    inference["checkpoint"] = str(checkpoint)
    doc: dict[str, Any] = {}
    if "task" in training:
        doc["task"] = training["task"]
    doc.update({"model": model, "dataset": {"classify": classify}})
    train_classify = (training.get("train") or {}).get("classify")
    if train_classify:
        doc["train"] = {"classify": copy.deepcopy(train_classify)}
    doc["inference"] = inference
    return doc


def write_best_model(
    run_root: Path,
    *,
    checkpoint: Path,
    threshold: float,
    far_pct: float,
    iteration: str,
    spec: ChangeNetSpec,
    images_dir: Path,
    training_spec: Path,
) -> tuple[Path, Path]:
    """Write `best_model.json` and `best_model_inference_spec.yaml` into the run root."""
    run_root = Path(run_root)
    best = BestModel(checkpoint=str(checkpoint), threshold=float(threshold), far_pct=float(far_pct),
                     iteration=iteration, backbone=spec.backbone, images_dir=str(images_dir),
                     training_spec=str(training_spec))
    run = RunLayout(run_root)
    json_path, yaml_path = run.best_model_json, run.best_model_spec
    # The checkpoint was trained with `training_spec`; the parsed workspace spec stands in for it only when
    # it names that same document (a missing file of any other name is an error).
    same_document = Path(training_spec) == Path(spec.path)
    training = spec.raw if same_document and not Path(training_spec).is_file() else load_spec_document(training_spec)
    doc = inference_spec(training, checkpoint=checkpoint, threshold=threshold)
    header = (
        f"# Inference spec of the best DEFT model ({iteration}, FAR {far_pct:g}% at recall 100%).\n"
        f"# Fill dataset.classify.infer_dataset (csv_path, images_dir) before running\n"
        f"#   visual_changenet inference -e <this file> results_dir=<dir>\n"
    )
    atomic_write_text(json_path, json.dumps(best.model_dump(), indent=2) + "\n")
    atomic_write_text(yaml_path, header + yaml.safe_dump(doc, sort_keys=False))
    return json_path, yaml_path
