"""THE TAO command-line parser (runners/tao/command.py): tokens, typed overrides, TAO's results_dir rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import UsageError
from deft_aoi.runners.tao.command import (
    apply_overrides,
    changenet_command,
    load_changenet,
    parse_command,
    parse_overrides,
    parse_value,
    results_dir,
)

BASE: dict = {"results_dir": "/out", "train": {"num_epochs": 5, "optim": {"lr": 1e-5}}}


def test_parse_command_words_spec_and_typed_overrides() -> None:
    cmd = parse_command(
        ["visual_changenet", "train", "-e", "specs/s.yaml", "results_dir=/r", "train.optim.lr=1e-4",
         "train.num_epochs=3", "train.pretrained_model_path=null", "train.classify.cls_weight=[1, 5]",
         "+train.seed=7", "dataset.classify.image_ext=.jpg", "name='a b'"]
    )
    assert (cmd.program, cmd.command, cmd.spec_path) == ("visual_changenet", "train", "specs/s.yaml")
    assert cmd.override_dict() == {
        "results_dir": "/r",
        "train.optim.lr": 1e-4,
        "train.num_epochs": 3,
        "train.pretrained_model_path": None,
        "train.classify.cls_weight": [1, 5],
        "train.seed": 7,
        "dataset.classify.image_ext": ".jpg",
        "name": "a b",
    }
    ds = parse_command(["tmm", "nearest_neighbors", "--experiment_spec_file", "x.yaml", "topn=5"])
    assert (ds.program, ds.command, ds.spec_path, ds.override_dict()) == ("tmm", "nearest_neighbors", "x.yaml",
                                                                          {"topn": 5})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("0.5", 0.5), ("12", 12), ("true", True), ("abc", "abc"), ("a: b: c", "a: b: c"),
     ("/x/model_epoch_001_step_4.pth", "/x/model_epoch_001_step_4.pth"), ("'3'", "3"), ("'it\\'s'", "it's")],
)
def test_parse_value(text: str, expected: object) -> None:
    assert parse_value(text) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["visual_changenet"],
        ["visual_changenet", "train"],
        ["visual_changenet", "train", "-e"],
        ["visual_changenet", "train", "-e", "s.yaml", "--gpus"],
        ["visual_changenet", "train", "-e", "s.yaml", "=3"],
        ["-e", "s.yaml"],
    ],
)
def test_parse_command_rejects_bad_command_lines(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_command(argv)


def test_parse_overrides_rejects_non_overrides() -> None:
    with pytest.raises(UsageError, match="not a key=value override"):
        parse_overrides(["--gpus"])


def test_changenet_command_refuses_other_programs_and_tasks() -> None:
    for argv in (["visual_changenet", "gen_trt_engine", "-e", "s.yaml"], ["tmm", "train", "-e", "s.yaml"]):
        with pytest.raises(UsageError, match="visual_changenet"):
            changenet_command(argv, BASE)


def test_apply_overrides_is_a_deep_copy_and_creates_parents() -> None:
    out = apply_overrides(BASE, (("train.optim.lr", 0.1), ("inference.checkpoint", "/c.pth")))
    assert out["train"]["optim"]["lr"] == 0.1
    assert out["inference"] == {"checkpoint": "/c.pth"}
    assert BASE["train"]["optim"]["lr"] == 1e-5
    assert "inference" not in BASE


@pytest.mark.parametrize(
    ("doc", "task", "expected"),
    [
        ({"results_dir": "/r", "train": {"results_dir": "/t"}}, "train", "/t"),  # <task>.results_dir wins
        ({"results_dir": "/r"}, "train", "/r/train"),  # else results_dir/<task>
        ({"results_dir": "/r", "evaluate": {"results_dir": None}}, "evaluate", "/r/evaluate"),
        ({"results_dir": "/r", "inference": {"results_dir": ""}}, "inference", "/r/inference"),  # empty = unset
    ],
)
def test_results_dir_is_taos_rule(doc: dict, task: str, expected: str) -> None:
    assert results_dir(doc, task) == expected


def test_results_dir_unset_is_taos_error() -> None:
    with pytest.raises(UsageError, match=r"results_dir, train\.results_dir"):
        results_dir({"train": {"results_dir": None}}, "train")


def test_changenet_command_applies_overrides_before_resolving(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("results_dir: /base\ntrain:\n  num_epochs: 2\n  results_dir: ${results_dir}/mine\n")
    job = load_changenet(["visual_changenet", "train", "-e", "s.yaml", "results_dir=/over"], workdir=tmp_path)
    assert job.task == "train"
    assert job.results_dir == "/over/mine"  # the override reaches the interpolation, as in Hydra
    assert job.doc["train"]["results_dir"] == "${results_dir}/mine"  # as written
    assert job.get("train.num_epochs") == 2
