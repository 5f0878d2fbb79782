"""The loop's settings, each declared ONCE (type with its choices, default, bounds, help, flag, hidden old
spellings, spec key) on `LoopConfig`. Everything else derives from that declaration: the `deft run` /
`deft preflight` flags (cli/settings.py), the Pre-Flight Summary, the run record and resume. Every resolved
value remembers where it came from (flag | spec | default | state), because the Pre-Flight Summary must show
the user the source of each parameter.

Adding a loop parameter = one `Annotated[Sourced[T], Setting(...)]` line here (plus its test)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from deft_aoi.errors import UsageError

T = TypeVar("T")
Source = Literal["flag", "spec", "default", "state"]
# Names the config owns; mining/ keeps its own registries, a test checks they list exactly these.
Backend = Literal["local", "docker", "fake", "slurm"]
Encoder = Literal["auto", "builtin", "siglip", "shape"]  # mining.embedders.ENCODERS
Strategy = Literal["auto", "knn", "kpi", "diverse"]  # mining.strategy.STRATEGIES
MiningEngine = Literal["builtin", "data_services"]
MiningExecutor = Literal["inprocess", "ray"]
MiningIndex = Literal["exact", "auto", "ivf", "hnsw"]
CacheDtype = Literal["float32", "float16"]  # mining.cache.CACHE_DTYPES is derived from it
FinetuneFrom = Literal["best", "baseline", "scratch"]  # where each fine-tune starts (stages/model.py)
OnWorse = Literal["exclude", "off"]  # the gate's protection after a worse iteration (analysis/guard.py)
Export = Literal["none", "onnx"]  # what the handoff exports the best checkpoint to (loop/stages/decision.py)

DEFAULT_KPI = "FAR<0.1%@recall=100%"


def choices(kind: Any) -> tuple[str, ...]:
    """The values of a Literal alias, e.g. choices(Encoder) == ("builtin", "siglip")."""
    return tuple(get_args(kind))


@dataclass(frozen=True)
class Setting:
    """How one loop parameter is declared: everything but its type (the annotation carries that)."""

    default: Any
    flag: str  # the one spelling on every command
    help: str
    aliases: tuple[str, ...] = ()  # old spellings, still accepted, hidden from --help
    off_flag: str | None = None  # booleans: the flag that sets False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    spec: str | None = None  # the ChangeNetSpec attribute that supplies it when no flag does
    metavar: str | None = None
    label: str | None = None  # how errors name it (default: the field name in words)


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


# The backbone `deft fetch-backbone` stages by default: NVIDIA's DEFT recipe trains C-RADIOv2-B from this Hugging
# Face file (tao-skill-bank `stage_backbone.py`: --repo-id nvidia/C-RADIOv2-B --filename model.safetensors).
BACKBONE_REPO_ID = "nvidia/C-RADIOv2-B"
BACKBONE_FILENAME = "model.safetensors"


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

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        """A flag or an old run record gives the text; the saved config gives the parsed fields."""
        return cls.parse(data).model_dump() if isinstance(data, str) else data

    def __str__(self) -> str:
        return self.text

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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _bound_error(setting: Setting, value: Any) -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        # NaN passes every comparison below (all are False) and would reach the maths as a bound of nothing.
        return f"{setting.flag} must be a finite number, got {value}"
    low = (setting.ge is not None and value < setting.ge) or (setting.gt is not None and value <= setting.gt)
    if low or (setting.le is not None and value > setting.le):
        lo = (f"≥ {_num(setting.ge)}" if setting.ge is not None
              else f"> {_num(setting.gt)}" if setting.gt is not None else "")
        hi = f"≤ {_num(setting.le)}" if setting.le is not None else ""
        return f"{setting.flag} must be {' and '.join(x for x in (lo, hi) if x)}, got {value}"
    return None


class LoopConfig(BaseModel):
    """Resolved parameters of one run: the one declaration of every loop setting.

    Fields are `Annotated[Sourced[T], Setting(...)]`; a field missing from the input (a run recorded before
    the setting existed) gets its declared default."""

    model_config = ConfigDict(frozen=True)

    kpi: Annotated[Sourced[KpiTarget], Setting(
        DEFAULT_KPI, "--kpi", 'KPI target, e.g. "FAR<0.1%@recall=100%".', metavar="TEXT")]
    max_iterations: Annotated[Sourced[int], Setting(3, "--max-iterations", "Loop iterations after the baseline.",
                                                    ge=0)]
    top_k_per_target: Annotated[Sourced[int], Setting(5, "--top-k", "Neighbours kept per weak target.",
                                                      aliases=("--topn",), ge=1)]
    min_similarity: Annotated[Sourced[float], Setting(0.9, "--min-similarity", "Cosine cut-off of mined rows.",
                                                      ge=-1.0, le=1.0)]
    top_k_per_label: Annotated[Sourced[int], Setting(50, "--top-k-per-label",
                                                     "Weakest samples per defect label the RCA keeps.", ge=1)]
    num_epochs: Annotated[Sourced[int], Setting(20, "--epochs", "Training epochs (else the spec's train.num_epochs).",
                                                ge=1, spec="num_epochs")]
    batch_size: Annotated[Sourced[int], Setting(16, "--batch-size", "Batch size (else the spec's).", ge=1,
                                                spec="batch_size")]
    backend: Annotated[Sourced[Backend], Setting(
        "local", "--backend",
        "Where heavy work runs: local (in-process PyTorch), docker (TAO containers), fake (CI stand-in), "
        "slurm (Slurm jobs; platform.yaml, docs/PLATFORMS.md).")]
    seed: Annotated[Sourced[int], Setting(0, "--seed", "Random seed of training and selection.", ge=0,
                                          le=2**32 - 1)]
    mining_engine: Annotated[Sourced[MiningEngine], Setting(
        "builtin", "--mining-engine",
        "builtin (on the host) | data_services (TAO Data Services containers; docker/fake backends).")]
    # auto: `shape` (the local model's own change descriptors) on the local backend, where torch is
    # installed and the model reads exactly those; `builtin` elsewhere (mining.embedders.resolve_encoder).
    encoder: Annotated[Sourced[Encoder], Setting("auto", "--encoder", "Mining embedder; auto = shape on the "
                                                 "local backend, builtin otherwise.")]
    # Pre-flight pool hygiene: min(input, golden) pixel-pair cosine of a near duplicate. deeppcb-dev figures
    # behind it (embedders/pixels.py): JPEG re-encodes ≥ 0.9987 (quality 30), distinct crops ≤ 0.9956.
    near_duplicate_threshold: Annotated[Sourced[float], Setting(
        0.998, "--near-duplicate-threshold", "Near-duplicate cut-off: min(input, golden) pixel cosine.",
        gt=0.0, le=1.0)]
    exclude_leaks: Annotated[Sourced[bool], Setting(
        True, "--exclude-leaks",
        "Exclude mining-pool/synthetic rows that repeat validation/KPI rows; --no-exclude: pre-flight fails "
        "and names them instead.", off_flag="--no-exclude")]
    baseline_checkpoint: Annotated[Sourced[str | None], Setting(
        None, "--baseline-checkpoint", "Skip baseline training: start from this checkpoint.", metavar="PATH")]
    # Mining at scale (issue 14): where the pool is embedded, how it is searched.
    mining_executor: Annotated[Sourced[MiningExecutor], Setting(
        "inprocess", "--mining-executor", "Embed the pool in-process or on Ray Data actors (RAY_ADDRESS or a "
        "local Ray); pre-flight hashes and decodes the pool there too.", aliases=("--executor",))]
    mining_index: Annotated[Sourced[MiningIndex], Setting(
        "auto", "--mining-index", "k-NN search; auto: approximate ivf from 2M pool rows, exact below.",
        aliases=("--index",))]
    mining_memory: Annotated[Sourced[str | None], Setting(
        None, "--mining-memory", "Memory budget of the exact k-NN and of pre-flight's pool scan, e.g. 2G (the "
        "pool streams in shards/chunks that fit; pre-flight's default: RAM/16 in 256M-2G).", aliases=("--memory",),
        metavar="SIZE")]
    mining_cache_dtype: Annotated[Sourced[CacheDtype], Setting(
        "float32", "--mining-cache-dtype", "Embedding cache dtype (float16: half the disk and memory; cosines "
        "move by ~1e-3).", aliases=("--cache-dtype",))]
    mining_recall_floor: Annotated[Sourced[float], Setting(
        0.99, "--recall-floor", "Refuse an approximate k-NN whose measured recall@k is below this.",
        ge=0.0, le=1.0)]
    allow_low_recall: Annotated[Sourced[bool], Setting(
        False, "--allow-low-recall", "Keep an approximate k-NN below the recall floor (with a warning).",
        off_flag="--refuse-low-recall")]
    stage_timeout: Annotated[Sourced[float | None], Setting(
        None, "--stage-timeout", "Seconds one backend job may run before its stage fails (resumable) "
        "[default: sized from rows × epochs, at least 30 min].", gt=0.0, metavar="SECONDS")]
    # The sizing's rate: a slow device (the local backend on a laptop CPU, an old GPU) needs more seconds per
    # row and epoch than the default before a job that is merely slow is taken for a hung one.
    timeout_per_sample_epoch: Annotated[Sourced[float], Setting(
        TIMEOUT_PER_SAMPLE_EPOCH_S, "--timeout-per-sample-epoch", "Seconds each row × epoch adds to a backend "
        "job's timeout, on top of 30 min (ignored with --stage-timeout).", gt=0.0, metavar="SECONDS")]
    # Selection and fine-tune protocol (issue 15).
    # auto: `kpi` where it can run (the builtin engine with the pool in memory), `knn` otherwise
    # (mining.params.resolve_strategy); chosen by bench/RESULTS.md, loop efficacy run 8.
    strategy: Annotated[Sourced[Strategy], Setting("auto", "--strategy", "Row selection (mining.strategy); "
                                                   "auto = kpi on the builtin engine, knn otherwise.",
                                                             label="selection strategy")]
    pool_share_pct: Annotated[Sourced[float | None], Setting(
        None, "--pool-share", "Pool-calibrated cut-off: at most this % of the mining pool passes (replaces "
        "--min-similarity).", gt=0.0, le=100.0, metavar="PCT")]
    # On by default where the builtin selection re-selects (kpi, diverse): without it the demo added 84 PASS
    # rows per defect row in one iteration. 2 is chosen on the efficacy suite (bench/RESULTS.md, run 10). The
    # plain k-NN (`knn`, Data Services, an on-disk pool) keeps TAO's selection unless the flag is given
    # (mining.params.MineConfig.from_loop_config).
    max_pass_ratio: Annotated[Sourced[float | None], Setting(
        2.0, "--max-pass-ratio", "Class-balance guard: at most this many PASS rows added per defect row "
        "(default applies to the kpi/diverse selection; with knn only when given).",
        ge=0.0, metavar="R")]
    # An unattended multi-hour run should not start on a nearly full disk (pre-flight only warns otherwise).
    min_free_disk: Annotated[Sourced[str | None], Setting(
        None, "--min-free-disk", "Pre-flight fails with less free space than this on the device holding results/, "
        "e.g. 50G [default: warn below ~500 MB + twice the synthetic pool].", metavar="SIZE")]
    finetune_from: Annotated[Sourced[FinetuneFrom], Setting(
        "best", "--finetune-from", "Each iteration trains from: the best checkpoint so far, the baseline's, "
        "or scratch.")]
    # The gate that protects (issue 25): an iteration worse than the best so far is not built on; why
    # exclusion and why on by default: analysis/guard.py (bench/RESULTS.md, loop efficacy run 11).
    on_worse: Annotated[Sourced[OnWorse], Setting(
        "exclude", "--on-worse", "After an iteration that makes FAR worse than the best so far: exclude the "
        "rows it added from later fine-tunes (which start from the best iteration), or off.")]
    # The GPUs each TAO job is given (runners/gpus.py): docker device requests, Slurm --gpus-per-node, local
    # cuda/cpu; TAO is told the same count (train.num_gpus / gpu_ids). None: the backend's own default.
    gpus: Annotated[Sourced[str | None], Setting(
        None, "--gpus", "GPUs each TAO job gets: all, a count (0 = none) or device ids (0,2); TAO's num_gpus/gpu_ids "
        "follow [default: docker all (DEFT_DOCKER_GPUS), slurm the platform's gpus (1), local cuda if present].",
        metavar="GPUS")]
    # Slurm's placement of each job (runners/slurm/platform.py): a flag beats platform.yaml and DEFT_SLURM_*.
    partition: Annotated[Sourced[str | None], Setting(
        None, "--partition", "Slurm partition of each job (beats platform.yaml / DEFT_SLURM_PARTITION).",
        metavar="NAME")]
    account: Annotated[Sourced[str | None], Setting(
        None, "--account", "Slurm account charged (beats platform.yaml / DEFT_SLURM_ACCOUNT).", metavar="NAME")]
    qos: Annotated[Sourced[str | None], Setting(
        None, "--qos", "Slurm QoS of each job (beats platform.yaml / DEFT_SLURM_QOS).", metavar="NAME")]
    time_limit: Annotated[Sourced[str | None], Setting(
        None, "--time-limit", "Slurm --time of each job, e.g. 08:00:00 (beats platform.yaml / DEFT_SLURM_TIME) "
        "[default: the stage timeout].", metavar="TIME")]
    # NVIDIA's DEFT recipe stops at the .pth; `onnx` ends the handoff with `visual_changenet export` of the best
    # checkpoint (issue 24). Containers only: runners.factory.check_settings refuses it on the local backend.
    export: Annotated[Sourced[Export], Setting(
        "none", "--export", "End the handoff with `visual_changenet export` of the best checkpoint: onnx "
        "(best_model.onnx beside best_model.json; docker/slurm/fake backends) or none.")]
    # Score the training CSV too (one more inference job per iteration) so RCA can flag suspect TRAINING
    # labels, not only KPI ones; why on by default: loop/stages/model.py `score_training_rows`.
    score_training_rows: Annotated[Sourced[bool], Setting(
        True, "--score-training", "Score the training CSV too (one more inference job per iteration) so RCA "
        "flags suspect training labels.", off_flag="--no-score-training")]

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {**{name: {"value": s.default, "source": "default"} for name, s in SETTINGS.items()}, **data}
        return data

    @model_validator(mode="after")
    def _bounds(self) -> LoopConfig:
        for name, setting in SETTINGS.items():
            if (problem := _bound_error(setting, getattr(self, name).value)) is not None:
                raise UsageError(problem)
        return self

    @classmethod
    def checked(cls, data: dict[str, Any]) -> LoopConfig:
        """Validate, turning pydantic's errors into usage errors that name the flag (exit 2)."""
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise UsageError(_explain(exc, data)) from None
        validate_config(config)
        return config

    def job_timeout_s(self, rows: int, epochs: int = 1) -> float:
        """Seconds one backend job may run: `--stage-timeout` when given, else sized from the workload."""
        if self.stage_timeout.value is not None:
            return float(self.stage_timeout.value)
        return TIMEOUT_BASE_S + self.timeout_per_sample_epoch.value * max(rows, 1) * max(epochs, 1)

    @property
    def kpi_target(self) -> KpiTarget:
        return self.kpi.value

    def table(self) -> list[tuple[str, str, str]]:
        """(parameter, value, source) rows for the Pre-Flight Summary."""
        rows = []
        for name in type(self).model_fields:
            field = getattr(self, name)
            rows.append((name, "—" if field.value is None else str(field.value), field.source))
        return rows

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name).value for name in type(self).model_fields}


