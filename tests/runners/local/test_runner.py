from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deft_aoi.errors import StageFailed, UsageError
from deft_aoi.runners.local import LocalRunner
from deft_aoi.runners.local import runner as runner_module
from deft_aoi.runners.local import train as train_module
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.runners.tao.outputs import (
    LATEST_LINK,
    best_far_checkpoint,
    best_val_checkpoint,
    list_checkpoints,
    read_inference_csv,
    read_status,
    val_far_pct,
)
from deft_aoi.workspace.layout import WorkspaceLayout

from .helpers import job, make_workspace


@pytest.fixture(scope="module")
def spec(deeppcb_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(deeppcb_dev, tmp_path_factory.mktemp("local_ws"))


@pytest.fixture(scope="module")
def runner(spec: Path) -> LocalRunner:
    return LocalRunner(WorkspaceLayout.at(spec.parent))


@pytest.fixture(scope="module")
def trained(runner: LocalRunner, spec: Path) -> Path:
    """One 2-epoch training shared by the tests that only read its outputs."""
    out = spec.parent / "base_train"
    result = runner.run(job("train", spec, f"train.results_dir={out}", log=spec.parent / "base_train.log"))
    assert result.exit_code == 0, result.log_path.read_text()
    return out


def _infer(runner: LocalRunner, spec: Path, ckpt: Path, out: Path) -> pd.DataFrame:
    result = runner.run(job("inference", spec, f"inference.results_dir={out}", f"inference.checkpoint={ckpt}",
                            log=out.parent / f"{out.name}.log"))
    assert result.exit_code == 0, result.log_path.read_text()
    return read_inference_csv(out / "inference.csv")


@pytest.mark.slow  # real training: `make test-slow`
def test_train_writes_tao_shaped_outputs(trained: Path, spec: Path) -> None:
    ckpts = list_checkpoints(trained)
    assert [c.epoch for c in ckpts] == [0, 1]
    assert [c.step for c in ckpts] == [3, 6]  # 24 rows / batch 8 = 3 steps per epoch
    assert (trained / LATEST_LINK).resolve() == ckpts[-1].path.resolve()
    status = read_status(trained / "status.json")
    evals = [e["kpi"] for e in status if e["message"] == "Eval metrics generated."]
    assert len(evals) == 2 and all(np.isfinite(k["val_loss"]) and 0 <= k["val_fpr"] <= 1 for k in evals)
    epoch_lines = [e for e in status if "epoch" in e]
    assert [(e["epoch"], e["step"], e["max_epoch"]) for e in epoch_lines] == [(0, 3, 1), (1, 6, 1)]
    assert [e["status"] for e in status][::len(status) - 1] == ["STARTED", "RUNNING"]  # TAO has no SUCCESS record
    assert status[-1]["message"] == "Train finished successfully."
    assert all(0.0 <= e["kpi"]["val_far"] <= 100.0 for e in status if e.get("message") == "Eval metrics generated.")
    best = min(range(2), key=lambda i: evals[i]["val_loss"])
    assert best_val_checkpoint(trained).path == ckpts[best].path
    far = min(range(2), key=lambda i: (evals[i]["val_far"], evals[i]["val_loss"], -i))
    assert best_far_checkpoint(trained) == ckpts[far]
    assert "epoch 2/2" in (trained / "train.log").read_text()
    assert (trained / "experiment.yaml").is_file()
    first_line = (spec.parent / "base_train.log").read_text().splitlines()[0]
    assert first_line == f"visual_changenet train -e {spec} train.results_dir={trained}"


@pytest.mark.slow  # real training: `make test-slow`
def test_inference_csv_is_input_columns_plus_score(runner: LocalRunner, trained: Path, spec: Path) -> None:
    ckpt = list_checkpoints(trained)[-1].path
    scores = _infer(runner, spec, ckpt, spec.parent / "infer_a")
    source = pd.read_csv(spec.parent / "infer.csv", dtype=str, keep_default_na=False)
    assert list(scores.columns) == [*source.columns, "siamese_score"]
    assert scores["object_name"].tolist() == source["object_name"].tolist()
    assert scores["siamese_score"].between(0.0, 1.0).all()
    assert scores["siamese_score"].nunique() > 1


@pytest.mark.slow  # real training: `make test-slow`
def test_same_seed_gives_identical_scores(runner: LocalRunner, spec: Path) -> None:
    def train_and_score(name: str, seed: int) -> np.ndarray:
        out = spec.parent / name
        result = runner.run(job("train", spec, f"train.results_dir={out}", "train.num_epochs=1",
                                log=spec.parent / f"{name}.log", env={"DEFT_SEED": str(seed)}))
        assert result.ok, result.log_path.read_text()
        ckpt = list_checkpoints(out)[-1].path
        return _infer(runner, spec, ckpt, spec.parent / f"{name}_inf")["siamese_score"].to_numpy()

    first = train_and_score("seed_a", 5)
    again = train_and_score("seed_b", 5)
    other = train_and_score("seed_c", 6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.slow  # real training: `make test-slow`
def test_fine_tune_starts_from_the_checkpoint(
    runner: LocalRunner, trained: Path, spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lr 0 (floor lifted) leaves every network weight where the pretrained checkpoint put it; only the
    # batch-norm running statistics move. The comparator (prior) and shape head are the checkpoint's too
    # (a fine-tune keeps them). Equal weights prove the checkpoint was loaded.
    monkeypatch.setattr(train_module, "MIN_LOCAL_LR", 0.0)
    base = list_checkpoints(trained)[-1].path
    out = spec.parent / "finetune"
    result = runner.run(job("train", spec, f"train.results_dir={out}", "train.num_epochs=1", "train.optim.lr=0.0",
                            f"train.pretrained_model_path={base}", log=spec.parent / "finetune.log"))
    assert result.ok, result.log_path.read_text()
    assert f"fine-tuning from {base}" in result.log_path.read_text()
    before = torch.load(base, weights_only=True)["state_dict"]
    after = torch.load(list_checkpoints(out)[-1].path, weights_only=True)["state_dict"]
    weights = [k for k in before if k.endswith("weight") or k == "prior"]
    assert {"prior", "shape_head.weight"} <= set(weights)
    for key in weights:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.slow  # real training: `make test-slow`
def test_incompatible_checkpoint_is_a_clear_failure(runner: LocalRunner, trained: Path, spec: Path) -> None:
    ckpt = list_checkpoints(trained)[-1].path
    out = spec.parent / "mismatch"
    result = runner.run(job("inference", spec, f"inference.results_dir={out}", f"inference.checkpoint={ckpt}",
                            "dataset.classify.image_width=256", "dataset.classify.image_height=32",
                            log=spec.parent / "mismatch.log"))
    assert result.exit_code == 1
    log = result.log_path.read_text()
    assert "does not match the spec" in log and str(ckpt) in log
    assert "trained for image_width/height 128x128 vs spec's 256x32" in log
    assert not (out / "inference.csv").exists()


def test_missing_pretrained_checkpoint_names_the_path(runner: LocalRunner, spec: Path) -> None:
    missing = spec.parent / "nope" / "model_epoch_000_step_1.pth"
    result = runner.run(job("train", spec, f"train.results_dir={spec.parent / 'ft_missing'}",
                            f"train.pretrained_model_path={missing}", log=spec.parent / "ft_missing.log"))
    assert result.exit_code == 1
    assert str(missing) in result.log_path.read_text()


@pytest.mark.slow  # real training: `make test-slow`
def test_evaluate_writes_metrics(runner: LocalRunner, trained: Path, spec: Path) -> None:
    ckpt = best_val_checkpoint(trained).path
    out = spec.parent / "evaluate"
    result = runner.run(job("evaluate", spec, f"evaluate.results_dir={out}", f"evaluate.checkpoint={ckpt}",
                            log=spec.parent / "evaluate.log"))
    assert result.ok, result.log_path.read_text()
    metrics = json.loads((out / "evaluation.json").read_text())
    assert metrics["rows"] == 12
    assert sum(metrics["confusion"].values()) == 12
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])


def test_missing_image_fails_with_the_path_in_the_log(runner: LocalRunner, spec: Path) -> None:
    broken = pd.read_csv(spec.parent / "train.csv", dtype=str, keep_default_na=False)
    broken.loc[3, "object_name"] = "ghost"
    broken_csv = spec.parent / "broken.csv"
    broken.to_csv(broken_csv, index=False)
    result = runner.run(job("train", spec, f"train.results_dir={spec.parent / 'broken'}",
                            f"dataset.classify.train_dataset.csv_path={broken_csv}", log=spec.parent / "broken.log"))
    assert result.exit_code == 1
    log = result.log_path.read_text()
    expected = f"{broken.loc[3, 'input_path']}/ghost_SolderLight.jpg"
    assert expected in log
    assert f"{broken_csv}, row 5" in log
    assert list_checkpoints(spec.parent / "broken") == []


def test_bad_command_line_exits_2(runner: LocalRunner, spec: Path, tmp_path: Path) -> None:
    bad = job("train", spec, "--gpus", log=tmp_path / "bad.log")
    assert runner.run(bad).exit_code == 2
    assert "unexpected argument" in (tmp_path / "bad.log").read_text()


@pytest.mark.slow  # real training: `make test-slow`
def test_stop_ends_the_job_with_130(
    runner: LocalRunner, spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[Path] = []
    real_save = train_module.save_checkpoint

    def save_then_stop(path: Path, *args: object, **kwargs: object) -> None:
        real_save(path, *args, **kwargs)  # type: ignore[arg-type]
        saved.append(path)
        runner.stop()

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)
    result = runner.run(job("train", spec, f"train.results_dir={tmp_path / 'stopped'}", "train.num_epochs=3",
                            log=tmp_path / "stopped.log"))
    assert result.exit_code == 130
    assert len(saved) == 1  # epoch 0 finished, then the job stopped before epoch 1's first batch


def test_timeout_raises_stage_failed(runner: LocalRunner, spec: Path, tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="timed out"):
        runner.run(job("train", spec, f"train.results_dir={tmp_path / 't'}", log=tmp_path / "t.log", timeout_s=1e-9))
    assert "timed out" in (tmp_path / "t.log").read_text()


def test_keyboard_interrupt_stops_and_reraises(
    runner: LocalRunner, spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(task: str):  # type: ignore[no-untyped-def]
        def body(*_: object) -> None:
            raise KeyboardInterrupt
        return body

    monkeypatch.setattr(runner_module, "task_function", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(job("train", spec, log=tmp_path / "ki.log"))
    assert runner._stop.is_set()
    assert "interrupted" in (tmp_path / "ki.log").read_text()


def test_missing_torch_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(UsageError, match=r"pip install 'deft-aoi\[local\]'"):
        LocalRunner(WorkspaceLayout.at(tmp_path))


def test_preflight_passes_without_gpu(runner: LocalRunner, spec: Path, deeppcb_dev: Path) -> None:
    checks = runner.preflight(WorkspaceLayout.at(deeppcb_dev), load_spec(deeppcb_dev / "specs/baseline_spec.yaml"), 16)
    by_name = {c.name: c for c in checks}
    assert by_name["local backend: PyTorch"].status == "pass"
    assert by_name["local backend: device"].status == "pass"
    shared = load_spec(deeppcb_dev / "specs/baseline_spec.yaml")
    assert (shared.image_width, shared.image_height) == (224, 224)  # C-RADIO's size over 128 px crops
    assert "local backend: image size" not in by_name  # the 128 px crops are seen at their own resolution
    assert not any(c.failed for c in checks)
    small = shared.model_copy(update={"image_width": 64, "image_height": 64})
    by_name = {c.name: c for c in runner.preflight(WorkspaceLayout.at(deeppcb_dev), small, 16)}
    assert by_name["local backend: image size"].status == "warn"  # 128 px crops seen at 64 px: detail lost
    assert "128x128 px" in by_name["local backend: image size"].detail


@pytest.mark.slow  # real training: `make test-slow`
def test_val_far_is_the_saved_checkpoints_far_on_the_validation_set(trained: Path, runner: LocalRunner,
                                                                     spec: Path) -> None:
    """The best_far candidate is what status.json says it is: its weights, scored on the validation rows,
    give the val_far logged for its epoch (FAR at 100 % recall, TAO 7.3.0's measure)."""
    ckpt = best_far_checkpoint(trained)
    assert ckpt is not None
    logged = [e["kpi"]["val_far"] for e in read_status(trained / "status.json")
              if e.get("epoch") == ckpt.epoch and "val_far" in (e.get("kpi") or {})]
    out = spec.parent / "far_check"
    result = runner.run(job("inference", spec, f"inference.results_dir={out}", f"inference.checkpoint={ckpt.path}",
                            f"dataset.classify.infer_dataset.csv_path={spec.parent / 'val.csv'}",
                            log=spec.parent / "far_check.log"))
    assert result.exit_code == 0, result.log_path.read_text()
    scored = read_inference_csv(out / "inference.csv")
    far = val_far_pct(scored["siamese_score"].astype(float), scored["label"] != "PASS")
    assert logged and abs(logged[-1] - far) < 1e-6
