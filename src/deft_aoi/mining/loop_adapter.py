"""The loop's mine stage calls `mine_iteration`: RCA gaps in, mined ChangeNet rows out (CONTRACTS §3.4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.mining.engine import MineRun
    from deft_aoi.mining.strategy import Selection
    from deft_aoi.workspace.layout import WorkspaceLayout

SAMPLE_KEY = ("input_path", "golden_path", "object_name")


@dataclass
class MiningParams:
    top_k_per_target: int = 5
    min_similarity: float = 0.9
    metric: str = "cosine"
    filter_by_label: bool = False
    encoder: str = "builtin"
    executor: str = "inprocess"
    index: str = "auto"
    memory_bytes: int | None = None
    cache_dtype: str = "float32"
    recall_floor: float = 0.99
    allow_low_recall: bool = False
    strategy: str = "knn"  # see mining/strategy.py
    pool_share_pct: float | None = None
    max_pass_ratio: float | None = None


@dataclass
class MiningOutcome:
    rows: pd.DataFrame  # 14 ChangeNet columns (pool coordinates) + source, similarity, matched_target
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
    params: MiningParams,
    out_dir: Path,
    ledger: set[str] | None = None,
) -> MiningOutcome:
    """Mine `source_pool` for the RCA gap `targets`; writes every mining output and `mining_pool.csv` into
    `out_dir`. `ledger` holds pool filepaths (first light, absolute) mined in earlier iterations."""
    from deft_aoi.mining.engine import MineConfig, run_mining
    from deft_aoi.mining.inputs import MiningTable
    from deft_aoi.mining.report import write_outputs
    from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, conform, write_changenet_csv

    if not lights:
        raise InputError("no lights given: cannot pick the image to embed")
    if source_pool.empty:
        raise InputError("the source pool is empty: nothing to mine")
    out_dir = Path(out_dir)
    config = MineConfig(
        topn=params.top_k_per_target,
        min_similarity=params.min_similarity,
        metric=params.metric,  # type: ignore[arg-type]
        filter_by_label=params.filter_by_label,
        encoder=params.encoder,
        executor=params.executor,  # type: ignore[arg-type]
        index=params.index,  # type: ignore[arg-type]
        memory_bytes=params.memory_bytes,
        cache_dtype=params.cache_dtype,  # type: ignore[arg-type]
        recall_floor=params.recall_floor,
        allow_low_recall=params.allow_low_recall,
    )
    pool = conform(source_pool, file="source pool")
    if "source" not in pool.columns:
        pool["source"] = "mining_pool"
    pool = pool_with_paths(pool, workspace.root, lights[0], image_ext)
    t_rows = sample_targets(targets, lights)
    run = run_mining(
        MiningTable(t_rows, out_dir / "targets"),
        MiningTable(pool, out_dir / "source_pool"),
        config,
        cache_root=workspace.embedding_cache,
        ledger=ledger,
    )
    selection = apply_strategy(run, params, ledger)
    write_outputs(run, out_dir)
    mined = run.mined
    rows = mined[[*CHANGENET_COLUMNS, "source", "similarity", "matched_target"]].reset_index(drop=True)
    write_changenet_csv(rows, out_dir / "mining_pool.csv")
    counts = {k: int(v) for k, v in run.knn.counts.items()}  # raw, after_cutoff, after_history, ...
    counts.update(selection.counts)
    return MiningOutcome(rows=rows, counts=counts, cutoff=selection.cutoff)


def apply_strategy(run: MineRun, params: MiningParams, ledger: set[str] | None) -> Selection:
    """Re-select `run`'s mined rows under `params.strategy` and its guards (in place on `run`)."""
    import numpy as np

    from deft_aoi.analysis.kpi import is_defect_labels
    from deft_aoi.mining.engine import assemble_mined
    from deft_aoi.mining.strategy import Selection, SelectionParams, select, selection_counts

    pool, targets = run.pool.frame, run.targets.frame
    pool_is_defect = is_defect_labels(pool["label"])
    if params.strategy == "knn" and params.pool_share_pct is None and params.max_pass_ratio is None:
        # Today's contract behaviour: the engine's k-NN (whatever search it planned) is the selection.
        return Selection(knn=run.knn, cutoff=params.min_similarity, counts=selection_counts(
            run.knn.mined["pool"].to_numpy(), pool_is_defect, budget=len(run.knn.mined)))
    if not isinstance(run.pool_emb, np.ndarray):
        raise InputError("--strategy kpi|diverse, --pool-share and --max-pass-ratio need the pool matrix in "
                         "memory; drop --mining-memory (the on-disk pool serves the knn strategy only)")
    in_history = pool["filepath"].isin(list(ledger)).to_numpy() if ledger else None
    selection = select(
        run.target_emb, run.pool_emb,
        SelectionParams(strategy=params.strategy, topn=params.top_k_per_target, min_similarity=params.min_similarity,
                        pool_share_pct=params.pool_share_pct, max_pass_ratio=params.max_pass_ratio),
        pool_is_defect=pool_is_defect,
        in_history=in_history,
        weakness=targets["weakness"].to_numpy() if "weakness" in targets.columns else None,
        knn=run.knn,  # computed at params.min_similarity: reused unless the cut-off is pool-calibrated
    )
    run.knn = selection.knn
    mined = assemble_mined(selection.knn, targets, pool)
    run.mined = mined[~mined["filepath"].duplicated()].reset_index(drop=True)
    run.warnings = [*run.warnings, *selection.notes]
    return selection
