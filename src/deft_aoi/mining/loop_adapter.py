"""The loop's mine stage calls `mine_iteration`: RCA gaps in, mined ChangeNet rows out (CONTRACTS §3.4), through
the one mining call (`api.mine`) of either engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.mining.api import Engine
    from deft_aoi.mining.data_services import DataServicesAccess
    from deft_aoi.mining.params import MineConfig
    from deft_aoi.workspace.layout import WorkspaceLayout

SAMPLE_KEY = ("input_path", "golden_path", "object_name")


@dataclass
class MiningOutcome:
    # THE mined rows, as mining wrote them (`mine.rows`): the pool's columns (14 ChangeNet columns in pool
    # coordinates, source, absolute filepath/golden_filepath) + similarity, matched_target
    rows: pd.DataFrame
    # raw, after_cutoff, after_history, after_dedup, targets, pool (+ backfilled, duplicates_removed)
    counts: dict[str, int] = field(default_factory=dict)
    cutoff: float | None = None  # the similarity cut-off used (pool-calibrated or the fixed one)


def sample_targets(targets: pd.DataFrame, lights: Sequence[str]) -> pd.DataFrame:
    """One row per sample (input_path, golden_path, object_name): its FIRST-light row when present (pure)."""
    missing = [c for c in ("filepath", *SAMPLE_KEY) if c not in targets.columns]
    if missing:
        raise InputError(f"mining targets lack column(s) {', '.join(missing)}")
    df = targets.copy()
    if "light" in df.columns and lights:
        # Stable sort puts the first light's row first within each sample, whatever the input order.
        df = df.assign(_first=(df["light"].astype(str) != lights[0]).astype(int)).sort_values("_first", kind="stable")
        df = df.drop(columns="_first")
    return df.drop_duplicates(list(SAMPLE_KEY), keep="first").reset_index(drop=True)


def pool_with_paths(source_pool: pd.DataFrame, workspace_root: Path, light: str, image_ext: str) -> pd.DataFrame:
    """Pool rows (workspace-relative ChangeNet coordinates) + absolute `filepath`/`golden_filepath` (pure)."""
    from deft_aoi.workspace.changenet_csv import image_paths

    paths = image_paths(source_pool, workspace_root, [light], image_ext)
    out = source_pool.reset_index(drop=True).copy()
    out["filepath"] = paths.loc[paths["side"] == "input", "path"].to_numpy()
    out["golden_filepath"] = paths.loc[paths["side"] == "golden", "path"].to_numpy()
    return out


def mine_iteration(
    targets: pd.DataFrame,
    source_pool: pd.DataFrame,
    *,
    workspace: WorkspaceLayout,
    lights: Sequence[str],
    image_ext: str,
    params: MineConfig,
    out_dir: Path,
    ledger: set[str] | None = None,
    engine: Engine = "builtin",
    data_services: DataServicesAccess | None = None,
    targets_source: Path | None = None,
    pool_source: Path | None = None,
) -> MiningOutcome:
    """Mine `source_pool` for the RCA gap `targets` with `engine` (mining/api.mine); every mining output goes
    into `out_dir`, the rows once (`mine.rows`) with their views. `ledger` holds pool filepaths (first light,
    absolute) mined in earlier iterations. `targets_source` / `pool_source`: the files the two frames were read
    from, as the report and embedding_spec.yaml name them (the loop's out_dir is a scratch dir renamed at commit, so a
    path under it would be gone)."""
    from deft_aoi.mining.api import MineRequest, mine
    from deft_aoi.mining.inputs import MiningTable
    from deft_aoi.workspace.changenet_csv import conform

    if not lights:
        raise InputError("no lights given: cannot pick the image to embed")
    if source_pool.empty:
        raise InputError("the source pool is empty: nothing to mine")
    out_dir = Path(out_dir)
    pool = conform(source_pool, file="source pool")
    if "source" not in pool.columns:
        pool["source"] = "mining_pool"
    pool = pool_with_paths(pool, workspace.root, lights[0], image_ext)
    t_rows = sample_targets(targets, lights)
    request = MineRequest(MiningTable(t_rows, targets_source or Path("targets")),
                          MiningTable(pool, pool_source or Path("source_pool")),
                          params, out_dir, cache_root=workspace.embedding_cache, ledger=ledger,
                          paths_root=workspace.root)
    result = mine(request, engine=engine, data_services=data_services)
    return MiningOutcome(rows=result.mined, counts=result.counts, cutoff=result.cutoff)
