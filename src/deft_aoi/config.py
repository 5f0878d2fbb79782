"""Typed loop configuration. Every resolved value remembers where it came from (flag | spec | default),
because the Pre-Flight Summary must show the user the source of each parameter."""

from __future__ import annotations

import re
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from deft_aoi.errors import UsageError

T = TypeVar("T")
Source = Literal["flag", "spec", "default", "state"]
Backend = Literal["local", "docker", "fake"]

DEFAULT_KPI = "FAR<0.1%@recall=100%"
DEFAULTS: dict[str, Any] = {
    "kpi": DEFAULT_KPI,
    "max_iterations": 3,
    "top_k_per_target": 5,
    "min_similarity": 0.9,
    "top_k_per_label": 50,
    "num_epochs": 20,
    "batch_size": 16,
    "backend": "local",
    "seed": 0,
    "mining_engine": "builtin",
    "encoder": "builtin",
    "mining_executor": "inprocess",
    "mining_index": "auto",
    "mining_memory": None,
    "mining_cache_dtype": "float32",
    "mining_recall_floor": 0.99,
    "allow_low_recall": False,
    # Pre-flight pool hygiene: min(input, golden) pixel-pair cosine of a near duplicate. deeppcb-dev figures
    # behind it (embedders/pixels.py): JPEG re-encodes ≥ 0.9987 (quality 30), distinct crops ≤ 0.9956.
    "near_duplicate_threshold": 0.998,
    "exclude_leaks": True,  # False (--no-exclude): leaking pool rows fail pre-flight instead
    "strategy": "knn",
    "pool_share_pct": None,
    "max_pass_ratio": None,
    "finetune_from": "best",
    # Score the training CSV too (one more inference job per iteration) so RCA can flag suspect TRAINING
    # labels, not only KPI ones; why on by default: loop/stages/model.py `score_training_rows`.
    "score_training_rows": True,
}
# Where each iteration's fine-tune starts (loop/stages/model.py `training_inputs`).
FINETUNE_FROM = ("best", "baseline", "scratch")
MINING_EXECUTORS = ("inprocess", "ray")
MINING_INDEXES = ("exact", "auto", "ivf", "hnsw")
CACHE_DTYPES = ("float32", "float16")


def _default(name: str) -> Any:
    """A field default for settings added after runs were already recorded (resume keeps old states)."""
    return Field(default_factory=lambda: Sourced(value=DEFAULTS[name], source="default"))


def _no_value() -> Sourced[Any]:
    """The default of an optional setting: None, from no source (typed Any: the field says what it may hold)."""
    return Sourced(value=None, source="default")


def parse_memory(text: str) -> int:
    """A memory budget such as "2G", "512M", "1.5GiB" or plain bytes → bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text or "", re.IGNORECASE)
    if not match:
        raise UsageError(f"cannot read memory size {text!r}", hint='write it like "2G", "512M" or "1.5GiB"')
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match[2].lower()]
    value = int(float(match[1]) * scale)
    if value < 1:
        raise UsageError(f"memory size {text!r} must be positive")
    return value


# Job timeouts when --stage-timeout is not given: generous multiples of the workload (rows × epochs), so only
# a job that hangs (a container that never exits, a dead GPU) reaches them, and it fails the stage resumably.
TIMEOUT_BASE_S = 1800.0
TIMEOUT_PER_SAMPLE_EPOCH_S = 0.5


class Sourced(BaseModel, Generic[T]):
    model_config = ConfigDict(frozen=True)

    value: T
    source: Source


_KPI_RE = re.compile(
    r"""^\s*(?P<metric>far)\s*(?P<op><=|<)\s*(?P<target>\d+(?:\.\d+)?)\s*%\s*
        (?:(?:@|at)\s*(?P<cmetric>recall)\s*(?:=|>=|==)\s*(?P<cvalue>\d+(?:\.\d+)?)\s*%)?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


