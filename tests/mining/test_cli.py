from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from deft_aoi.cli.mine_cmd import register
from deft_aoi.errors import InputError, UsageError
from deft_aoi.mining.fingerprint import write_embedding_parquet
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, read_changenet_csv

from ._mining_util import CountingEmbedder

REPORT_SECTIONS = ("Verdict", "Inputs", "Encoder Consistency", "Mining Run", "Per-Label Breakdown",
                   "Output Sanity", "Recommended Actions")


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    return app


@pytest.fixture()
def small(deeppcb_dev: Path, tmp_path: Path) -> dict[str, Path]:
    """A 90-row ChangeNet pool CSV (paths relative to its dir) and a 24-row targets parquet, from real data."""
    pool_src = deeppcb_dev / "augmentation" / "mining_pool"
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    os.symlink(pool_src / "images", pool_dir / "images")
    read_changenet_csv(pool_src / "mining_pool.csv").head(90).to_csv(pool_dir / "mining_pool.csv", index=False)
    kpi = read_changenet_csv(deeppcb_dev / "kpi" / "testing_set.csv").head(24)
    images = deeppcb_dev / "kpi" / "images"
    targets = pd.DataFrame({
        "filepath": [str(images / p / f"{o}_SolderLight.jpg") for p, o in zip(kpi.input_path, kpi.object_name,
                                                                               strict=True)],
        "golden_filepath": [str(images / p / f"{o}_SolderLight.jpg") for p, o in zip(kpi.golden_path,
                                                                                     kpi.object_name, strict=True)],
        "label": kpi["label"],
    })
    targets.to_parquet(tmp_path / "targets.parquet")
    return {"pool": pool_dir / "mining_pool.csv", "targets": tmp_path / "targets.parquet",
            "spec": deeppcb_dev / "specs" / "baseline_spec.yaml", "out": tmp_path / "out"}


def _mine(small: dict[str, Path], *extra: str, pool: Path | None = None, targets: Path | None = None):  # type: ignore[no-untyped-def]
    args = ["mine", "--targets", str(targets or small["targets"]), "--pool", str(pool or small["pool"]),
            "--out", str(small["out"]), "--spec", str(small["spec"]), "--json", *extra]
    return CliRunner().invoke(_app(), args)


def test_mine_writes_all_outputs_and_rerun_embeds_nothing(small: dict[str, Path]) -> None:
    first = _mine(small, "--min-similarity", "0.8")
    assert first.exit_code == 0, first.output
    info = json.loads(first.stdout)
    out = Path(info["out_dir"])
    assert out.parent == small["out"] / "mining_results"
    for name in ("embedding_spec.yaml", "mining_spec.yaml", "target_embeddings.parquet", "source_embeddings.parquet",
                 "mined.parquet", "knn_summary.csv", "mining_summary.txt", "Mining_Report.md", "pool.parquet"):
        assert (out / name).is_file(), name
    assert info["embedded_pool"] > 0 and info["embedded_targets"] == 24
    mined = pd.read_parquet(out / "mined.parquet")
    assert list(mined.columns[:4]) == ["filepath", "label", "similarity", "matched_target"]
    assert mined["filepath"].is_unique and len(mined) == info["counts"]["after_dedup"] > 0
    assert (mined["similarity"] >= 0.8).all()
    knn = pd.read_csv(out / "knn_summary.csv")
    for col in ("candidate_count", "kept_count", "rejected_count", "similarity_threshold"):
        assert col in knn.columns
    total = knn[knn["target_filepath"] == "TOTAL"].iloc[0]
    assert total["candidate_count"] == info["counts"]["raw"] == 24 * 5
    assert total["kept_count"] == len(mined)
    report = (out / "Mining_Report.md").read_text()
    assert [s for s in REPORT_SECTIONS if f"## {s}" in report] == list(REPORT_SECTIONS)
    summary = (out / "mining_summary.txt").read_text()
    assert "duplicates removed" in summary and "queries (targets): 24" in summary
    pool_pq = pd.read_parquet(out / "pool.parquet")
    assert set(CHANGENET_COLUMNS) <= set(pool_pq.columns) and len(pool_pq) == 90
    assert Path(pool_pq["filepath"].iloc[0]).is_file()

    second = _mine(small, "--min-similarity", "0.8")
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["embedded_pool"] == 0
    assert again["out_dir"] != info["out_dir"]
    assert again["counts"] == info["counts"]


def test_mismatched_fingerprints_exit_nonzero_naming_both(small: dict[str, Path], tmp_path: Path) -> None:
    first = _mine(small)
    assert first.exit_code == 0, first.output
    target_emb = Path(json.loads(first.stdout)["out_dir"]) / "target_embeddings.parquet"
    other = CountingEmbedder(dim=16, name="other-encoder")
    pool_pq = tmp_path / "pool_other.parquet"
    frame = pd.DataFrame({"filepath": [f"/x/{i}.jpg" for i in range(5)], "label": ["PASS"] * 5})
    write_embedding_parquet(frame, np.eye(5, 16, dtype=np.float32), other.fingerprint, pool_pq)
    result = _mine(small, targets=target_emb, pool=pool_pq)
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    text = result.exception.render()
    assert "builtin-pairdiff" in text and "other-encoder" in text


