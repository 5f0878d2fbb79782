"""The one typed parameter object of mining (`MineConfig`), shared by `deft mine`, the loop's mine stage, both
engines (built-in, Data Services) and the selection strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig


class MineConfig(BaseModel):
    """THE mining parameters (`deft mine`'s options, the loop's mining settings), validated at the boundary.
    Every engine and the selection strategy read this one object; `from_loop_config` builds it from a run's
    config, the only place the loop's setting names meet the mining ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topn: int = Field(5, ge=1)
    min_similarity: float = Field(0.9, ge=-1.0, le=1.0)
    metric: Literal["cosine"] = "cosine"
    filter_by_label: bool = False
    allow_unfiltered: bool = False
    encoder: str = "builtin"
    # Scale-out (issue 14); the defaults reproduce the single-process exact search.
    index: Literal["exact", "auto", "ivf", "hnsw"] = "auto"  # auto: exact below ann.AUTO_MIN_POOL rows
    memory_bytes: int | None = Field(None, ge=1)  # exact search streams the pool in shards fitting this
    cache_dtype: Literal["float32", "float16"] = "float32"
    executor: Literal["inprocess", "ray"] = "inprocess"
    ray_workers: int | None = Field(None, ge=1)
    recall_floor: float = Field(0.99, ge=0.0, le=1.0)  # an approximate search below it is refused...
    allow_low_recall: bool = False  # ...unless this says to keep it (with a warning)
    # Which rows among the neighbours (mining/strategy.py); the defaults keep the engine's k-NN as the selection.
    strategy: str = "knn"
    pool_share_pct: float | None = Field(None, gt=0.0, le=100.0)
    max_pass_ratio: float | None = Field(None, ge=0.0)

    @field_validator("encoder", "strategy")
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        from deft_aoi.mining.embedders import ENCODERS
        from deft_aoi.mining.strategy import STRATEGIES

        what, allowed = {"encoder": ("encoder", ENCODERS), "strategy": ("selection strategy", STRATEGIES)}[
            str(info.field_name)]
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        return value

    @property
    def reselects(self) -> bool:
        """True when the selection differs from the engine's plain k-NN (another strategy or a guard)."""
        return self.strategy != "knn" or self.pool_share_pct is not None or self.max_pass_ratio is not None

    @classmethod
    def from_loop_config(cls, config: LoopConfig) -> MineConfig:
        """The mining parameters of a loop run (validated with the rest of the config by config.validate_config)."""
        from deft_aoi.config import parse_memory

        memory = config.mining_memory.value
        return cls(
            topn=config.top_k_per_target.value,
            min_similarity=config.min_similarity.value,
            encoder=config.encoder.value,
            executor=config.mining_executor.value,
            ray_workers=None,  # the loop has no Ray worker setting: the cluster's CPUs/GPUs
            index=config.mining_index.value,
            memory_bytes=parse_memory(memory) if memory else None,
            cache_dtype=config.mining_cache_dtype.value,
            recall_floor=config.mining_recall_floor.value,
            allow_low_recall=config.allow_low_recall.value,
            strategy=config.strategy.value,
            pool_share_pct=config.pool_share_pct.value,
            max_pass_ratio=config.max_pass_ratio.value,
        )