class KpiTarget(BaseModel):
    """A deployment KPI such as "FAR<0.1%@recall=100%": minimise FAR subject to a recall floor."""

    model_config = ConfigDict(frozen=True)

    text: str
    metric: Literal["far_pct"] = "far_pct"
    operator: Literal["<", "<="] = "<"
    target_pct: float
    constraint_metric: Literal["recall_pct"] = "recall_pct"
    constraint_pct: float = 100.0

    @classmethod
    def parse(cls, text: str) -> KpiTarget:
        match = _KPI_RE.match(text or "")
        if not match:
            raise UsageError(
                f"cannot parse KPI target {text!r}",
                hint='write it like "FAR<0.1%@recall=100%" (FAR below X % at recall = Y %)',
            )
        target = float(match["target"])
        cvalue = float(match["cvalue"]) if match["cvalue"] else 100.0
        if not 0 <= target <= 100 or not 0 < cvalue <= 100:
            raise UsageError(f"KPI percentages out of range in {text!r}")
        if target == 0 and match["op"] == "<":
            raise UsageError(f"KPI {text!r} can never be met: FAR cannot go below 0 %",
                             hint='write "FAR<=0%@recall=100%" for zero false alarms')
        return cls(text=text.strip(), operator=match["op"], target_pct=target, constraint_pct=cvalue)  # type: ignore[arg-type]

    def is_met(self, far_pct: float | None, recall_pct: float | None) -> bool:
        if far_pct is None or recall_pct is None:
            return False
        if recall_pct + 1e-9 < self.constraint_pct:
            return False
        return far_pct < self.target_pct if self.operator == "<" else far_pct <= self.target_pct

    def describe(self) -> str:
        return f"FAR {self.operator} {self.target_pct:g}% at recall = {self.constraint_pct:g}%"


class LoopConfig(BaseModel):
    """Resolved parameters of one run."""

    model_config = ConfigDict(frozen=True)

    kpi: Sourced[str]
    max_iterations: Sourced[int]
    top_k_per_target: Sourced[int]
    min_similarity: Sourced[float]
    top_k_per_label: Sourced[int]
    num_epochs: Sourced[int]
    batch_size: Sourced[int]
    backend: Sourced[str]
    seed: Sourced[int]
    mining_engine: Sourced[str]
    encoder: Sourced[str]
    near_duplicate_threshold: Sourced[float] = Field(
        default_factory=lambda: Sourced(value=DEFAULTS["near_duplicate_threshold"], source="default"))
    exclude_leaks: Sourced[bool] = Field(default_factory=lambda: Sourced(value=True, source="default"))
    baseline_checkpoint: Sourced[str | None] = Field(default_factory=_no_value)
    # Mining at scale (issue 14): where the pool is embedded, how it is searched.
    mining_executor: Sourced[str] = _default("mining_executor")
    mining_index: Sourced[str] = _default("mining_index")
    mining_memory: Sourced[str | None] = _default("mining_memory")
    mining_cache_dtype: Sourced[str] = _default("mining_cache_dtype")
    mining_recall_floor: Sourced[float] = _default("mining_recall_floor")
    allow_low_recall: Sourced[bool] = _default("allow_low_recall")
    stage_timeout: Sourced[float | None] = Field(default_factory=_no_value)
    # Selection and fine-tune protocol (issue 15).
    strategy: Sourced[str] = _default("strategy")
    pool_share_pct: Sourced[float | None] = _default("pool_share_pct")
    max_pass_ratio: Sourced[float | None] = _default("max_pass_ratio")
    finetune_from: Sourced[str] = _default("finetune_from")
    score_training_rows: Sourced[bool] = _default("score_training_rows")

    def job_timeout_s(self, rows: int, epochs: int = 1) -> float:
        """Seconds one backend job may run: `--stage-timeout` when given, else sized from the workload."""
        if self.stage_timeout.value is not None:
            return float(self.stage_timeout.value)
        return TIMEOUT_BASE_S + TIMEOUT_PER_SAMPLE_EPOCH_S * max(rows, 1) * max(epochs, 1)

    @property
    def kpi_target(self) -> KpiTarget:
        return KpiTarget.parse(self.kpi.value)

    def table(self) -> list[tuple[str, str, str]]:
        """(parameter, value, source) rows for the Pre-Flight Summary."""
        rows = []
        for name in type(self).model_fields:
            field = getattr(self, name)
            rows.append((name, "—" if field.value is None else str(field.value), field.source))
        return rows

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name).value for name in type(self).model_fields}


