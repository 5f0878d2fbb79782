"""The one typed parameter object of mining (`MineConfig`), shared by `deft mine`, the loop's mine stage, both
engines (built-in, Data Services) and the selection strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deft_aoi.config import SETTINGS, CacheDtype, Encoder, MiningExecutor, MiningIndex, Strategy, parse_memory

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig


def _default(setting: str) -> Any:
    """The loop's declared default (config.py owns every default; mining restates none)."""
    return SETTINGS[setting].default


def resolve_strategy(name: Strategy, *, engine: str, pool_in_memory: bool) -> Strategy:
    """`auto` → `kpi` where it can run: the builtin engine (Data Services mines with its own k-NN) with the
    pool matrix in memory (a --mining-memory budget streams it from disk, which serves `knn` only); `knn`
    otherwise, and for a `deft mine` outside a run (MineConfig.selection_strategy). Others as named."""
    if name != "auto":
        return name
    return "kpi" if engine == "builtin" and pool_in_memory else "knn"


class MineConfig(BaseModel):
    """THE mining parameters (`deft mine`'s options, a run's mining settings), validated at the boundary.
    Every engine and the selection strategy read this one object. A field that is a loop setting carries the
    setting's own name and declared default (`deft_aoi.config`); `from_loop_config` takes those by name from a
    typed `LoopConfig`: the one place a run and `deft mine` build it. Nothing is renamed or restated here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- loop settings (config.LoopConfig), same names ------------------------------------------------------
    top_k_per_target: int = Field(_default("top_k_per_target"), ge=1)
    min_similarity: float = Field(_default("min_similarity"), ge=-1.0, le=1.0)
    encoder: Encoder = _default("encoder")
    # Scale-out (issue 14); the defaults reproduce the single-process exact search.
    mining_index: MiningIndex = _default("mining_index")  # auto: exact below ann.AUTO_MIN_POOL rows
    mining_memory: str | None = _default("mining_memory")  # exact search streams the pool in shards fitting it
    mining_cache_dtype: CacheDtype = _default("mining_cache_dtype")
    mining_executor: MiningExecutor = _default("mining_executor")
    # An approximate search below mining_recall_floor is refused unless allow_low_recall keeps it (with a warning).
    mining_recall_floor: float = Field(_default("mining_recall_floor"), ge=0.0, le=1.0)
    allow_low_recall: bool = _default("allow_low_recall")
    # Which rows among the neighbours (mining/strategy.py); the defaults keep the engine's k-NN as the selection.
    strategy: Strategy = _default("strategy")
    pool_share_pct: float | None = Field(_default("pool_share_pct"), gt=0.0, le=100.0)
    # None here: a `deft mine` outside a run is the plain k-NN; a run's default cap comes from its config
    # (`from_loop_config`) where the selection re-selects.
    max_pass_ratio: float | None = Field(None, ge=0.0)
    # -- mining's own (`deft mine` options) ------------------------------------------------------------------
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
    ray_workers: int | None = Field(None, ge=1)  # None: the Ray cluster's CPUs/GPUs

    @property
    def memory_bytes(self) -> int | None:
        """The exact search's memory budget in bytes (None: the whole pool in memory)."""
        return parse_memory(self.mining_memory) if self.mining_memory else None

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
    def from_loop_config(cls, config: LoopConfig, *, in_run: bool = True, **options: Any) -> MineConfig:
        """The mining parameters of a typed config: every field named like a loop setting takes that setting's
        value; `options` are mining's own (`deft mine`'s flags). In a run (`in_run`) `auto` encoder and strategy
        resolve for its backend and engine; a `deft mine` outside a run has no backend (`auto` = the builtin
        encoder) and keeps the plain k-NN unless a strategy is named."""
        from deft_aoi.mining.embedders import resolve_encoder
        values = {name: getattr(config, name).value for name in cls.model_fields if name in SETTINGS}
        strategy = (resolve_strategy(config.strategy.value, engine=config.mining_engine.value,
                                     pool_in_memory=config.mining_memory.value is None)
                    if in_run else config.strategy.value)
        ratio = config.max_pass_ratio
        # The default cap belongs to the re-selecting strategies; the plain k-NN (knn, Data Services, an
        # on-disk pool) stays TAO's selection unless the guard was asked for.
        plain = strategy in ("auto", "knn")
        values.update(encoder=resolve_encoder(config.encoder.value, config.backend.value if in_run else None),
                      strategy=strategy, max_pass_ratio=None if ratio.source == "default" and plain else ratio.value)
        return cls(**values, **options)