def test_precomputed_targets_with_same_encoder_are_reused(small: dict[str, Path]) -> None:
    first = _mine(small)
    target_emb = Path(json.loads(first.stdout)["out_dir"]) / "target_embeddings.parquet"
    result = _mine(small, targets=target_emb)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["embedded_targets"] == 0 and info["embedded_pool"] == 0


def test_filter_by_label_needs_labels_unless_allowed(small: dict[str, Path], tmp_path: Path) -> None:
    unlabelled = tmp_path / "targets_nolabel.parquet"
    pd.read_parquet(small["targets"]).drop(columns=["label"]).to_parquet(unlabelled)
    refused = _mine(small, "--filter-by-label", targets=unlabelled)
    assert refused.exit_code != 0
    assert isinstance(refused.exception, InputError) and "allow-unfiltered" in refused.exception.render()
    allowed = _mine(small, "--filter-by-label", "--allow-unfiltered", targets=unlabelled)
    assert allowed.exit_code == 0, allowed.output
    info = json.loads(allowed.stdout)
    assert any("WITHOUT label filter" in w for w in info["warnings"])


def test_filter_by_label_keeps_same_label(small: dict[str, Path]) -> None:
    result = _mine(small, "--filter-by-label", "--min-similarity", "0")
    assert result.exit_code == 0, result.output
    mined = pd.read_parquet(Path(json.loads(result.stdout)["out_dir"]) / "mined.parquet")
    assert (mined["label"] == mined["matched_target_label"]).all()


def test_changenet_pool_without_spec_is_usage_error(small: dict[str, Path]) -> None:
    args = ["mine", "--targets", str(small["targets"]), "--pool", str(small["pool"]), "--out", str(small["out"])]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code != 0 and isinstance(result.exception, UsageError)
    assert "--spec" in result.exception.render()


def test_bad_options_are_usage_errors(small: dict[str, Path]) -> None:
    result = _mine(small, "--metric", "l2")
    assert isinstance(result.exception, UsageError) and "metric" in result.exception.render()
    result = _mine(small, "--encoder", "nope")
    assert isinstance(result.exception, UsageError)


def test_large_pool_gets_cache_pointer_instead_of_copy(small: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from deft_aoi.mining import report

    monkeypatch.setattr(report, "MAX_INLINE_FLOATS", 0)
    result = _mine(small)
    assert result.exit_code == 0, result.output
    out = Path(json.loads(result.stdout)["out_dir"])
    assert not (out / "source_embeddings.parquet").exists()
    import yaml

    pointer = yaml.safe_load((out / "source_embeddings.pointer.yaml").read_text())
    assert Path(pointer["cache_dir"]).is_dir() and pointer["rows"] == 90


@pytest.fixture()
def small_ws(deeppcb_copy: Path) -> Path:
    """The real workspace with a 6-row KPI CSV and a 20-row mining pool (quick to embed)."""
    for csv in (deeppcb_copy / "kpi" / "testing_set.csv",
                deeppcb_copy / "augmentation" / "mining_pool" / "mining_pool.csv"):
        rows = 6 if csv.name == "testing_set.csv" else 20
        read_changenet_csv(csv).head(rows).to_csv(csv, index=False)
    return deeppcb_copy


def _mine_in(ws: Path, *extra: str):  # type: ignore[no-untyped-def]
    """`deft mine` as the issue's new user types it, from inside the workspace with relative paths."""
    from deft_aoi.cli.app import app

    args = ["mine", "--targets", "kpi/testing_set.csv", "--pool", "augmentation/mining_pool/mining_pool.csv",
            "--out", "out", "--json", *extra]
    cwd = Path.cwd()
    os.chdir(ws)
    try:
        return CliRunner().invoke(app, args)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("workspace", [["--workspace", "."], []], ids=["workspace", "inferred"])
def test_kpi_csv_targets_resolve_under_kpi_images(small_ws: Path, workspace: list[str]) -> None:
    result = _mine_in(small_ws, "--min-similarity", "0.5", *workspace)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["embedded_targets"] == 6 and info["counts"]["pool"] == 20


def test_missing_target_image_names_csv_row_and_field(small_ws: Path) -> None:
    row = read_changenet_csv(small_ws / "kpi" / "testing_set.csv").iloc[3]
    (small_ws / "kpi" / "images" / row["input_path"] / f"{row['object_name']}_SolderLight.jpg").unlink()
    result = _mine_in(small_ws, "--workspace", ".")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # reported, no traceback
    message = " ".join(result.output.split())
    assert "kpi/testing_set.csv, row 5:" in message
    assert f"input_path '{row['input_path']}', object_name '{row['object_name']}'" in message
