"""One mining run: make sure targets and pool share one encoder, embed what is missing (pool through the
cache), k-NN, and assemble the mined rows. Writing the outputs is `report.write_outputs`."""

from __future__ import annotations

import time
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.base import Fingerprint, require_same_fingerprint

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.cache import CacheStats
    from deft_aoi.mining.embedders.base import Embedder
    from deft_aoi.mining.inputs import MiningTable
    from deft_aoi.mining.knn import KnnResult


class MineConfig(BaseModel):
    """The user-facing mining parameters, validated at the boundary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topn: int = Field(5, ge=1)
    min_similarity: float = Field(0.9, ge=-1.0, le=1.0)
    metric: Literal["cosine"] = "cosine"
    filter_by_label: bool = False
    allow_unfiltered: bool = False
    encoder: str = "builtin"

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, value: str) -> str:
        from deft_aoi.mining.embedders import ENCODERS

        if value not in ENCODERS:
            raise ValueError(f"unknown encoder {value!r}; choose one of {', '.join(ENCODERS)}")
        return value


@dataclass
class MineRun:
    config: MineConfig
    targets: MiningTable
    pool: MiningTable
    target_emb: np.ndarray
    pool_emb: np.ndarray
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

    return _progress_embed(label, run, embedder.device)


def _embed_pool(
    table: MiningTable, embedder: Embedder, cache_root: Path | None
) -> tuple[np.ndarray, CacheStats | None, Path | None]:
    from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache

    frame = table.frame
    goldens = frame["golden_filepath"].tolist() if "golden_filepath" in frame.columns else [None] * len(frame)
    inputs = frame["filepath"].tolist()
    if cache_root is None:
        return _embed_table(table, embedder, "embedding pool"), None, None
    cache = EmbeddingCache(cache_root, embedder.fingerprint)
    emb, stats = _progress_embed(
        "embedding pool",
        lambda cb: embed_with_cache(inputs, goldens, embedder, cache, on_progress=cb),
        embedder.device,
    )
    return emb, stats, cache.dir


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
    from deft_aoi.mining.knn import KnnParams, mine_neighbours

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
    start = time.perf_counter()
    if targets.embeddings is None:
        assert embedder is not None
        t_emb = _embed_table(targets, embedder, "embedding targets")
        embedded_targets = len(t_emb)
        fingerprint = embedder.fingerprint
    else:
        t_emb = targets.embeddings
        fingerprint = targets.fingerprint or Fingerprint.unknown(t_emb.shape[1])
    timings["embed_targets_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cache_stats = cache_dir = None
    if pool.embeddings is None:
        assert embedder is not None
        p_emb, cache_stats, cache_dir = _embed_pool(pool, embedder, cache_root)
    else:
        p_emb = pool.embeddings
        fingerprint = pool.fingerprint or fingerprint
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

    start = time.perf_counter()
    knn = mine_neighbours(
        t_emb,
        p_emb,
        KnnParams(topn=config.topn, min_similarity=config.min_similarity, filter_by_label=label_filter),
        target_labels=targets.frame["label"].to_numpy() if targets.has_labels else None,
        pool_labels=pool.frame["label"].to_numpy() if pool.has_labels else None,
        pool_in_history=in_history,
    )
    timings["knn_s"] = time.perf_counter() - start
    mined = assemble_mined(knn, targets.frame, pool.frame)
    repeated = mined["filepath"].duplicated()
    if repeated.any():
        # The pool lists one image twice (e.g. two rows per light): mined.parquet keeps filepaths unique.
        warnings.append(f"{int(repeated.sum())} mined row(s) repeat a filepath already mined; dropped")
        mined = mined[~repeated].reset_index(drop=True)
    return MineRun(
        config=config, targets=targets, pool=pool, target_emb=t_emb, pool_emb=p_emb, fingerprint=fingerprint,
        knn=knn, mined=mined, label_filter_applied=label_filter, cache_dir=cache_dir, cache_stats=cache_stats,
        embedded_targets=embedded_targets, ledger_size=ledger_size, warnings=warnings + knn.notes,
        timings=timings, device=device,
    )


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