def resolve_config(flags: dict[str, Any], spec_values: dict[str, Any] | None = None) -> LoopConfig:
    """Flags (None = not given) beat the spec, which beats the defaults."""
    spec_values = spec_values or {}
    resolved: dict[str, Sourced[Any]] = {}
    for name in LoopConfig.model_fields:
        if flags.get(name) is not None:
            resolved[name] = Sourced(value=flags[name], source="flag")
        elif spec_values.get(name) is not None:
            resolved[name] = Sourced(value=spec_values[name], source="spec")
        else:
            resolved[name] = Sourced(value=DEFAULTS.get(name), source="default")
    config = LoopConfig(**resolved)
    config.kpi_target  # noqa: B018 - validate early, as a usage error
    validate_config(config)
    return config


def validate_config(config: LoopConfig) -> None:
    """Value and combination checks shared by fresh runs and resumed ones (usage errors, exit 2)."""
    if config.backend.value not in ("local", "docker", "fake"):
        raise UsageError(f"unknown backend {config.backend.value!r}; choose local, docker or fake")
    if config.max_iterations.value < 0:
        raise UsageError("--max-iterations must be ≥ 0")
    if config.top_k_per_target.value < 1:
        raise UsageError("--top-k must be ≥ 1")
    if not -1.0 <= config.min_similarity.value <= 1.0:
        raise UsageError("--min-similarity is a cosine similarity in [-1, 1]")
    if config.num_epochs.value < 1:
        raise UsageError("epochs must be ≥ 1")
    if config.batch_size.value < 1:
        raise UsageError("batch_size must be ≥ 1")
    if not 0.0 < config.near_duplicate_threshold.value <= 1.0:
        raise UsageError("--near-duplicate-threshold is a cosine similarity in (0, 1]")
    if config.stage_timeout.value is not None and not config.stage_timeout.value > 0:
        raise UsageError(f"--stage-timeout must be a number of seconds > 0, got {config.stage_timeout.value}")
    if not 0 <= config.seed.value < 2**32:
        raise UsageError(f"--seed must be an integer in [0, 2^32), got {config.seed.value}")
    from deft_aoi.mining.embedders import ENCODERS  # light module: names only, no model code

    if config.encoder.value not in ENCODERS:
        raise UsageError(f"unknown encoder {config.encoder.value!r}; choose one of: {', '.join(ENCODERS)}")
    if config.mining_engine.value not in ("builtin", "data_services"):
        raise UsageError(f"unknown mining engine {config.mining_engine.value!r}; choose builtin or data_services")
    for name, allowed in (("mining_executor", MINING_EXECUTORS), ("mining_index", MINING_INDEXES),
                          ("mining_cache_dtype", CACHE_DTYPES)):
        value = getattr(config, name).value
        if value not in allowed:
            raise UsageError(f"unknown {name.replace('_', ' ')} {value!r}; choose one of {', '.join(allowed)}")
    if not 0.0 <= config.mining_recall_floor.value <= 1.0:
        raise UsageError("--recall-floor is a recall in [0, 1]")
    if config.mining_memory.value is not None:
        parse_memory(config.mining_memory.value)
    from deft_aoi.mining.strategy import STRATEGIES

    if config.strategy.value not in STRATEGIES:
        raise UsageError(f"unknown selection strategy {config.strategy.value!r}; choose {', '.join(STRATEGIES)}")
    share = config.pool_share_pct.value
    if share is not None and not 0 < share <= 100:
        raise UsageError("--pool-share is a percentage of the mining pool in (0, 100]")
    ratio = config.max_pass_ratio.value
    if ratio is not None and ratio < 0:
        raise UsageError("--max-pass-ratio (PASS rows per defect row) must be ≥ 0")
    if config.finetune_from.value not in FINETUNE_FROM:
        raise UsageError(f"unknown --finetune-from {config.finetune_from.value!r}; choose {', '.join(FINETUNE_FROM)}")
    if config.mining_engine.value == "data_services" and (config.strategy.value != "knn" or share is not None
                                                          or ratio is not None):
        raise UsageError("--strategy, --pool-share and --max-pass-ratio apply to --mining-engine builtin; "
                         "Data Services mines with its own k-NN")
    if config.mining_engine.value == "data_services" and config.backend.value == "local":
        # The local backend runs Visual ChangeNet in-process; Data Services exists only as a container.
        raise UsageError("--mining-engine data_services needs containers: use --backend docker (or fake), "
                         "or --mining-engine builtin with --backend local")
