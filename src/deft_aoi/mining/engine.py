"""One mining run, one pass: make sure targets and pool share one encoder, embed what is missing (pool through
the cache), then candidates → selection → rows: the selection's cut-off (fixed or pool-calibrated), the one
k-NN at that cut-off, the selection strategy choosing among its neighbours (mining/strategy.py), and the mined
rows assembled once from what it chose. Writing the outputs is `report.write_outputs`."""

from __future__ import annotations

import time
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import DeftError, InputError
from deft_aoi.mining.embedders.base import Fingerprint, require_same_fingerprint
from deft_aoi.mining.params import MineConfig
from deft_aoi.mining.strategy import select, selection_cutoff

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.cache import CacheStats
    from deft_aoi.mining.embedders.base import Embedder
    from deft_aoi.mining.inputs import MiningTable
    from deft_aoi.mining.knn import KnnParams, KnnResult
    from deft_aoi.mining.pool_file import NpyBlocks


@dataclass
class SearchInfo:
    """How the neighbours were found, for the report: exact (whole or sharded) or an approximate index."""

    method: str  # exact | ivf | hnsw
    pool_dtype: str = "float32"
    pool_on_disk: Path | None = None  # the streamed .npy when the pool matrix was not held in memory
    shard_rows: int | None = None
    shards: int = 1
    memory_bytes: int | None = None
    index_path: Path | None = None
    index_reused: bool = False
    index_build_s: float = 0.0
    recall_k: int = 0
    recall_queries: int = 0
    recall: float | None = None
    recall_floor: float = 0.99
    executor: str = "inprocess"

    def describe(self) -> str:
        if self.method == "exact":
            if self.shard_rows is None:
                where = "whole pool in memory"
            else:
                src = f"streamed from {self.pool_on_disk}" if self.pool_on_disk else "in memory"
                budget = f", budget {self.memory_bytes / 2**30:.2f} GiB" if self.memory_bytes else ""
                where = f"{self.shards} shard(s) of ≤ {self.shard_rows} rows, {src}{budget}"
            return f"exact cosine ({where}, pool {self.pool_dtype})"
        cached = "reused from cache" if self.index_reused else f"built in {self.index_build_s:.1f} s"
        at = f" at `{self.index_path}`" if self.index_path else " (not cached)"
        return (f"approximate {self.method} ({cached}{at}); recall@{self.recall_k} vs exact on "
                f"{self.recall_queries} sampled target(s): {self.recall:.4f} (floor {self.recall_floor})")


@dataclass
class MineRun:
    config: MineConfig
    targets: MiningTable
    pool: MiningTable
    target_emb: np.ndarray
    pool_emb: np.ndarray | NpyBlocks  # NpyBlocks when the pool matrix stayed on disk (--memory)
    fingerprint: Fingerprint
    knn: KnnResult
    mined: pd.DataFrame  # pool columns + similarity, matched_target, matched_target_label, n_targets
    label_filter_applied: bool
    cache_dir: Path | None = None
    cache_stats: CacheStats | None = None
    embedded_targets: int = 0
    ledger_size: int = 0
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    search: SearchInfo = field(default_factory=lambda: SearchInfo(method="exact"))
    info: list[str] = field(default_factory=list)  # expected facts (knn.KnnResult.info): not warnings
    # Targets embedded without a golden image: every encoder embeds the (input, golden) pair, so such a target
    # describes no change and matches no pool pair whatever the cut-off (the report says so instead of
    # "lower --min-similarity").
    targets_without_golden: int = 0
    # The selection step (strategy.select): the strategy that re-selected (None: the k-NN itself is the
    # selection and the report names no step), its counts (budget, selected, selected_pass, selected_defect,
    # balance_dropped, selected_pool_share_permille) and the cut-off it used (None: the engine's own).
    strategy: str | None = None
    selection: dict[str, int] = field(default_factory=dict)
    cutoff: float | None = None


def _progress_embed(label: str, embed_fn, device: str):  # type: ignore[no-untyped-def]
    """Run `embed_fn(on_progress)` under a progress bar showing images/s and the device."""
    from deft_aoi.console import progress

    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"{label} ({device})", total=None, rate="")

        def on_progress(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} img/s")

        return embed_fn(on_progress)


def _embed_table(table: MiningTable, embedder: Embedder, label: str) -> np.ndarray:
    frame = table.frame
    goldens = frame["golden_filepath"].tolist() if "golden_filepath" in frame.columns else [None] * len(frame)
    inputs = frame["filepath"].tolist()

    def run(on_progress):  # type: ignore[no-untyped-def]
        import numpy as np

        parts = []
        step = 1024
        on_progress(0, len(inputs))
        for k in range(0, len(inputs), step):
            parts.append(embedder.embed(inputs[k : k + step], goldens[k : k + step]))
            on_progress(min(k + step, len(inputs)), len(inputs))
        return np.concatenate(parts)

    matrix: np.ndarray = _progress_embed(label, run, embedder.device)
    return matrix


