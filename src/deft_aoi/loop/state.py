"""The schema of `deft_state.json` (CONTRACTS §8). Plain data: the StateStore is its only writer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    field_validator,
    model_serializer,
    model_validator,
)

from deft_aoi.config import KpiTarget, LoopConfig, Sourced
from deft_aoi.loop.results import LEGACY_CHECKPOINTS, IterationValues, known_counts, recorded_checkpoints
from deft_aoi.mining.params import MineConfig
from deft_aoi.runners.factory import capabilities
from deft_aoi.workspace.catalog import checkpoint_key, name, stage_dir
from deft_aoi.workspace.iterations import BASELINE, iteration_index

STATE_VERSION = 1

IterationStatus = Literal["pending", "in_progress", "complete", "failed", "interrupted"]
RunStatus = Literal["running", "finished", "failed", "interrupted"]
StageStatus = Literal["in_progress", "complete", "failed", "interrupted"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ArtefactRecord(BaseModel):
    """One declared input or output of a committed stage (a run-catalog key's file), as it was at commit."""

    path: str  # relative to the run dir
    sha256: str  # a file's content hash; a dir's hash of its sorted (path, size, sha256) list
    size: int | None = None  # bytes (a dir: all its files); None for hashes migrated from older runs


class StageRecord(BaseModel):
    status: StageStatus
    started_at: str
    ended_at: str | None = None
    duration_sec: float | None = None
    summary: str = ""
    output_dir: str | None = None  # relative to the run dir
    # Run-catalog key → the file as committed. The ONLY place a stage's files are recorded: values the loop
    # reads back (FAR, checkpoints, the gate's decision...) are typed IterationState fields.
    inputs: dict[str, ArtefactRecord] = Field(default_factory=dict)
    outputs: dict[str, ArtefactRecord] = Field(default_factory=dict)
    error: str | None = None
    # Handles of the backend jobs this stage submitted (runners/jobs.JobHandle.to_dict), each written BEFORE
    # deft waits on it: a resumed deft re-attaches to a job still running or finished while it was away.
    jobs: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("outputs", mode="before")
    @classmethod
    def _legacy_outputs(cls, value: Any) -> Any:
        """Older versions kept free-form values here (paths, the gate's decision, a manifest hash). Paths are
        now found through the run catalog and values are typed fields (`legacy_updates`); the one hash they
        recorded, the staged synthetic pool's manifest, becomes its declared output so resume still checks it."""
        if not isinstance(value, dict):
            return value
        kept = {k: v for k, v in value.items() if isinstance(v, dict) and "path" in v and "sha256" in v}
        digest = value.get("manifest_sha256")
        if isinstance(digest, str) and "stage_synth.manifest" not in kept:
            path = f"{stage_dir('stage_synth', BASELINE)}/{name('stage_synth.manifest')}"
            kept["stage_synth.manifest"] = {"path": path, "sha256": digest}
        return kept


def legacy_updates(stage: str, outputs: Any) -> dict[str, Any]:
    """IterationState values that state files and stage records of older versions kept in a stage's
    `outputs` instead of typed fields (read once, on load)."""
    if not isinstance(outputs, dict):
        return {}
    if stage == "gate" and isinstance(outputs.get("decision"), str):
        return {"decision": outputs["decision"]}
    if stage == "rca" and "unreachable" in outputs:
        return {"kpi_unreachable": bool(outputs["unreachable"])}
    return {}


class IterationState(IterationValues):
    """One iteration: the engine's bookkeeping + the values its stages set (IterationValues, declared there once)."""

    # Unlike a stage's values, a state file may carry fields of older versions: read, and dropped.
    model_config = ConfigDict(extra="ignore")

    name: str  # baseline | iterN (workspace/iterations.py)
    index: int  # 0 for baseline
    status: IterationStatus = "pending"
    stage_completed: str | None = None
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    duration_sec: float = 0.0
    # Checkpoint paths (kind → path) of a train stage committed before checkpoints were catalog artefacts: an
    # older run resumed reads them (artefacts.checkpoint). Empty, and not written, for a run started since.
    recorded_checkpoints: dict[str, str] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _no_empty_legacy(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.recorded_checkpoints:
            data.pop("recorded_checkpoints", None)
        return data

    def best_ckpt_path(self, results_dir: str) -> str | None:
        """CONTRACTS §8's `best_ckpt_path`, from the state alone: where the catalog's artefact of the chosen
        checkpoint kind is under the committed train dir (a link to TAO's file), or the path an older run
        recorded; None before the evaluate stage chose."""
        kind = self.chosen_checkpoint
        if kind is None:
            return None
        if self.recorded_checkpoints:
            return self.recorded_checkpoints.get(kind)
        train = self.stages.get("train")
        if train is None or train.status != "complete" or train.output_dir is None:
            return None
        return str(Path(results_dir) / train.output_dir / name(checkpoint_key(kind)))

    @model_validator(mode="before")
    @classmethod
    def _legacy_values(cls, data: Any) -> Any:
        """States written before values left `StageRecord.outputs`: lift them into their fields. Fields that
        were written and never read (rca_gaps_parquet, rca_threshold, routing_*_gaps, train_csv) are dropped
        by pydantic as unknown keys, and so is `best_ckpt_path` (a view, RunState._views); counts no stage
        writes any more are dropped (results.known_counts); checkpoint paths of older train stages are kept
        in `recorded_checkpoints`."""
        if isinstance(data, dict) and isinstance(data.get("counts"), dict):
            data = {**data, "counts": known_counts(data["counts"])}
        if isinstance(data, dict) and LEGACY_CHECKPOINTS in data and "recorded_checkpoints" not in data:
            data = {**data, "recorded_checkpoints": recorded_checkpoints(data) or {}}
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            return data
        lifted: dict[str, Any] = {}
        for stage, rec in data["stages"].items():
            if isinstance(rec, dict):
                lifted.update(legacy_updates(stage, rec.get("outputs")))
        return {**lifted, **data} if lifted else data


class MiningFilterConfig(BaseModel):
    """The run's mining filter as CONTRACTS §8 names it in deft_state.json: a view of the settings, resolved for
    the run (mining.params.MineConfig.from_loop_config)."""

    top_k_per_target: int
    metric: str = "cosine"
    min_similarity: float
    strategy: str = "knn"  # `mining.strategy` (mining/strategy.py)
    pool_share_pct: float | None = None
    max_pass_ratio: float | None = None


# The copies records kept before the settings were the record (CONTRACTS §8 still names them in the file, now
# written as views of `settings`): read back into the settings of a record that has none.
_COPIED = ("backend", "batch_size", "num_epochs", "seed", "top_k_per_label", "mining_engine", "finetune_from")


class RunConfigRecord(BaseModel):
    """A run's start record: the workspace's files, the training container, pre-flight's pool hygiene, and the
    run's typed config (`settings`, each value with its source). The parameters CONTRACTS §8 lists (backend,
    num_gpus, batch_size, num_epochs, mining_filter, …) are written as computed views of `settings`, never
    stored beside it: one copy, which resume reads back as is."""

    specs_file: str
    train_csv: str
    validation_csv: str
    kpi_csv: str
    images_dir: str
    train_container: str
    # Pre-flight pool hygiene: thresholds, near-duplicate encoder, counts by source and kind, exclusion list.
    pool_hygiene: dict[str, Any] | None = None
    settings: LoopConfig = Field(default_factory=lambda: LoopConfig.model_validate({}))

    @model_validator(mode="before")
    @classmethod
    def _from_older_records(cls, data: Any) -> Any:
        """Runs recorded before `settings` kept the Pre-Flight Summary's text rows (name, value, source);
        LoopConfig's field types read them back ("—" is how the table shows None). A record with neither
        (or built with the copies only) takes the copies as its settings (source `state`)."""
        if not isinstance(data, dict) or "settings" in data:
            return data
        data = dict(data)
        if "parameters" in data:
            rows = data.pop("parameters")
            data["settings"] = {name: {"value": None if value == "—" else value, "source": source}
                                for name, value, source in rows if name in LoopConfig.model_fields}
            return data
        copies: dict[str, Any] = {k: data[k] for k in _COPIED if data.get(k) is not None}
        mining = data.get("mining_filter")
        if isinstance(mining, MiningFilterConfig):
            mining = mining.model_dump()
        if isinstance(mining, dict):
            copies.update({k: mining[k] for k in ("top_k_per_target", "min_similarity", "strategy",
                                                  "pool_share_pct", "max_pass_ratio") if mining.get(k) is not None})
        if data.get("encoder") is not None:
            copies["encoder"] = data["encoder"]
        data["settings"] = {k: {"value": v, "source": "state"} for k, v in copies.items()}
        return data

    @property
    def mining(self) -> MineConfig:
        """The run's mining parameters, `auto` encoder and strategy resolved for it."""
        return MineConfig.from_loop_config(self.settings)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def backend(self) -> str:
        return str(self.settings.backend.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def num_gpus(self) -> int | str:
        gpus: str | None = self.settings.gpus.value
        return gpus if gpus is not None else capabilities(self.backend).default_gpus

    @computed_field  # type: ignore[prop-decorator]
    @property
    def batch_size(self) -> int:
        return int(self.settings.batch_size.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def num_epochs(self) -> int:
        return int(self.settings.num_epochs.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def seed(self) -> int:
        return int(self.settings.seed.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def top_k_per_label(self) -> int:
        return int(self.settings.top_k_per_label.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mining_engine(self) -> str:
        return str(self.settings.mining_engine.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def encoder(self) -> str:
        return self.mining.encoder

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mining_filter(self) -> MiningFilterConfig:
        mining = self.mining
        return MiningFilterConfig(top_k_per_target=mining.top_k_per_target, min_similarity=mining.min_similarity,
                                  strategy=mining.selection_strategy, pool_share_pct=mining.pool_share_pct,
                                  max_pass_ratio=mining.max_pass_ratio)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def finetune_from(self) -> str:
        return str(self.settings.finetune_from.value)

    @property
    def parameters(self) -> list[tuple[str, str, str]]:
        """(name, value, source) rows, as the Pre-Flight Summary showed them."""
        return self.settings.table()


class Failure(BaseModel):
    kind: str
    message: str
    stage: str | None = None
    iteration: str | None = None
    hard_stop: bool = False
    fix: str | None = None


class RunState(BaseModel):
    version: int = STATE_VERSION
    run_id: str
    started_at: str
    updated_at: str = Field(default_factory=utc_now)
    workspace: str
    results_dir: str
    current_iteration: int = 0
    status: RunStatus = "running"
    stop_reason: str | None = None
    best_iteration: str | None = None
    config: RunConfigRecord
    input_hashes: dict[str, str] = Field(default_factory=dict)
    preflight: list[dict[str, str]] = Field(default_factory=list)
    iterations: dict[str, IterationState] = Field(default_factory=dict)
    failure: Failure | None = None
    finished_at: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_copy(cls, data: Any) -> Any:
        """`kpi_target` and `max_iterations` are views of the config's settings (written for CONTRACTS §8's
        readers). A state written before that, or built with them, sets those two settings from them."""
        if not isinstance(data, dict) or not {"kpi_target", "max_iterations"} & set(data) or "config" not in data:
            return data
        data = dict(data)
        given = {"kpi": data.pop("kpi_target", None), "max_iterations": data.pop("max_iterations", None)}
        record = data["config"]
        if not isinstance(record, RunConfigRecord):
            record = RunConfigRecord.model_validate(record)
        settings = record.settings
        updates: dict[str, Sourced[Any]] = {}
        for setting, value in given.items():
            if value is None:
                continue
            current: Sourced[Any] = getattr(settings, setting)
            typed = KpiTarget.model_validate(value) if setting == "kpi" else int(value)
            if typed != current.value:
                updates[setting] = Sourced(value=typed, source=current.source)
        if updates:
            record = record.model_copy(update={"settings": settings.model_copy(update=updates)})
        data["config"] = record
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kpi_target(self) -> str:
        return self.config.settings.kpi.value.text

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_iterations(self) -> int:
        value: int = self.config.settings.max_iterations.value
        return value

    @property
    def kpi(self) -> KpiTarget:
        """The KPI target, typed (the report and status read this, never the text)."""
        target: KpiTarget = self.config.settings.kpi.value
        return target

    @model_serializer(mode="wrap")
    def _views(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Each iteration's `best_ckpt_path` (CONTRACTS §8) written from the catalog, never stored beside it."""
        data: dict[str, Any] = handler(self)
        for it_name, it in self.iterations.items():
            if isinstance(data.get("iterations"), dict) and isinstance(data["iterations"].get(it_name), dict):
                data["iterations"][it_name]["best_ckpt_path"] = it.best_ckpt_path(self.results_dir)
        return data

    def iteration(self, name: str) -> IterationState:
        if name not in self.iterations:
            self.iterations[name] = IterationState(name=name, index=iteration_index(name))
        return self.iterations[name]

    def ordered_iterations(self) -> list[IterationState]:
        return sorted(self.iterations.values(), key=lambda it: it.index)


class LogEntry(BaseModel):
    seq: int
    ts: str
    iter: str
    stage: str
    status: Literal["ok", "error"]
    summary: str
    duration_sec: float
