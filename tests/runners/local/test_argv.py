from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import InputError
from deft_aoi.runners.local.argv import build_task_config
from deft_aoi.runners.tao.command import ChangeNetCommand, apply_overrides, changenet_command

BASE: dict = {
    "results_dir": "/out",
    "train": {"num_epochs": 5, "optim": {"lr": 1e-5}, "classify": {"cls_weight": [1.0, 10.0]}},
    "dataset": {
        "classify": {
            "input_map": {"Top": 1, "Solder": 0},
            "image_ext": "png",
            "image_width": 96,
            "image_height": 64,
            "train_dataset": {"csv_path": "train/base/training_set.csv", "images_dir": "kpi/images"},
            "infer_dataset": {"csv_path": "/abs/kpi.csv", "images_dir": "/abs/images"},
        }
    },
}


def job(*words: str, base: dict | None = None) -> ChangeNetCommand:
    return changenet_command(["visual_changenet", *words], BASE if base is None else base)


def test_build_task_config_reads_keys_and_resolves_paths(tmp_path: Path) -> None:
    cfg = build_task_config(job("train", "-e", "spec.yaml", "train.results_dir=out/train"), workdir=tmp_path,
                            env_seed="11")
    assert cfg.results_dir == tmp_path / "out/train"  # <task>.results_dir beats results_dir
    assert cfg.lights == ("Solder", "Top")  # ordered by input_map index
    assert cfg.image_ext == ".png"
    assert (cfg.image_width, cfg.image_height) == (96, 64)
    assert cfg.num_epochs == 5
    assert cfg.lr == 1e-5
    assert cfg.cls_weight == (1.0, 10.0)
    assert cfg.seed == 11  # no train.seed → DEFT_SEED
    assert cfg.dataset("train").csv_path == tmp_path / "train/base/training_set.csv"
    assert cfg.dataset("infer").images_dir == Path("/abs/images")
    assert cfg.augment is False
    with pytest.raises(InputError, match="validation_dataset"):
        cfg.dataset("validation")


def test_seed_precedence_and_defaults(tmp_path: Path) -> None:
    with_seed = job("train", "-e", "s.yaml", "train.seed=3")
    assert build_task_config(with_seed, workdir=tmp_path, env_seed="11").seed == 3
    cfg = build_task_config(job("train", "-e", "s.yaml"), workdir=tmp_path)
    assert cfg.seed == 0
    assert cfg.results_dir == Path("/out/train")  # TAO's rule: results_dir alone gets /<task> appended
    assert cfg.checkpoint_interval == 1 and cfg.validation_interval == 1


def test_val_interval_alias_and_augmentation_switch(tmp_path: Path) -> None:
    parsed = job("train", "-e", "s.yaml", "train.val_interval=4", "dataset.classify.augmentation_config.augment=true")
    cfg = build_task_config(parsed, workdir=tmp_path)
    assert cfg.validation_interval == 4
    assert cfg.augment is True


def test_inference_checkpoint_and_bad_values(tmp_path: Path) -> None:
    parsed = job("inference", "-e", "s.yaml", "inference.checkpoint=ck/m.pth")
    assert build_task_config(parsed, workdir=tmp_path).checkpoint == tmp_path / "ck/m.pth"
    bad = job("train", "-e", "s.yaml", "train.num_epochs=zero")
    with pytest.raises(InputError, match=r"train\.num_epochs"):
        build_task_config(bad, workdir=tmp_path)
    no_lights = apply_overrides(BASE, (("dataset.classify.input_map", {}),))
    with pytest.raises(InputError, match="input_map"):
        build_task_config(job("train", "-e", "s.yaml", base=no_lights), workdir=tmp_path)