def _embed_pool(
    table: MiningTable, embedder: Embedder, cache_root: Path | None, config: MineConfig
) -> tuple[np.ndarray | NpyBlocks, CacheStats | None, Path | None, str | None]:
    """(pool matrix — on disk when `config.memory_bytes` is set —, cache stats, cache dir, pool id). The
    pool id names the pool's content (its ordered content keys) for the spilled matrix and the ANN index."""
    import hashlib

    from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache, pair_keys

    frame = table.frame
    goldens = frame["golden_filepath"].tolist() if "golden_filepath" in frame.columns else [None] * len(frame)
    inputs = frame["filepath"].tolist()
    if cache_root is None:
        if config.mining_executor == "ray":
            raise InputError("--executor ray writes its embeddings to the cache: give a cache dir")
        return _embed_table(table, embedder, "embedding pool"), None, None, None
    cache = EmbeddingCache(cache_root, embedder.fingerprint, dtype=config.mining_cache_dtype)
    keys = pair_keys(inputs, goldens)
    pool_id = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    spill = cache.dir / "pools" / f"{pool_id[:24]}-{config.mining_cache_dtype}.npy" if config.memory_bytes else None
    embed_missing = None
    device = embedder.device
    if config.mining_executor == "ray":
        from deft_aoi.mining.ray_exec import RayEmbedding

        ray_run = RayEmbedding(config.encoder, cache, workers=config.ray_workers)
        embed_missing = ray_run.embed_missing
        device = "ray"
    emb, stats = _progress_embed(
        "embedding pool",
        lambda cb: embed_with_cache(inputs, goldens, embedder, cache, keys=keys, on_progress=cb, spill=spill,
                                    embed_missing=embed_missing),
        device,
    )
    return emb, stats, cache.dir, pool_id


