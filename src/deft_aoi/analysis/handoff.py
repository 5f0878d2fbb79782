"""Loop-end handoff (CONTRACTS §8): `best_model.json` and an inference spec that runs as handed.

The inference spec keeps model.* and dataset.classify.* of the spec the best checkpoint was trained with,
drops the train/validation/test datasets, points the infer dataset at the workspace's KPI set (so
`visual_changenet inference -e <spec>` runs unchanged in deft's container, which mounts the workspace at the
same path; a consumer overrides csv_path / images_dir for their own data), points inference.checkpoint at the
best checkpoint, sets model.classify.eval_margin to the KPI threshold and switches augmentation off. As NVIDIA's
hand-off (tao-skill-bank tao-run-deft-aoi `prepare_inference_spec.py`) it writes batch_size 1 and workers 1: a
consumer's CSV may hold a single row. It keeps `train.classify` (loss, cls_weight): TAO builds the loss while
loading any checkpoint, and without it the default contrastive loss asserts against a learnable difference
module (tao_rules.loss_rule). The backbone path stays the container path the training spec named (made
absolute under the workspace, where deft's container sees it); `best_model.json` names the host file, that
container path and the backbone type, as NVIDIA's hand-off does.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from deft_aoi.dotted import get_dotted, set_dotted
from deft_aoi.io_utils import atomic_write_text
from deft_aoi.runners.tao.changenet_spec import load_spec_document
from deft_aoi.workspace.layout import RunLayout

if TYPE_CHECKING:
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec

_STRIPPED_DATASETS = ("train_dataset", "validation_dataset", "test_dataset")
# NVIDIA's hand-off loader settings: any CSV of ≥ 1 row runs (a batch larger than the CSV is refused).
HANDOFF_BATCH_SIZE = 1
HANDOFF_WORKERS = 1
_BACKBONE_KEY = "model.backbone.pretrained_backbone_path"


class BestModel(BaseModel):
    checkpoint: str
    threshold: float
    far_pct: float
    iteration: str
    backbone: str | None  # the backbone file on this host (None: the spec trains from random weights)
    backbone_container_path: str | None  # where the inference spec expects it inside the container
    backbone_type: str
    images_dir: str
    training_spec: str
    onnx: str | None = None  # `visual_changenet export` of the checkpoint (--export onnx), else None


def _augmentation_off(node: Any) -> Any:
    """Every `enable`/`augment` flag under an augmentation block set to False (inference must not augment)."""
    if isinstance(node, dict):
        return {k: (False if k in ("enable", "enabled", "augment") and isinstance(v, bool) else _augmentation_off(v))
                for k, v in node.items()}
    return node


def inference_spec(training: dict[str, Any], *, checkpoint: Path, threshold: float, infer_csv: Path,
                   infer_images: Path, workspace: Path | None = None) -> dict[str, Any]:
    """Pure: the inference spec document derived from a training spec mapping. A relative backbone path is made
    absolute under `workspace` (the container's working dir and its mount, at the same path)."""
    model = copy.deepcopy(training.get("model") or {})
    model.setdefault("classify", {})
    model["classify"]["eval_margin"] = float(threshold)
    classify = copy.deepcopy(((training.get("dataset") or {}).get("classify")) or {})
    for key in _STRIPPED_DATASETS:
        classify.pop(key, None)
    classify["infer_dataset"] = {"csv_path": str(infer_csv), "images_dir": str(infer_images)}
    classify["batch_size"] = HANDOFF_BATCH_SIZE
    classify["workers"] = HANDOFF_WORKERS
    for key in [k for k in classify if "augment" in k]:
        classify[key] = _augmentation_off(classify[key])
    backbone = get_dotted(model, _BACKBONE_KEY.partition(".")[2])
    if workspace is not None and isinstance(backbone, str) and backbone and not os.path.isabs(backbone):
        set_dotted(model, _BACKBONE_KEY.partition(".")[2], os.path.normpath(str(Path(workspace) / backbone)))
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
    infer_csv: Path,
    training_spec: Path,
    workspace: Path,
    onnx: Path | None = None,
) -> tuple[Path, Path]:
    """Write `best_model.json` and `best_model_inference_spec.yaml` into the run root. The infer dataset is
    `infer_csv` with its images under `images_dir` (the loop hands the KPI set)."""
    run_root = Path(run_root)
    run = RunLayout(run_root)
    json_path, yaml_path = run.best_model_json, run.best_model_spec
    # The checkpoint was trained with `training_spec`; the parsed workspace spec stands in for it only when
    # it names that same document (a missing file of any other name is an error).
    same_document = Path(training_spec) == Path(spec.path)
    training = spec.raw if same_document and not Path(training_spec).is_file() else load_spec_document(training_spec)
    doc = inference_spec(training, checkpoint=checkpoint, threshold=threshold, infer_csv=infer_csv,
                         infer_images=images_dir, workspace=workspace)
    container_backbone = get_dotted(doc, _BACKBONE_KEY)
    host_backbone = str(container_backbone) if container_backbone else None
    best = BestModel(checkpoint=str(checkpoint), threshold=float(threshold), far_pct=float(far_pct),
                     iteration=iteration, backbone=host_backbone, backbone_container_path=host_backbone,
                     backbone_type=str(get_dotted(doc, "model.backbone.type") or spec.backbone),
                     images_dir=str(images_dir), training_spec=str(training_spec),
                     onnx=None if onnx is None else str(onnx))
    header = (
        f"# Inference spec of the best DEFT model ({iteration}, FAR {far_pct:g}% at recall 100%).\n"
        f"# Runs as handed on the KPI set: visual_changenet inference -e <this file> results_dir=<dir>\n"
        f"# Other data: override dataset.classify.infer_dataset.csv_path=<csv> and .images_dir=<dir>.\n"
    )
    atomic_write_text(json_path, json.dumps(best.model_dump(), indent=2) + "\n")
    atomic_write_text(yaml_path, header + yaml.safe_dump(doc, sort_keys=False))
    return json_path, yaml_path
