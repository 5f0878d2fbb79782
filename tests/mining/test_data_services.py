"""`deft run --mining-engine data_services`: Data Services containers (fake backend) mine, the host cuts off."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app
from deft_aoi.errors import StageFailed
from deft_aoi.mining.data_services import Embeddings, host_cutoff
from deft_aoi.workspace.stored_paths import read_parquet

FAST = ["--max-iterations", "1", "--epochs", "2", "--seed", "1"]


def deft(*args: str):
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_host_cutoff_keeps_only_paths_whose_best_target_cosine_meets_the_threshold() -> None:
    source = Embeddings(["a", "b", "c"], np.stack([_unit([1, 0]), _unit([1, 1]), _unit([0, 1])]) * 3)
    targets = Embeddings(["t1", "t2"], np.stack([_unit([1, 0.01]), _unit([0.2, 1])]))
    kept = host_cutoff(["c", "a", "b", "a"], source, targets, 0.95)
    assert kept["filepath"].tolist() == ["c", "a"]  # container order, de-duplicated; b's best cosine ≈ 0.83
    assert kept["matched_target"].tolist() == ["t2", "t1"]
    assert (kept["similarity"] >= 0.95).all()
    assert host_cutoff([], source, targets, 0.5).empty


def test_host_cutoff_rejects_a_mined_path_without_a_source_embedding() -> None:
    source = Embeddings(["a"], np.ones((1, 2), dtype=np.float32))
    with pytest.raises(StageFailed, match="no source embedding"):
        host_cutoff(["zzz"], source, source, 0.0)


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_data_services_engine_runs_the_containers_and_applies_the_cutoff_on_the_host(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--backend", "fake", "--yes", *FAST,
                  "--mining-engine", "data_services")
    assert result.exit_code == 0, result.output
    run = next((demo_ws / "results").glob("run_*"))
    st = json.loads((run / "deft_state.json").read_text())
    mine = st["iterations"]["iter1"]["stages"]["mine"]
    assert mine["status"] == "complete"
    out = run / mine["output_dir"]
    scratch = out / "data_services"
    logs = {p.relative_to(scratch).as_posix(): p.read_text() for p in scratch.rglob("*.log")}
    assert "embedding image_embeddings" in logs["embed_targets/embedding.log"]
    assert "embedding image_embeddings" in logs["embed_source/embedding.log"]
    assert "tmm nearest_neighbors" in logs["knn/tmm.log"]
    assert "Execution status: PASS" in logs["knn/tmm.log"]

    # The run keeps its image paths workspace-relative, the containers' tables too once read (absolute on read).
    rows = pd.read_parquet(out / "mined.parquet")
    assert len(rows) > 0 and not rows["filepath"].str.startswith("/").any()
    resolved = read_parquet(out / "mined.parquet", demo_ws)["filepath"]
    assert (resolved == str(demo_ws) + "/" + rows["filepath"]).all()
    assert {"source", "filepath", "label", "input_path"} <= set(rows.columns)
    # recompute each kept row's best cosine from the container's own embeddings (default cut-off 0.9)
    src = pd.read_parquet(scratch / "source_embeddings.parquet").set_index("filepath")["embedding"]
    tgt = np.stack(pd.read_parquet(scratch / "targets_embeddings.parquet")["embedding"].map(np.asarray).tolist())
    tgt = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    for path in rows["filepath"]:
        v = np.asarray(src[path], dtype=np.float64)
        assert float((tgt @ (v / np.linalg.norm(v))).max()) >= 0.9 - 1e-6
    container_mined = set(pd.read_parquet(scratch / "knn" / "mined.parquet")["filepath"])
    assert set(rows["filepath"]) <= container_mined
    counts = st["iterations"]["iter1"]["counts"]
    assert counts["mined_total"] == len(rows)
    assert counts["knn_raw"] == len(container_mined) >= counts["knn_after_cutoff"] >= len(rows)
    assert st["iterations"]["iter1"]["stages"]["assemble"]["status"] == "complete"


def test_local_backend_with_data_services_is_a_usage_error(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--backend", "local", "--yes", *FAST,
                  "--mining-engine", "data_services")
    assert result.exit_code == 2
    assert "docker" in result.output
    assert not list(demo_ws.glob("results/run_*"))


def test_unknown_mining_engine_is_a_usage_error(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--backend", "fake", "--yes", *FAST, "--mining-engine", "magic")
    assert result.exit_code == 2
    assert "mining engine" in result.output


# ---------------------------------------------------------------- `deft mine --mining-engine data_services`


def _mine_ds(ws: Path, *extra: str):
    out = ws / "mined"
    result = deft("mine", "-w", str(ws), "--mining-engine", "data_services", "--backend", "fake",
                  "--targets", str(ws / "kpi" / "testing_set.csv"),
                  "--pool", str(ws / "augmentation" / "mining_pool" / "mining_pool.csv"),
                  "--out", str(out), "--min-similarity", "0.5", "--json", *extra)
    return result, out


def _ds_specs(run_dir: Path) -> dict[str, str]:
    scratch = run_dir / "data_services"
    return {p.parent.parent.name: p.read_text() for p in scratch.rglob("*.yaml") if p.parent.name == "experiment_specs"}


def test_deft_mine_with_data_services_writes_the_builtin_engines_report(demo_ws: Path) -> None:
    from mining._mining_util import check_report_adds_up

    result, _ = _mine_ds(demo_ws)
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["out_dir"])
    for name in ("Mining_Report.md", "knn_summary.csv", "mining_summary.txt", "embedding_spec.yaml", "mined.parquet"):
        assert (run_dir / name).is_file(), name
    text = (run_dir / "Mining_Report.md").read_text()
    counts = check_report_adds_up(text)
    assert "Data Services k-NN, cosine" in text and "data-services-SigLIP" in text
    assert counts["mined"] == len(pd.read_parquet(run_dir / "mined.parquet")) > 0
    knn = pd.read_csv(run_dir / "knn_summary.csv")
    assert int(knn.loc[knn["target_filepath"] == "TOTAL", "kept_count"].iloc[0]) == counts["mined"]
    specs = _ds_specs(run_dir)
    assert "model: SigLIP" in specs["embed_targets"] and "knn_metric: cosine" in specs["knn"]


def test_clip_may_mine_by_euclidean_distance_siglip_only_by_cosine(demo_ws: Path) -> None:
    refused, _ = _mine_ds(demo_ws, "--metric", "euclidean")
    assert refused.exit_code == 2 and "cosine" in refused.output
    result, _ = _mine_ds(demo_ws, "--ds-model", "CLIP", "--metric", "euclidean")
    assert result.exit_code == 0, result.output
    specs = _ds_specs(Path(json.loads(result.stdout)["out_dir"]))
    assert "model: CLIP" in specs["embed_source"] and "knn_metric: euclidean" in specs["knn"]


def test_a_tao_checkpoint_encoder_needs_its_train_spec(demo_ws: Path) -> None:
    ckpt = demo_ws / "models" / "encoder.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    refused, _ = _mine_ds(demo_ws, "--ds-model-path", str(ckpt))
    assert refused.exit_code == 2 and "model_config_path" in refused.output
    result, _ = _mine_ds(demo_ws, "--ds-model-path", str(ckpt), "--ds-model-config",
                         str(demo_ws / "specs" / "baseline_spec.yaml"), "--metric", "manhattan")
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["out_dir"])
    specs = _ds_specs(run_dir)
    assert f"model_path: {ckpt}" in specs["embed_targets"] and "model_config_path:" in specs["embed_targets"]
    assert "data-services-tao-checkpoint" in (run_dir / "Mining_Report.md").read_text()


def test_data_services_mining_needs_the_workspace_and_a_container_backend(demo_ws: Path, tmp_path: Path) -> None:
    result = deft("mine", "--mining-engine", "data_services", "--backend", "fake",
                  "--targets", str(demo_ws / "kpi" / "testing_set.csv"),
                  "--pool", str(demo_ws / "augmentation" / "mining_pool" / "mining_pool.csv"), "--out", str(tmp_path))
    assert result.exit_code == 2 and "--workspace" in result.output
