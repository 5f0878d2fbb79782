from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.runners.tao.spec import nearest_key, render_spec, set_dotted, validate_spec, write_spec
from deft_aoi.workspace.spec_file import load_yaml_mapping


@pytest.fixture()
def doc(deeppcb_dev: Path, tmp_path: Path) -> dict:
    """The real baseline spec, rendered self-contained for a workspace at tmp_path."""
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    overrides = {"results_dir": str(tmp_path / "results" / "r")}
    for ds in ("train", "validation", "test", "infer"):
        overrides[f"dataset.classify.{ds}_dataset.csv_path"] = str(tmp_path / f"{ds}.csv")
        overrides[f"dataset.classify.{ds}_dataset.images_dir"] = str(tmp_path / "kpi" / "images")
    return render_spec(spec, overrides)


def test_real_baseline_spec_is_valid_after_rendering(doc: dict, tmp_path: Path) -> None:
    validate_spec(doc, tmp_path)


def test_render_does_not_touch_the_baseline(deeppcb_dev: Path) -> None:
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    out = render_spec(spec, {"train.num_epochs": 3, "train.optim.lr": 0.5})
    assert out["train"]["num_epochs"] == 3 and out["train"]["optim"]["lr"] == 0.5
    assert spec.raw["train"]["num_epochs"] == 10


@pytest.mark.parametrize(
    ("key", "value", "nearest"),
    [
        ("train.num_epoch", 5, "train.num_epochs"),
        ("train.checkpoint_intervall", 1, "train.checkpoint_interval"),
        ("dataset.classify.image_widht", 128, "dataset.classify.image_width"),
        ("model.backbone.typ", "x", "model.backbone.type"),
        ("datset", {}, "dataset"),
    ],
)
def test_misspelled_key_names_key_and_nearest(doc: dict, tmp_path: Path, key: str, value: object,
                                              nearest: str) -> None:
    set_dotted(doc, key, value)
    with pytest.raises(InputError) as err:
        validate_spec(doc, tmp_path, source=tmp_path / "spec.yaml")
    text = str(err.value)
    assert f"'{key}'" in text and f"'{nearest}'" in text
    assert "spec.yaml" in text


def test_automl_policy_is_not_a_spec_key(doc: dict, tmp_path: Path) -> None:
    doc["automl_policy"] = "off"
    with pytest.raises(InputError, match="automl_policy"):
        validate_spec(doc, tmp_path)


def test_unknown_key_without_near_match_lists_valid_keys(doc: dict, tmp_path: Path) -> None:
    doc["train"]["zzzz"] = 1
    with pytest.raises(InputError) as err:
        validate_spec(doc, tmp_path)
    assert "train.zzzz" in str(err.value) and "num_epochs" in str(err.value)


def test_checkpoint_interval_larger_than_epochs(doc: dict, tmp_path: Path) -> None:
    doc["train"]["num_epochs"] = 2
    doc["train"]["checkpoint_interval"] = 5
    with pytest.raises(InputError, match=r"checkpoint_interval = 5 is larger than train.num_epochs = 2"):
        validate_spec(doc, tmp_path)


def test_step_unit_interval_is_not_compared_to_epochs(doc: dict, tmp_path: Path) -> None:
    doc["train"].update(num_epochs=2, checkpoint_interval=500, checkpoint_interval_unit="step")
    validate_spec(doc, tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("dataset.classify.train_dataset.csv_path", "/etc/passwd", "outside the workspace"),
        ("train.pretrained_model_path", "models/x.pth", "relative path"),
        ("dataset.classify.infer_dataset.images_dir", "{ws}/../other", "outside the workspace"),
        ("train.num_epochs", "ten", "must be an integer"),
        ("train.num_epochs", 0, "must be ≥ 1"),
        ("dataset.classify.batch_size", True, "must be an integer"),
        ("train.classify.loss", "focal", "expected one of ce, contrastive"),
        ("train.classify.cls_weight", [1.0, "x"], "number values"),
        ("task", "segment", "the DEFT loop trains Visual ChangeNet classify"),
        ("task", "detect", "expected one of segment, classify"),
        ("dataset.classify.num_input", 3, "input_map lists 1 light"),
    ],
)
def test_bad_values_are_refused(doc: dict, tmp_path: Path, key: str, value: object, needle: str) -> None:
    if isinstance(value, str):
        value = value.replace("{ws}", str(tmp_path))
    set_dotted(doc, key, value)
    with pytest.raises(InputError) as err:
        validate_spec(doc, tmp_path)
    assert needle in str(err.value)


def test_nearest_key_falls_back_to_whole_schema() -> None:
    assert nearest_key("train.optim.momentun", []) == "train.optim.momentum"
    assert nearest_key("train.qqqq", ["num_epochs"]) is None
    assert nearest_key("model.classify.eval_margn", ["eval_margin", "embed_dec"]) == "model.classify.eval_margin"


def test_write_spec_round_trips(doc: dict, tmp_path: Path) -> None:
    path = tmp_path / "out" / "spec.yaml"
    write_spec(doc, path)
    assert load_yaml_mapping(path) == doc
