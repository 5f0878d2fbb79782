"""The one typed parameter object of mining (`MineConfig`), shared by `deft mine`, the loop's mine stage, both
engines (built-in, Data Services) and the selection strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deft_aoi.config import SETTINGS, CacheDtype, Encoder, MiningExecutor, MiningIndex, Strategy

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig


def _default(setting: str) -> Any:
    """The loop's declared default (config.py owns every default; mining restates none)."""
    return SETTINGS[setting].default


class MineConfig(BaseModel):
    """THE mining parameters (`deft mine`'s options, the loop's mining settings), validated at the boundary.
    Every engine and the selection strategy read this one object; `from_loop_config` builds it from a run's
    config, the only place the loop's setting names meet the mining ones. Defaults and named choices are the
    config's declaration (`deft_aoi.config`), never restated here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topn: int = Field(_default("top_k_per_target"), ge=1)
    min_similarity: float = Field(_default("min_similarity"), ge=-1.0, le=1.0)
    # The k-NN metric (tao rules.KNN_METRICS). The built-in engine mines by cosine; Data Services also by
    # euclidean / manhattan where the encoder allows it (tao rules.knn_metric_rule). The cut-off stays cosine.
    metric: Literal["cosine", "euclidean", "manhattan"] = "cosine"
    # Data Services' encoder: SigLIP or CLIP from Hugging Face (ds_model_path None = runners/tao/commands'
    # DS_MODEL_PATHS), or a TAO checkpoint (.pth/.ckpt) with its train spec as ds_model_config_path.
    ds_model: Literal["SigLIP", "CLIP"] = "SigLIP"
    ds_model_path: str | None = None
    ds_model_config_path: str | None = None
    filter_by_label: bool = False
    allow_unfiltered: bool = False
    encoder: Encoder = _default("encoder")
    # Scale-out (issue 14); the defaults reproduce the single-process exact search.
    index: MiningIndex = _default("mining_index")  # auto: exact below ann.AUTO_MIN_POOL rows
    memory_bytes: int | None = Field(None, ge=1)  # exact search streams the pool in shards fitting this
    cache_dtype: CacheDtype = _default("mining_cache_dtype")
    executor: MiningExecutor = _default("mining_executor")
    ray_workers: int | None = Field(None, ge=1)
    # An approximate search below recall_floor is refused unless allow_low_recall keeps it (with a warning).
    recall_floor: float = Field(_default("mining_recall_floor"), ge=0.0, le=1.0)
    allow_low_recall: bool = _default("allow_low_recall")
    # Which rows among the neighbours (mining/strategy.py); the defaults keep the engine's k-NN as the selection.
    strategy: Strategy = _default("strategy")
    pool_share_pct: float | None = Field(_default("pool_share_pct"), gt=0.0, le=100.0)
    # None here: a `deft mine` outside a run is the plain k-NN; the loop's default cap comes from its config
    # (from_loop_config) where the selection re-selects.
    max_pass_ratio: float | None = Field(None, ge=0.0)

    @property
    def selection_strategy(self) -> str:
        """The strategy that runs: `auto` unresolved (a `deft mine` outside a run) is the plain k-NN."""
        return "knn" if self.strategy == "auto" else self.strategy

    @property
    def reselects(self) -> bool:
        """True when the selection differs from the engine's plain k-NN (another strategy or a guard)."""
        return (self.selection_strategy != "knn" or self.pool_share_pct is not None
                or self.max_pass_ratio is not None)

    @classmethod
    def from_loop_config(cls, config: LoopConfig) -> MineConfig:
        """The mining parameters of a loop run (validated with the rest of the config by config.validate_config)."""
        from deft_aoi.config import parse_memory
        from deft_aoi.mining.embedders import resolve_encoder
        from deft_aoi.mining.strategy import resolve_strategy

        memory = config.mining_memory.value
        strategy = resolve_strategy(config.strategy.value, engine=config.mining_engine.value,
                                    pool_in_memory=memory is None)
        ratio = config.max_pass_ratio
        # The default cap belongs to the re-selecting strategies; the plain k-NN (knn, Data Services, an
        # on-disk pool) stays TAO's selection unless the guard was asked for.
        max_pass_ratio = None if ratio.source == "default" and strategy == "knn" else ratio.value
        return cls(
            topn=config.top_k_per_target.value,
            min_similarity=config.min_similarity.value,
            encoder=resolve_encoder(config.encoder.value, config.backend.value),
            executor=config.mining_executor.value,
            ray_workers=None,  # the loop has no Ray worker setting: the cluster's CPUs/GPUs
            index=config.mining_index.value,
            memory_bytes=parse_memory(memory) if memory else None,
            cache_dtype=config.mining_cache_dtype.value,
            recall_floor=config.mining_recall_floor.value,
            allow_low_recall=config.allow_low_recall.value,
            strategy=strategy,
            pool_share_pct=config.pool_share_pct.value,
            max_pass_ratio=max_pass_ratio,
        )