def _matrix_id(pool: np.ndarray) -> str:
    """Content id of a precomputed pool matrix (no content keys to hash)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(str(pool.shape).encode())
    for start in range(0, len(pool), 65_536):
        h.update(np.ascontiguousarray(pool[start : start + 65_536]).tobytes())
    return h.hexdigest()


def _search_and_mine(
    t_emb: np.ndarray,
    p_emb: np.ndarray | NpyBlocks,
    config: MineConfig,
    params: KnnParams,
    *,
    target_labels: np.ndarray | None,
    pool_labels: np.ndarray | None,
    in_history: np.ndarray | None,
    cache_dir: Path | None,
    pool_id: str | None,
) -> tuple[KnnResult, SearchInfo, list[str]]:
    """Pick the search (exact whole / exact sharded / approximate), run the k-NN, measure recall."""
    import numpy as np

    from deft_aoi.mining.ann import AnnParams, load_or_build, measure_recall, resolve_kind
    from deft_aoi.mining.knn import (
        MAX_BACKFILL,
        ArrayBlocks,
        l2_normalise,
        label_groups,
        mine_neighbours,
        shard_rows_for_budget,
    )

    n_p, dim = p_emb.shape
    dtype = str(p_emb.dtype)
    on_disk = None if isinstance(p_emb, np.ndarray) else p_emb.path
    info = SearchInfo(method=resolve_kind(config.mining_index, n_p), pool_dtype=dtype, pool_on_disk=on_disk,
                      memory_bytes=config.memory_bytes, recall_floor=config.mining_recall_floor,
                      executor=config.mining_executor)
    warnings: list[str] = []
    shard_rows = None
    if config.memory_bytes is not None or on_disk is not None or dtype != "float32":
        budget = config.memory_bytes or 2 * 2**30
        try:
            shard_rows = shard_rows_for_budget(budget, dim, len(t_emb), params.topn + MAX_BACKFILL,
                                               source_itemsize=np.dtype(dtype).itemsize)
        except ValueError as exc:
            raise InputError(f"--memory: {exc}", hint="raise --memory or mine fewer targets at once") from exc
        info.shard_rows = shard_rows
        info.shards = max(1, -(-n_p // shard_rows))
    index = None
    if info.method != "exact":
        blocks = p_emb if on_disk is not None else ArrayBlocks(p_emb)  # type: ignore[arg-type]
        ann = load_or_build(blocks, AnnParams(kind=info.method, float16=config.mining_cache_dtype == "float16"),  # type: ignore[arg-type]
                            cache_dir, pool_id or _matrix_id(p_emb))  # type: ignore[arg-type]
        groups = label_groups(len(t_emb), target_labels if params.filter_by_label else None,
                              pool_labels if params.filter_by_label else None)
        rec = measure_recall(l2_normalise(t_emb), p_emb, ann, params.topn, groups, shard_rows=shard_rows)
        info.index_path, info.index_reused, info.index_build_s = ann.path, ann.reused, ann.build_s
        info.recall_k, info.recall_queries, info.recall = rec.k, rec.queries, rec.recall
        if rec.recall < config.mining_recall_floor:
            msg = (f"approximate {info.method} search reached recall@{rec.k} {rec.recall:.4f} against exact on "
                   f"{rec.queries} sampled target(s), below the floor {config.mining_recall_floor}")
            if not config.allow_low_recall:
                raise DeftError(msg, hint="search exactly (--index exact, with --memory for big pools), or accept "
                                          "it with --allow-low-recall / a lower --recall-floor")
            warnings.append(msg + " (kept: --allow-low-recall)")
        index = ann
    knn = mine_neighbours(t_emb, p_emb, params, target_labels=target_labels, pool_labels=pool_labels,
                          pool_in_history=in_history, shard_rows=shard_rows, index=index)
    return knn, info, warnings


def run_mining(
    targets: MiningTable,
    pool: MiningTable,
    config: MineConfig,
    *,
    cache_root: Path | None = None,
    ledger: Set[str] | None = None,
    embedder: Embedder | None = None,
) -> MineRun:
    """Embed (as needed), check encoder consistency, mine. `ledger` = pool filepaths mined earlier."""
    from deft_aoi.mining.embedders import get_embedder
    from deft_aoi.mining.knn import KnnParams

    warnings: list[str] = []
    timings: dict[str, float] = {}
    label_filter = config.filter_by_label
    if label_filter and not (targets.has_labels and pool.has_labels):
        lacking = " and ".join(
            f"{what} ({t.source})" for what, t in (("targets", targets), ("pool", pool)) if not t.has_labels
        )
        if not config.allow_unfiltered:
            raise InputError(
                f"--filter-by-label needs a 'label' column, missing in {lacking}",
                hint="add labels, drop --filter-by-label, or pass --allow-unfiltered to mine without the filter",
            )
        warnings.append(f"label filter requested but {lacking} has no 'label' column: mined WITHOUT label filter")
        label_filter = False

    # Fingerprints of precomputed sides must agree with each other before anything is embedded.
    if targets.fingerprint is not None and pool.fingerprint is not None:
        require_same_fingerprint(targets.fingerprint, f"targets ({targets.source})",
                                 pool.fingerprint, f"pool ({pool.source})")
    needs_embedding = targets.embeddings is None or pool.embeddings is None
    device = "cpu"
    if needs_embedding:
        embedder = embedder or get_embedder(config.encoder)
        device = embedder.device
        for what, table in (("targets", targets), ("pool", pool)):
            if table.fingerprint is not None:
                require_same_fingerprint(table.fingerprint, f"{what} ({table.source})",
                                         embedder.fingerprint, f"--encoder {config.encoder}")
    embedded_targets = 0
    without_golden = 0
    start = time.perf_counter()
    if targets.embeddings is None:
        assert embedder is not None
        # Every encoder here embeds a pair (input, input − golden; base.Embedder): a lone image is its own golden.
        without_golden = _rows_without_golden(targets.frame)
        t_emb = _embed_table(targets, embedder, "embedding targets")
        embedded_targets = len(t_emb)
        fingerprint = embedder.fingerprint
    else:
        t_emb = targets.embeddings
        fingerprint = targets.fingerprint or Fingerprint.unknown(t_emb.shape[1])
    timings["embed_targets_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cache_stats = cache_dir = pool_id = None
    p_emb: np.ndarray | NpyBlocks
    if pool.embeddings is None:
        assert embedder is not None
        p_emb, cache_stats, cache_dir, pool_id = _embed_pool(pool, embedder, cache_root, config)
    else:
        p_emb = pool.embeddings
        fingerprint = pool.fingerprint or fingerprint
    # An ANN index lives beside the embeddings of its encoder (also for a precomputed pool).
    index_dir = cache_dir or (Path(cache_root) / fingerprint.id if cache_root is not None else None)
    timings["embed_pool_s"] = time.perf_counter() - start
    if t_emb.shape[1] != p_emb.shape[1]:
        raise InputError(f"embedding dims differ: targets {t_emb.shape[1]} ({targets.source}), "
                         f"pool {p_emb.shape[1]} ({pool.source})")
    if fingerprint.is_unknown:
        warnings.append("embeddings carry no encoder fingerprint: consistency between targets and pool "
                        "cannot be verified")

    in_history = None
    ledger_size = len(ledger) if ledger else 0
    if ledger:
        in_history = pool.frame["filepath"].isin(list(ledger)).to_numpy()
    weakness = targets.frame["weakness"].to_numpy() if "weakness" in targets.frame.columns else None
    pool_is_defect = _pool_is_defect(pool.frame, p_emb, config)

    start = time.perf_counter()
    cutoff, cutoff_notes = selection_cutoff(t_emb, p_emb, config, weakness)  # type: ignore[arg-type]
    knn, search, search_warnings = _search_and_mine(
        t_emb,
        p_emb,
        config,
        KnnParams(topn=config.top_k_per_target, min_similarity=cutoff, filter_by_label=label_filter),
        target_labels=targets.frame["label"].to_numpy() if targets.has_labels else None,
        pool_labels=pool.frame["label"].to_numpy() if pool.has_labels else None,
        in_history=in_history,
        cache_dir=index_dir,
        pool_id=pool_id,
    )
    warnings.extend(search_warnings)
    selection = select(t_emb, p_emb, config, knn=knn, cutoff=cutoff,  # type: ignore[arg-type]
                       pool_is_defect=pool_is_defect, in_history=in_history, weakness=weakness)
    timings["knn_s"] = time.perf_counter() - start
    mined = assemble_mined(selection.knn, targets.frame, pool.frame)
    repeated = mined["filepath"].duplicated()
    if repeated.any():
        # The pool lists one image twice (e.g. two rows per light): mined.parquet keeps filepaths unique.
        warnings.append(f"{int(repeated.sum())} mined row(s) repeat a filepath already mined; dropped")
        mined = mined[~repeated].reset_index(drop=True)
    return MineRun(
        config=config, targets=targets, pool=pool, target_emb=t_emb, pool_emb=p_emb, fingerprint=fingerprint,
        knn=selection.knn, mined=mined, label_filter_applied=label_filter, cache_dir=cache_dir,
        cache_stats=cache_stats, embedded_targets=embedded_targets, ledger_size=ledger_size,
        warnings=[*warnings, *knn.notes, *cutoff_notes, *selection.notes],
        timings=timings, device=device, search=search, info=list(knn.info), targets_without_golden=without_golden,
        strategy=selection.strategy, selection=dict(selection.counts), cutoff=selection.cutoff,
    )


def _pool_is_defect(pool: pd.DataFrame, p_emb: np.ndarray | NpyBlocks, config: MineConfig) -> np.ndarray:
    """Which pool rows are defects (the selection's class balance and counts). A selection that re-selects
    needs the labels and the pool matrix in memory; refused before the search otherwise."""
    import numpy as np

    from deft_aoi.workspace.changenet_csv import is_defect_labels

    if config.reselects:
        if "label" not in pool.columns:
            raise InputError("--strategy kpi|diverse, --pool-share and --max-pass-ratio need a 'label' column in "
                             "the pool")
        if not isinstance(p_emb, np.ndarray):
            raise InputError("--strategy kpi|diverse, --pool-share and --max-pass-ratio need the pool matrix in "
                             "memory; drop --mining-memory (the on-disk pool serves the knn strategy only)")
    if "label" not in pool.columns:
        return np.zeros(len(pool), dtype=bool)
    flags: np.ndarray = is_defect_labels(pool["label"])
    return flags


def _rows_without_golden(frame: pd.DataFrame) -> int:
    """Rows with no golden image (no `golden_filepath` column, or an empty cell)."""
    if "golden_filepath" not in frame.columns:
        return len(frame)
    golden = frame["golden_filepath"]
    return int((golden.isna() | (golden.astype(str).str.strip() == "")).sum())


def assemble_mined(knn: KnnResult, targets: pd.DataFrame, pool: pd.DataFrame) -> pd.DataFrame:
    """Pool rows kept by the k-NN, with similarity and the target they matched best (pure)."""
    rows = pool.iloc[knn.mined["pool"].to_numpy()].reset_index(drop=True).copy()
    t_idx = knn.mined["matched_target"].to_numpy()
    rows["similarity"] = knn.mined["similarity"].to_numpy()
    rows["matched_target"] = targets["filepath"].to_numpy()[t_idx]
    if "label" in targets.columns:
        rows["matched_target_label"] = targets["label"].to_numpy()[t_idx]
    rows["n_targets"] = knn.mined["n_targets"].to_numpy()
    if "label" not in rows.columns:
        rows["label"] = ""
    first = ["filepath", "label", "similarity", "matched_target"]
    return rows[first + [c for c in rows.columns if c not in first]]
