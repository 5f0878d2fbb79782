from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deft_aoi.analysis.handoff import inference_spec, write_best_model
from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.workspace.layout import WorkspaceLayout


def test_best_model_files_follow_the_contract(deeppcb_dev: Path, tmp_path: Path) -> None:
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    ckpt = tmp_path / "iter2" / "train" / "model_epoch_004_step_60.pth"
    ws = WorkspaceLayout(deeppcb_dev)
    json_path, yaml_path = write_best_model(
        tmp_path, checkpoint=ckpt, threshold=0.4213, far_pct=12.5, iteration="iter2", spec=spec,
        images_dir=ws.kpi_images, infer_csv=ws.kpi_csv, training_spec=spec.path, workspace=ws.root,
    )
    assert json_path == tmp_path / "best_model.json" and yaml_path == tmp_path / "best_model_inference_spec.yaml"
    best = json.loads(json_path.read_text())
    # deeppcb-dev trains from random weights (pretrained_backbone_path: null): no backbone file to name
    assert best == {"checkpoint": str(ckpt), "threshold": 0.4213, "far_pct": 12.5, "iteration": "iter2",
                    "backbone": None, "backbone_container_path": None,
                    "backbone_type": "c_radio_v2_vit_base_patch16_224", "images_dir": str(ws.kpi_images),
                    "training_spec": str(spec.path), "onnx": None}
    doc = yaml.safe_load(yaml_path.read_text())
    assert doc["model"]["classify"]["eval_margin"] == pytest.approx(0.4213)
    assert doc["model"]["backbone"] == spec.raw["model"]["backbone"]
    classify = doc["dataset"]["classify"]
    assert not {"train_dataset", "validation_dataset", "test_dataset"} & classify.keys()
    # runs as handed on the KPI set; a batch of 1 and one worker, as NVIDIA's hand-off, so any CSV runs
    assert classify["infer_dataset"] == {"csv_path": str(ws.kpi_csv), "images_dir": str(ws.kpi_images)}
    assert (classify["batch_size"], classify["workers"]) == (1, 1)
    assert "???" not in yaml_path.read_text()
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
    doc = inference_spec(training, checkpoint=Path("/c.pth"), threshold=0.1, infer_csv=Path("/w/k.csv"),
                         infer_images=Path("/w/i"))
    aug = doc["dataset"]["classify"]["augmentation"]
    assert aug == {"random_flip": {"enable": False, "hflip_probability": 0.5}, "augment": False}
    assert training["dataset"]["classify"]["augmentation"]["augment"] is True  # input untouched
    assert doc["model"]["classify"]["eval_margin"] == 0.1


def test_missing_training_spec_is_an_input_error(deeppcb_dev: Path, tmp_path: Path) -> None:
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    with pytest.raises(InputError, match="not found"):
        write_best_model(tmp_path, checkpoint=tmp_path / "c.pth", threshold=0.5, far_pct=1.0, iteration="iter1",
                         spec=spec, images_dir=deeppcb_dev, infer_csv=deeppcb_dev / "kpi" / "testing_set.csv",
                         training_spec=tmp_path / "gone.yaml", workspace=deeppcb_dev)


def test_best_model_names_the_backbone_file_its_container_path_and_type(tmp_path: Path) -> None:
    """NVIDIA's hand-off: `backbone` = the host file, `backbone_container_path` = where the spec loads it,
    `backbone_type` = the type. deft mounts the workspace at the same path, so a relative path becomes the
    workspace path in both."""
    ws = tmp_path / "ws"
    staged = ws / "augmentation" / "backbone" / "c_radio_v2_b.safetensors"
    training = {"task": "classify",
                "model": {"backbone": {"type": "c_radio_v2_vit_base_patch16_224",
                                       "pretrained_backbone_path": "augmentation/backbone/c_radio_v2_b.safetensors"}},
                "dataset": {"classify": {"batch_size": 16, "workers": 2, "input_map": {"SolderLight": 0}}}}
    spec_file = tmp_path / "train_spec.yaml"
    spec_file.write_text(yaml.safe_dump(training))
    spec = load_spec(spec_file)
    json_path, yaml_path = write_best_model(
        tmp_path / "run", checkpoint=tmp_path / "c.pth", threshold=0.5, far_pct=1.0, iteration="iter1", spec=spec,
        images_dir=ws / "kpi" / "images", infer_csv=ws / "kpi" / "testing_set.csv", training_spec=spec_file,
        workspace=ws)
    best = json.loads(json_path.read_text())
    assert best["backbone"] == str(staged) and best["backbone_container_path"] == str(staged)
    assert best["backbone_type"] == "c_radio_v2_vit_base_patch16_224"
    assert yaml.safe_load(yaml_path.read_text())["model"]["backbone"]["pretrained_backbone_path"] == str(staged)


def test_the_handoff_of_a_finished_run_runs_unchanged_on_a_one_row_csv(demo_ws: Path, tmp_path: Path) -> None:
    """Issue 27 point 5: the hand-off spec of a finished run passes TAO's schema and rules for inference as
    handed, and (fake TAO, which enforces the same rules) scores a one-row CSV given on the command line."""
    from typer.testing import CliRunner

    from deft_aoi.cli.app import app
    from deft_aoi.runners.fake.tao import Execution, run_changenet_command
    from deft_aoi.runners.tao import rules as tao_rules
    from deft_aoi.runners.tao.spec import effective_spec, validate_spec
    from deft_aoi.runners.tao.versions import load_versions

    result = CliRunner().invoke(app, ["run", "-w", str(demo_ws), "--yes", "--backend", "fake", "--max-iterations",
                                      "1", "--epochs", "2", "--seed", "1"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    (run,) = sorted((demo_ws / "results").glob("run_*"))
    spec_path = run / "best_model_inference_spec.yaml"
    text = spec_path.read_text()
    assert "???" not in text
    doc = yaml.safe_load(text)
    image = load_versions(WorkspaceLayout.at(demo_ws)).pyt
    validate_spec(doc, demo_ws, source=spec_path, image=image, task="inference")  # raises on any refusal
    ws = WorkspaceLayout.at(demo_ws)
    one_row = tmp_path / "one_row.csv"
    kpi = ws.kpi_csv.read_text().splitlines()
    one_row.write_text("\n".join(kpi[:2]) + "\n")
    handed = effective_spec(doc, image=image)
    handed["dataset"]["classify"]["infer_dataset"]["csv_path"] = str(one_row)
    assert not tao_rules.failures(tao_rules.changenet_run_rules(handed, "inference", {"spec": str(spec_path)}))
    out = Execution()
    run_changenet_command(["visual_changenet", "inference", "-e", str(spec_path), f"results_dir={tmp_path / 'inf'}",
                           f"dataset.classify.infer_dataset.csv_path={one_row}"], out, image=image)
    assert out.exit_code == 0, out.lines
    scored = (tmp_path / "inf" / "inference").glob("*.csv")
    assert [len(p.read_text().splitlines()) for p in scored] == [2]
