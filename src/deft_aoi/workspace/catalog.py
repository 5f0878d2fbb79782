"""The run catalog: the ONE place that names every artefact of a run (results/run_<TS>/, CONTRACTS §8).

Each artefact has a key (`<writer>.<what>`), a path, a format and the stage (or run step) that writes it.
A path is either relative to the run dir (`scope="run"`) or to the output dir of the stage that writes it
(`scope="stage"`); the stage dirs themselves are named here too (`STAGE_DIRS`), so a reader that knows a
stage's recorded `output_dir` finds any of its files without guessing. Stages declare the keys they read and
write; the engine hashes the declared files into `.stage.json` (loop/stage_contract.py).

Stdlib only and below analysis/ so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Format = Literal["csv", "parquet", "json", "jsonl", "html", "md", "txt", "yaml", "png", "svg", "checkpoint", "dir",
                 "lock", "onnx"]
Scope = Literal["run", "stage"]


@dataclass(frozen=True)
class Artefact:
    key: str
    path: str  # may hold {iteration} / {index} / {stage}; relative to the run dir or the stage dir
    format: Format
    writer: str  # a stage name, or a run step: start (deft run), engine, report
    scope: Scope = "stage"
    optional: bool = False  # written only in some cases (e.g. suspect labels when the check could run)
    doc: str = ""
    # Checked on resume: a committed stage is trusted only while it hashes as recorded. Logs are for people
    # (a crashed writer may leave a torn tail in them): hashed for the record, never a reason to refuse.
    checked: bool = True
    # A dir artefact: what its hash leaves out, as globs of a file's name or its path inside the dir (its logs).
    exclude: tuple[str, ...] = ()

    def name(self, **fields: object) -> str:
        return self.path.format(**fields) if fields else self.path

    def at(self, base: Path, **fields: object) -> Path:
        """The artefact's path under `base` (the run dir for run scope, the stage's own dir otherwise)."""
        name = self.name(**fields)
        return base if name == "." else base / name

    @property
    def basename(self) -> str:
        return Path(self.path).name


# Where each stage commits its outputs, relative to the run dir. `{stamp}` is the stage's start time
# (YYYYMMDD_HHMMSS), so a redone RCA or routing never overwrites an older one a user may be reading.
STAGE_DIRS: dict[str, str] = {
    "stage_synth": "synth_pool",
    "train": "{iteration}/train",
    "inference": "{iteration}/inference",
    "evaluate": "{iteration}/evaluate",
    "rca": "{iteration}/rca_results/{stamp}",
    "gate": "{iteration}/gate",
    "route": "{iteration}/routing_results/{stamp}",
    "ingest": "{iteration}/anomalygen",
    "mine": "{iteration}/mining_filter",
    "assemble": "{iteration}/dataset",
    "validate": "{iteration}/validation",
    "handoff": "handoff",
}


def stage_dir(stage: str, iteration: str, stamp: str = "") -> str:
    """The output dir of `stage` in `iteration`, relative to the run dir."""
    return STAGE_DIRS[stage].format(iteration=iteration, stamp=stamp)


# The train stage's inference candidates, in preference order on a KPI tie: lowest val_loss, latest, lowest
# validation FAR at 100 % recall (the KPI's own measure; issue 25). The evaluate stage picks the lowest KPI FAR.
CHECKPOINT_KINDS = ("best_val", "latest", "best_far")
CHECKPOINTS_DIR = "checkpoints"  # in the train stage's dir


def checkpoint_key(kind: str) -> str:
    """The catalog key of a checkpoint kind (`train.best_val`...)."""
    return f"train.{kind}"


def checkpoint_kind(key: str) -> str:
    """The checkpoint kind a catalog key names (`train.best_val` → `best_val`)."""
    kind = key.partition(".")[2]
    if checkpoint_key(kind) != key or kind not in CHECKPOINT_KINDS:
        raise KeyError(f"{key!r} is not a checkpoint of the run catalog")
    return kind


_ARTEFACTS: tuple[Artefact, ...] = (
    # -- the run itself ----------------------------------------------------------------------------------
    Artefact("run.config", "run_config.json", "json", "start", "run", doc="immutable start record (rebuild base)"),
    Artefact("run.state", "deft_state.json", "json", "engine", "run", doc="the state; StateStore writes it"),
    Artefact("run.log", "loop_log.jsonl", "jsonl", "engine", "run", doc="one `ok` line per committed stage"),
    Artefact("run.lock", ".deft.lock", "lock", "engine", "run", doc="fcntl lock of the loop running this run"),
    Artefact("run.scratch", ".scratch", "dir", "engine", "run", doc="stages write here until committed"),
    Artefact("run.pool_exclusions", "pool_exclusions.csv", "csv", "start", "run", optional=True,
             doc="pool rows pre-flight found leaking; the mine stage drops them"),
    Artefact("run.report", "DEFT_Loop_Report.html", "html", "report", "run", doc="rendered after every iteration"),
    Artefact("run.traceback", "errors/{iteration}_{stage}.traceback.txt", "txt", "engine", "run", optional=True,
             doc="an internal error's traceback (outside .scratch, which resume wipes)"),
    Artefact("stage.record", ".stage.json", "json", "engine", doc="the commit record, with declared hashes"),
    # -- stage_synth (in place: the staged rows name their own dir) --------------------------------------
    Artefact("stage_synth.manifest", "manifest.json", "json", "stage_synth", doc="what was staged, with hashes"),
    Artefact("stage_synth.source_pool", "source_pool.parquet", "parquet", "stage_synth",
             doc="mining pool + staged synthetic rows: the candidates every mine stage reads"),
    Artefact("stage_synth.source_pool_csv", "source_pool.csv", "csv", "stage_synth"),
    Artefact("stage_synth.sdg_rows", "sdg_rows.csv", "csv", "stage_synth", doc="the staged synthetic pairs"),
    # -- train / inference / evaluate / rca ------------------------------------------------------------
    Artefact("train.results", ".", "dir", "train", exclude=("*.log", f"{CHECKPOINTS_DIR}/*"),
             doc="TAO results_dir: checkpoints (model_epoch_<EEE>_step_<S>.pth), status.json, experiment.yaml "
                 "(the checkpoint links below are recorded on their own)"),
    # The inference candidates: each a relative link to the TAO checkpoint it names (two kinds may name one), so
    # the catalog names them although TAO names its files by epoch and step. `--baseline-checkpoint` links the
    # customer's file. A stage is handed the file the link names (artefacts.checkpoint_file).
    Artefact(checkpoint_key("best_val"), f"{CHECKPOINTS_DIR}/best_val.pth", "checkpoint", "train",
             doc="the saved epoch with the lowest val_loss"),
    Artefact(checkpoint_key("latest"), f"{CHECKPOINTS_DIR}/latest.pth", "checkpoint", "train",
             doc="the last saved epoch"),
    Artefact(checkpoint_key("best_far"), f"{CHECKPOINTS_DIR}/best_far.pth", "checkpoint", "train",
             doc="the saved epoch with the lowest val_far (FAR at recall 100 %, TAO 7.3.0; before: best_val's)"),
    Artefact("train.spec", "spec.yaml", "yaml", "train", optional=True, doc="the rendered training spec"),
    Artefact("train.log", "train.log", "txt", "train", optional=True, checked=False,
             doc="the job's log (its first line: argv)"),
    Artefact("inference.best_val", "best_val/inference.csv", "csv", "inference",
             doc="the KPI set + siamese_score of the best-validation checkpoint"),
    Artefact("inference.latest", "latest/inference.csv", "csv", "inference", optional=True,
             doc="the same for the latest checkpoint (absent when it is the best_val one)"),
    Artefact("inference.best_far", "best_far/inference.csv", "csv", "inference", optional=True,
             doc="the same for the lowest-validation-FAR checkpoint (absent when an earlier kind is it)"),
    Artefact("evaluate.metrics", "metrics.json", "json", "evaluate", doc="KpiReport of the chosen checkpoint"),
    Artefact("evaluate.sweep", "metrics.csv", "csv", "evaluate", doc="the threshold sweep"),
    Artefact("evaluate.confusion", "confusion.json", "json", "evaluate"),
    Artefact("evaluate.candidates", "candidates.json", "json", "evaluate", doc="KpiReport per checkpoint kind"),
    Artefact("evaluate.histogram", "score_histogram.svg", "svg", "evaluate"),
    Artefact("evaluate.far_recall", "far_vs_recall.svg", "svg", "evaluate"),
    Artefact("rca.kpi_gaps", "kpi_gaps.parquet", "parquet", "rca", doc="weak KPI images (Data Services shape)"),
    Artefact("rca.threshold", "threshold.txt", "txt", "rca"),
    Artefact("rca.metrics", "metrics.json", "json", "rca"),
    Artefact("rca.breakdown", "weak_samples_breakdown.txt", "txt", "rca"),
    Artefact("rca.unreachable", "unreachable_kpi.txt", "txt", "rca", optional=True,
             doc="why no threshold reaches the recall constraint"),
    Artefact("rca.suspects", "suspect_labels.parquet", "parquet", "rca", optional=True,
             doc="KPI and training rows whose label disagrees with the model and their neighbours"),
    Artefact("rca.training_scores", "training_scores/inference.csv", "csv", "rca", optional=True,
             doc="the training CSV scored by the chosen checkpoint (absent with --no-score-training)"),
    # -- route / ingest / mine / assemble / validate ---------------------------------------------------
    Artefact("route.mining_gaps", "mining_gaps.parquet", "parquet", "route"),
    Artefact("route.anomalygen_gaps", "anomalygen_gaps.parquet", "parquet", "route"),
    Artefact("route.summary", "routing_summary.txt", "txt", "route"),
    Artefact("ingest.summary", "ingest_summary.json", "json", "ingest"),
    # One rows artefact, written once by mining (mining/report.write_rows); the CSV is a view derived from it.
    Artefact("mine.rows", "mined.parquet", "parquet", "mine",
             doc="the mined rows: pool columns (ChangeNet + source, filepath) + similarity, matched_target"),
    Artefact("mine.pool_csv", "mining_pool.csv", "csv", "mine", doc="view of mine.rows: its ChangeNet columns"),
    Artefact("mine.validation", "merge_validation_mined.json", "json", "mine"),
    Artefact("mine.spec", "mining_spec.yaml", "yaml", "mine", optional=True,
             doc="the k-NN parameters and search figures (built-in engine)"),
    Artefact("mine.report", "Mining_Report.md", "md", "mine", optional=True,
             doc="counts, per-label breakdown and every file the built-in engine wrote"),
    Artefact("assemble.train_csv", "train_combined_iter{index}.csv", "csv", "assemble"),
    Artefact("assemble.provenance", "train_combined_iter{index}_provenance.csv", "csv", "assemble"),
    Artefact("assemble.finetune_csv", "train_finetune_iter{index}.csv", "csv", "assemble", optional=True,
             doc="the combined rows less those earlier gates set aside: what the train job reads (absent when "
                 "no gate set any aside)"),
    Artefact("validate.report", "merge_validation.json", "json", "validate"),
    # -- gate / handoff (written beside the run's other top-level files) -------------------------------
    Artefact("gate.summary", "{iteration}_summary.md", "md", "gate", "run", optional=True,
             doc="what the iteration did, for people (not for the baseline)"),
    Artefact("gate.excluded", "excluded_rows.parquet", "parquet", "gate", optional=True,
             doc="rows an iteration worse than the best so far added, left out of later fine-tunes "
                 "(ChangeNet columns + source, matched_target, target_label)"),
    Artefact("handoff.best_model", "best_model.json", "json", "handoff", "run"),
    Artefact("handoff.inference_spec", "best_model_inference_spec.yaml", "yaml", "handoff", "run"),
    Artefact("handoff.onnx", "best_model.onnx", "onnx", "handoff", "run", optional=True,
             doc="`visual_changenet export` of the best checkpoint (--export onnx)"),
    Artefact("handoff.export", "export", "dir", "handoff", optional=True, exclude=("*.log",),
             doc="the export job's results_dir: its status.json, experiment.yaml and log (--export onnx)"),
)

CATALOG: dict[str, Artefact] = {a.key: a for a in _ARTEFACTS}


CHECKPOINT_KEYS: tuple[str, ...] = tuple(checkpoint_key(kind) for kind in CHECKPOINT_KINDS)


def artefact(key: str) -> Artefact:
    try:
        return CATALOG[key]
    except KeyError:
        raise KeyError(f"{key!r} is not in the run catalog (workspace/catalog.py)") from None


def written_by(stage: str) -> tuple[Artefact, ...]:
    return tuple(a for a in _ARTEFACTS if a.writer == stage)


def name(key: str, **fields: object) -> str:
    """The file name of `key` (relative to its base), e.g. name("rca.kpi_gaps") == "kpi_gaps.parquet"."""
    return artefact(key).name(**fields)
