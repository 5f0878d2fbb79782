from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from deft_aoi.mining.loop_adapter import MiningOutcome, mine_iteration, pool_with_paths, sample_targets
from deft_aoi.mining.params import MineConfig
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, read_changenet_csv, rebase_paths
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.stored_paths import read_parquet

LIGHT = "SolderLight"


def _gaps(ws: WorkspaceLayout, n: int) -> pd.DataFrame:
    """RCA-gap shaped targets: one row per light; the second light's row comes first and has no image."""
    kpi = read_changenet_csv(ws.kpi_csv)
    kpi = kpi[kpi["label"] != "PASS"].head(n).reset_index(drop=True)
    rows = []
    for light in ("OtherLight", LIGHT):
        part = kpi.copy()
        part["light"] = light
        part["filepath"] = [str(ws.kpi_images / p / f"{o}_{light}.jpg") for p, o in zip(part.input_path,
                                                                                        part.object_name, strict=True)]
        part["golden_filepath"] = [str(ws.kpi_images / p / f"{o}_{light}.jpg")
                                   for p, o in zip(part.golden_path, part.object_name, strict=True)]
        part["siamese_score"] = 0.1
        part["weakness"] = 0.2
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def _pool(ws: WorkspaceLayout, n: int) -> pd.DataFrame:
    pool = read_changenet_csv(ws.mining_pool_csv).head(n)
    pool = rebase_paths(pool, ws.mining_pool_dir, ws.root)
    pool["source"] = "mining_pool"
    return pool


def test_sample_targets_prefers_first_light() -> None:
    df = pd.DataFrame({"input_path": ["a", "a", "b"], "golden_path": ["g", "g", "h"], "object_name": ["o"] * 3,
                       "light": ["L2", "L1", "L2"], "filepath": ["a_L2", "a_L1", "b_L2"]})
    out = sample_targets(df, ["L1", "L2"])
    assert sorted(out["filepath"]) == ["a_L1", "b_L2"]


def test_mine_iteration_end_to_end(deeppcb_copy: Path) -> None:
    ws = WorkspaceLayout.at(deeppcb_copy)
    pool = _pool(ws, 150)
    assert pool["input_path"].iloc[0].startswith("augmentation/mining_pool/images/")
    out_dir = ws.root / "results" / "run_x" / "iter1" / "mining_filter"
    params = MineConfig(top_k_per_target=3, min_similarity=0.85)
    outcome = mine_iteration(_gaps(ws, 12), pool, workspace=ws, lights=[LIGHT, "OtherLight"], image_ext=".jpg",
                             params=params, out_dir=out_dir)
    assert isinstance(outcome, MiningOutcome)
    assert outcome.counts["targets"] == 12 and outcome.counts["pool"] == 150
    assert outcome.counts["raw"] == 36
    assert len(outcome.rows) == outcome.counts["after_dedup"] > 0
    # The one rows frame: the pool's columns + what mining adds; the file holds the same rows (written once).
    assert {*CHANGENET_COLUMNS, "source", "filepath", "similarity", "matched_target"} <= set(outcome.rows.columns)
    on_disk = read_parquet(out_dir / "mined.parquet", ws.root)
    pd.testing.assert_frame_equal(on_disk, outcome.rows)
    assert outcome.rows["input_path"].str.startswith("augmentation/mining_pool/images/").all()
    assert (outcome.rows["source"] == "mining_pool").all()
    for name in ("mining_pool.csv", "knn_summary.csv", "target_embeddings.parquet", "mining_summary.txt",
                 "Mining_Report.md", "mined.parquet"):
        assert (out_dir / name).is_file(), name
    written = read_changenet_csv(out_dir / "mining_pool.csv")
    pd.testing.assert_frame_equal(written, outcome.rows[list(CHANGENET_COLUMNS)].reset_index(drop=True))  # a view
    assert any(ws.embedding_cache.rglob("shard_*.parquet"))

    # Iteration 2: the ledger excludes every row mined before; the cache means nothing is re-embedded.
    ledger = set(pool_with_paths(outcome.rows, ws.root, LIGHT, ".jpg")["filepath"])
    second = mine_iteration(_gaps(ws, 12), pool, workspace=ws, lights=[LIGHT], image_ext=".jpg", params=params,
                            out_dir=out_dir.parent.parent / "iter2" / "mining_filter", ledger=ledger)
    # Same targets and pool: every raw neighbour passing the cut-off was mined in iteration 1, so history
    # drops all of them; back-fill reaches deeper for fresh rows instead of mining nothing.
    assert second.counts["after_cutoff"] == outcome.counts["after_cutoff"]
    assert second.counts["after_history"] == 0
    assert second.counts["backfilled"] > 0
    assert len(second.rows) == second.counts["after_dedup"] > 0
    assert (second.rows["similarity"] >= params.min_similarity).all()


def test_empty_pool_is_input_error(deeppcb_dev: Path, tmp_path: Path) -> None:
    from deft_aoi.errors import InputError

    ws = WorkspaceLayout.at(deeppcb_dev)  # fails before writing anything: the read-only original will do
    with pytest.raises(InputError, match="empty"):
        mine_iteration(_gaps(ws, 2), _pool(ws, 0), workspace=ws, lights=[LIGHT], image_ext=".jpg",
                       params=MineConfig(), out_dir=tmp_path / "m")
