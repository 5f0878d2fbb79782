from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deft_aoi.analysis.handoff import CONSUMER_FILLS, inference_spec, write_best_model
from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import load_spec


def test_best_model_files_follow_the_contract(deeppcb_dev: Path, tmp_path: Path) -> None:
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    ckpt = tmp_path / "iter2" / "train" / "model_epoch_004_step_60.pth"
    json_path, yaml_path = write_best_model(
        tmp_path, checkpoint=ckpt, threshold=0.4213, far_pct=12.5, iteration="iter2", spec=spec,
        images_dir=deeppcb_dev, training_spec=spec.path,
    )
    assert json_path == tmp_path / "best_model.json" and yaml_path == tmp_path / "best_model_inference_spec.yaml"
    best = json.loads(json_path.read_text())
    assert best == {"checkpoint": str(ckpt), "threshold": 0.4213, "far_pct": 12.5, "iteration": "iter2",
                    "backbone": "c_radio_v2_vit_base_patch16_224", "images_dir": str(deeppcb_dev),
                    "training_spec": str(spec.path)}
    doc = yaml.safe_load(yaml_path.read_text())
    assert doc["model"]["classify"]["eval_margin"] == pytest.approx(0.4213)
    assert doc["model"]["backbone"] == spec.raw["model"]["backbone"]
    classify = doc["dataset"]["classify"]
    assert not {"train_dataset", "validation_dataset", "test_dataset"} & classify.keys()
    assert classify["infer_dataset"] == {"csv_path": CONSUMER_FILLS, "images_dir": CONSUMER_FILLS}
    assert classify["input_map"] == {"SolderLight": 0} and classify["image_ext"] == ".jpg"
    assert doc["inference"]["checkpoint"] == str(ckpt)
    # TAO builds the loss while loading the checkpoint: the training loss travels, nothing else of train
    assert doc["train"] == {"classify": {"loss": "ce", "cls_weight": [1.0, 10.0]}}


def test_inference_spec_switches_augmentation_off() -> None:
    training = {
        "model": {"backbone": {"type": "x"}},
        "dataset": {"classify": {"augmentation": {"random_flip": {"enable": True, "hflip_probability": 0.5},
                                                  "augment": True}, "train_dataset": {"csv_path": "t.csv"}}},
        "train": {"num_epochs": 3},
    }
    doc = inference_spec(training, checkpoint=Path("/c.pth"), threshold=0.1)
    aug = doc["dataset"]["classify"]["augmentation"]
    assert aug == {"random_flip": {"enable": False, "hflip_probability": 0.5}, "augment": False}
    assert training["dataset"]["classify"]["augmentation"]["augment"] is True  # input untouched
    assert doc["model"]["classify"]["eval_margin"] == 0.1


def test_missing_training_spec_is_an_input_error(deeppcb_dev: Path, tmp_path: Path) -> None:
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    with pytest.raises(InputError, match="not found"):
        write_best_model(tmp_path, checkpoint=tmp_path / "c.pth", threshold=0.5, far_pct=1.0, iteration="iter1",
                         spec=spec, images_dir=deeppcb_dev, training_spec=tmp_path / "gone.yaml")
