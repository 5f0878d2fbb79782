from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import InputError, UsageError
from deft_aoi.runners.local.argv import (
    apply_overrides,
    build_task_config,
    parse_argv,
    parse_scalar,
)

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


def test_parse_argv_task_spec_and_typed_overrides() -> None:
    parsed = parse_argv(
        ["visual_changenet", "train", "-e", "specs/s.yaml", "results_dir=/r", "train.optim.lr=1e-4",
         "train.num_epochs=3", "train.pretrained_model_path=null", "train.classify.cls_weight=[1, 5]",
         "+train.seed=7", "dataset.classify.image_ext=.jpg"]
    )
    assert parsed.task == "train"
    assert parsed.spec_path == "specs/s.yaml"
    assert dict(parsed.overrides) == {
        "results_dir": "/r",
        "train.optim.lr": 1e-4,
        "train.num_epochs": 3,
        "train.pretrained_model_path": None,
        "train.classify.cls_weight": [1, 5],
        "train.seed": 7,
        "dataset.classify.image_ext": ".jpg",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("0.5", 0.5), ("12", 12), ("true", True), ("abc", "abc"), ("a: b: c", "a: b: c"),
     ("/x/model_epoch_001_step_4.pth", "/x/model_epoch_001_step_4.pth")],
)
def test_parse_scalar(text: str, expected: object) -> None:
    assert parse_scalar(text) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["visual_changenet"],
        ["visual_changenet", "export", "-e", "s.yaml"],
        ["visual_changenet", "train"],
        ["visual_changenet", "train", "-e"],
        ["visual_changenet", "train", "-e", "s.yaml", "--gpus"],
        ["visual_changenet", "train", "-e", "s.yaml", "=3"],
    ],
)
def test_parse_argv_rejects_bad_command_lines(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_argv(argv)


def test_apply_overrides_is_a_deep_copy_and_creates_parents() -> None:
    out = apply_overrides(BASE, (("train.optim.lr", 0.1), ("inference.checkpoint", "/c.pth")))
    assert out["train"]["optim"]["lr"] == 0.1
    assert out["inference"] == {"checkpoint": "/c.pth"}
    assert BASE["train"]["optim"]["lr"] == 1e-5
    assert "inference" not in BASE


def test_build_task_config_reads_keys_and_resolves_paths(tmp_path: Path) -> None:
    parsed = parse_argv(["visual_changenet", "train", "-e", "spec.yaml", "train.results_dir=out/train"])
    cfg = build_task_config(parsed, BASE, workdir=tmp_path, env_seed="11")
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
    with_seed = parse_argv(["visual_changenet", "train", "-e", "s.yaml", "train.seed=3"])
    assert build_task_config(with_seed, BASE, workdir=tmp_path, env_seed="11").seed == 3
    plain = parse_argv(["visual_changenet", "train", "-e", "s.yaml"])
    cfg = build_task_config(plain, BASE, workdir=tmp_path)
    assert cfg.seed == 0
    assert cfg.results_dir == Path("/out")
    assert cfg.checkpoint_interval == 1 and cfg.validation_interval == 1


def test_val_interval_alias_and_augmentation_switch(tmp_path: Path) -> None:
    parsed = parse_argv(
        ["visual_changenet", "train", "-e", "s.yaml", "train.val_interval=4",
         "dataset.classify.augmentation_config.augment=true"]
    )
    cfg = build_task_config(parsed, BASE, workdir=tmp_path)
    assert cfg.validation_interval == 4
    assert cfg.augment is True


def test_inference_checkpoint_and_bad_values(tmp_path: Path) -> None:
    parsed = parse_argv(["visual_changenet", "inference", "-e", "s.yaml", "inference.checkpoint=ck/m.pth"])
    assert build_task_config(parsed, BASE, workdir=tmp_path).checkpoint == tmp_path / "ck/m.pth"
    bad = parse_argv(["visual_changenet", "train", "-e", "s.yaml", "train.num_epochs=zero"])
    with pytest.raises(InputError, match=r"train\.num_epochs"):
        build_task_config(bad, BASE, workdir=tmp_path)
    no_lights = apply_overrides(BASE, (("dataset.classify.input_map", {}),))
    with pytest.raises(InputError, match="input_map"):
        build_task_config(parse_argv(["visual_changenet", "train", "-e", "s.yaml"]), no_lights, workdir=tmp_path)