def _declared(model: type[BaseModel]) -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    for name, info in model.model_fields.items():
        found[name] = next(m for m in info.metadata if isinstance(m, Setting))
    return found


SETTINGS: dict[str, Setting] = _declared(LoopConfig)


def value_type(name: str) -> Any:
    """T of the field's Sourced[T] (e.g. int, str | None, Literal[...])."""
    sourced = LoopConfig.model_fields[name].annotation
    return sourced.model_fields["value"].annotation  # type: ignore[union-attr]


def literal_choices(name: str) -> tuple[str, ...]:
    kind = value_type(name)
    return choices(kind) if get_origin(kind) is Literal else ()


def _explain(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line per bad setting, naming its flag: "unknown encoder 'evil'; choose one of: builtin, siglip"."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        setting = SETTINGS.get(name)
        raw = data.get(name)
        given = raw.get("value") if isinstance(raw, dict) else getattr(raw, "value", raw)
        if setting is not None and (options := literal_choices(name)):
            label = setting.label or name.replace("_", " ")
            problems.append(f"unknown {label} {given!r}; choose one of: {', '.join(options)}")
        elif setting is not None:
            problems.append(f"{setting.flag}: {error['msg'].lower()}, got {given!r}")
        else:
            problems.append(f"{name}: {error['msg']}")
    return "; ".join(problems)


def resolve_config(flags: dict[str, Any], spec_values: dict[str, Any] | None = None) -> LoopConfig:
    """Flags (None = not given) beat the spec, which beats the defaults."""
    spec_values = spec_values or {}
    resolved: dict[str, dict[str, Any]] = {}
    for name, setting in SETTINGS.items():
        if flags.get(name) is not None:
            resolved[name] = {"value": flags[name], "source": "flag"}
        elif spec_values.get(name) is not None:
            resolved[name] = {"value": spec_values[name], "source": "spec"}
        else:
            resolved[name] = {"value": setting.default, "source": "default"}
    return LoopConfig.checked(resolved)


def check_engine_selection(engine: str, strategy: str, pool_share_pct: float | None,
                           max_pass_ratio: float | None) -> None:
    """THE rule: the Data Services engine mines with its own k-NN, so it takes no selection options (a strategy
    other than auto/knn, a pool share, a class-balance cap asked for). Checked on a run's config
    (validate_config) and on every mining call (mining.api.mine, `deft mine` included)."""
    if engine == "data_services" and (strategy not in ("auto", "knn") or pool_share_pct is not None
                                      or max_pass_ratio is not None):
        raise UsageError("--strategy, --pool-share and --max-pass-ratio apply to --mining-engine builtin; "
                         "Data Services mines with its own k-NN")


def validate_config(config: LoopConfig) -> None:
    """Checks across settings, shared by fresh runs and resumed ones (usage errors, exit 2). Types, choices
    and bounds are the declaration's (pydantic and `_bounds`)."""
    for size in (config.mining_memory.value, config.min_free_disk.value):
        if size is not None:
            parse_memory(size)
    ratio = config.max_pass_ratio.value if config.max_pass_ratio.source != "default" else None  # asked for
    check_engine_selection(config.mining_engine.value, config.strategy.value, config.pool_share_pct.value, ratio)
    # What each backend can run (Data Services needs containers, the GPU ask it can make) is runners/' to check:
    # runners.factory.check_settings, called where a config is resolved or read back.
