"""Job builders for the TAO containers: Visual ChangeNet train / inference / evaluate and Data Services
embedding / nearest-neighbour mining.

Each Visual ChangeNet builder renders `results_dir/spec.yaml` from the workspace's baseline spec, validates
it (tao_spec.validate_spec) and returns a Job whose argv is::

    visual_changenet train     -e <rd>/spec.yaml results_dir=<rd> train.results_dir=<rd>
                               train.num_epochs=<n> train.seed=<seed> [train.pretrained_model_path=<ckpt>]
    visual_changenet inference -e <rd>/spec.yaml results_dir=<rd> inference.results_dir=<rd>
                               inference.checkpoint=<ckpt>
    visual_changenet evaluate  -e <rd>/spec.yaml results_dir=<rd> evaluate.results_dir=<rd>
                               evaluate.checkpoint=<ckpt>

The spec file alone is complete (every override above is also written into it): dataset csv_path /
images_dir are absolute workspace paths, so any backend can run it. The overrides repeat the values that
matter when reading a log. Setting `<task>.results_dir` as well as `results_dir` makes TAO write straight
into `<rd>` (otherwise it appends `/<task>`). The seed goes to `train.seed` (TAO's own key) and to the
job's `DEFT_SEED` environment variable. Override values are plain `dotted.key=value`; a value with
characters outside `[A-Za-z0-9_./:+@%-]`, or one YAML would read as a non-string, is single-quoted
(Hydra's quoting); `command.parse_command` (THE parser of these command lines) undoes it.

The log file of a job is `<rd>/<task>.log`; the runner writes the command line as its first line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deft_aoi.dotted import get_dotted
from deft_aoi.errors import InputError, UsageError
from deft_aoi.runners.base import Job, Mount
from deft_aoi.runners.gpus import GPU_TASKS, GpuPlan
from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
from deft_aoi.runners.tao.command import ENTRYPOINT, parse_value
from deft_aoi.runners.tao.spec import render_spec, validate_spec, write_spec
from deft_aoi.workspace.layout import WorkspaceLayout

DATASET_KEYS = ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset")
SPEC_NAME = "spec.yaml"
DS_SPEC_DIR = "experiment_specs"  # Data Services aborts unless this dir exists in its working dir
# NVIDIA's guidance for TAO containers: an 8 GiB /dev/shm and NOT --ipc=host, which inherits the host's
# /dev/shm (64 MiB on many CI hosts) and ends in DataLoader bus errors mid-epoch (NVIDIA-TAO/tao-skill-bank
# skills/applications/tao-run-deft-aoi/references/visual-changenet.md @49672c2c).
SHM_SIZE = "8g"
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:+@%-]+$")


@dataclass
class TaoContext:
    workspace: WorkspaceLayout
    spec: ChangeNetSpec
    image: str
    env: Mapping[str, str]
    gpus: int | str = "all"
    user: str | None = None
    batch_size: int | None = None
    timeout_s: float | None = None
    seed: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_plan: GpuPlan | None = None  # the runner's (Runner.gpu_plan): TAO's num_gpus / gpu_ids in every spec


@dataclass
class DataServicesContext:
    workspace: WorkspaceLayout
    image: str
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: int | str = "all"
    timeout_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- overrides


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        mantissa, e, exponent = repr(value).partition("e")
        # YAML 1.1 reads 1e-05 as a string; 1.0e-05 is a float
        return (mantissa if "." in mantissa else mantissa + ".0") + (e + exponent if e else "")
    text = str(value)
    if not isinstance(value, str) or (_SAFE_VALUE.match(text) and parse_value(text) == text):
        return text
    # a string that would read back as something else ("true", "3", "-", "a b") is quoted
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_overrides(overrides: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(f"{key}={format_value(value)}" for key, value in overrides.items())


# ---------------------------------------------------------------- Visual ChangeNet


def _abs(workspace: WorkspaceLayout, value: Any) -> Any:
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    return os.path.normpath(str(workspace.root / value))


def workspace_datasets(ws: WorkspaceLayout) -> dict[str, tuple[Path, Path]]:
    """The loop's four datasets (CONTRACTS §1): the workspace layout, not the spec, says where they are, so a
    spec written for other mounts (NVIDIA's DEFT template points at /data/...) still runs here."""
    return {"train_dataset": (ws.train_csv, ws.kpi_images), "validation_dataset": (ws.validation_csv, ws.kpi_images),
            "test_dataset": (ws.validation_csv, ws.kpi_images), "infer_dataset": (ws.kpi_csv, ws.kpi_images)}


def self_contained_overrides(ctx: TaoContext, results_dir: Path) -> dict[str, Any]:
    """Make the baseline spec self-contained: absolute dataset paths, no stale results dirs."""
    ws = ctx.workspace
    out: dict[str, Any] = {}
    for ds, (csv, images) in workspace_datasets(ws).items():
        out.update(_dataset(ds, csv, images))
    for dotted in ("model.backbone.pretrained_backbone_path", "train.pretrained_model_path"):
        value = ctx.spec.get(dotted)
        if value:
            out[dotted] = _abs(ws, value)
    # TAO resumes from any checkpoint in results_dir by itself; an explicit resume path from the
    # baseline would point into another run.
    out["train.resume_training_checkpoint_path"] = None
    for task in ("train", "inference", "evaluate"):
        if ctx.spec.get(f"{task}.results_dir") is not None:
            out[f"{task}.results_dir"] = None
    if ctx.batch_size is not None:
        out["dataset.classify.batch_size"] = int(ctx.batch_size)
    if ctx.gpu_plan is not None:  # every task's keys: one spec file per job, but the same GPUs for every task
        for task in GPU_TASKS:
            out.update(ctx.gpu_plan.tao_overrides(task))
    out["results_dir"] = str(results_dir)
    return out


def _user(ctx_user: str | None) -> str | None:
    if ctx_user is not None:
        return ctx_user
    if hasattr(os, "getuid"):
        return f"{os.getuid()}:{os.getgid()}"
    return None


def user_env(workspace: WorkspaceLayout) -> dict[str, str]:
    """HOME and USER for a job run as `--user uid:gid`: that uid has no passwd entry in the image, so HOME would
    be `/` (not writable) and USER unset, which breaks whatever caches under ~ or asks getpass (transformers,
    torch hub, matplotlib). HOME is a folder of the workspace, the only place the container can write."""
    import getpass

    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER on the host either
        name = "deft"
    return {"HOME": str(workspace.tao_home), "USER": name}


def _changenet_job(ctx: TaoContext, task: str, results_dir: Path, overrides: dict[str, Any],
                   argv_keys: Sequence[str]) -> Job:
    results_dir = Path(results_dir).absolute()
    everything = {**self_contained_overrides(ctx, results_dir), f"{task}.results_dir": str(results_dir), **overrides}
    doc = render_spec(ctx.spec, everything)
    spec_path = results_dir / SPEC_NAME
    validate_spec(doc, ctx.workspace.root, source=spec_path, image=ctx.image)
    results_dir.mkdir(parents=True, exist_ok=True)
    write_spec(doc, spec_path)
    shown = {"results_dir": str(results_dir), f"{task}.results_dir": str(results_dir)}
    shown.update({key: get_dotted(doc, key) for key in argv_keys if get_dotted(doc, key) is not None})
    env = {**dict(ctx.env), "DEFT_SEED": str(ctx.seed)}
    user = _user(ctx.user)
    if user is not None:
        env.update(user_env(ctx.workspace))
        ctx.workspace.tao_home.mkdir(parents=True, exist_ok=True)
    return Job(
        name=f"{ENTRYPOINT} {task}",
        image=ctx.image,
        argv=(ENTRYPOINT, task, "-e", str(spec_path), *format_overrides(shown)),
        log_file=results_dir / f"{task}.log",
        workdir=ctx.workspace.root,
        mounts=(Mount(ctx.workspace.root, ctx.workspace.root),),
        env=env,
        gpus=ctx.gpus,
        user=user,
        timeout_s=ctx.timeout_s,
        shm_size=SHM_SIZE,
        labels=dict(ctx.labels),
    )


def _dataset(prefix: str, csv: Path, images: Path) -> dict[str, Any]:
    return {f"dataset.classify.{prefix}.csv_path": str(Path(csv).absolute()),
            f"dataset.classify.{prefix}.images_dir": str(Path(images).absolute())}


def train_job(ctx: TaoContext, *, results_dir: Path, train_csv: Path, train_images_dir: Path, val_csv: Path,
              val_images_dir: Path, num_epochs: int, pretrained_checkpoint: Path | None) -> Job:
    """Train (or fine-tune from `pretrained_checkpoint`) into `results_dir`."""
    overrides: dict[str, Any] = {
        **_dataset("train_dataset", train_csv, train_images_dir),
        **_dataset("validation_dataset", val_csv, val_images_dir),
        "train.num_epochs": int(num_epochs),
        "train.seed": int(ctx.seed),
    }
    if pretrained_checkpoint is not None:
        overrides["train.pretrained_model_path"] = str(Path(pretrained_checkpoint).absolute())
    # TAO asserts interval ≤ num_epochs: a shorter run than the spec's (--epochs) lowers the intervals with it.
    if ctx.spec.get("train.checkpoint_interval_unit", "epoch") == "epoch":
        for key in ("train.checkpoint_interval", "train.validation_interval"):
            interval = ctx.spec.get(key)
            if isinstance(interval, int) and interval > int(num_epochs):
                overrides[key] = int(num_epochs)
    return _changenet_job(ctx, "train", results_dir, overrides,
                          ("train.num_epochs", "train.seed", "train.pretrained_model_path"))


def inference_job(ctx: TaoContext, *, results_dir: Path, checkpoint: Path, infer_csv: Path,
                  infer_images_dir: Path) -> Job:
    """Score `infer_csv` with `checkpoint`; TAO writes `results_dir/inference.csv`."""
    overrides = {**_dataset("infer_dataset", infer_csv, infer_images_dir),
                 "inference.checkpoint": str(Path(checkpoint).absolute())}
    return _changenet_job(ctx, "inference", results_dir, overrides, ("inference.checkpoint",))


def evaluate_job(ctx: TaoContext, *, results_dir: Path, checkpoint: Path, test_csv: Path,
                 test_images_dir: Path) -> Job:
    overrides = {**_dataset("test_dataset", test_csv, test_images_dir),
                 "evaluate.checkpoint": str(Path(checkpoint).absolute())}
    return _changenet_job(ctx, "evaluate", results_dir, overrides, ("evaluate.checkpoint",))


def export_input_shape(spec: ChangeNetSpec) -> tuple[int, int]:
    """(height, width) of ONE side of the model's input as TAO's dataloader builds it, which `visual_changenet
    export` traces with a dummy tensor of `export.input_height` x `export.input_width`: linear concat stacks the
    lights along the height (oi_dataset.py torch.cat(..., 1)), grid tiles them grid_map.y x grid_map.x."""
    height, width = spec.image_height, spec.image_width
    concat = spec.get("dataset.classify.concat_type", "linear")
    if concat == "grid":
        grid = spec.get("dataset.classify.grid_map") or {}
        return height * int(grid.get("y", 1)), width * int(grid.get("x", 1))
    return height * len(spec.lights), width


def export_job(ctx: TaoContext, *, results_dir: Path, checkpoint: Path, onnx_file: Path) -> Job:
    """`visual_changenet export` of `checkpoint` to `onnx_file` (tao-pytorch 7.x scripts/export.py: reads
    export.checkpoint, export.onnx_file, export.input_height/width; batch_size -1 = a dynamic batch axis; inputs
    `input_1` (test) and `input_2` (golden), output `output`)."""
    height, width = export_input_shape(ctx.spec)
    # export.on_cpu: tracing a classifier once needs no GPU, the ONNX file is the same either way, and a GPU
    # box's export then does not wait for (or contend with) a device; it is also what lets NVIDIA's export.py
    # run on the real-TAO tier's CPU (its map_location / model.cuda() follow on_cpu).
    overrides = {"export.checkpoint": str(Path(checkpoint).absolute()),
                 "export.onnx_file": str(Path(onnx_file).absolute()),
                 "export.input_height": height, "export.input_width": width, "export.on_cpu": True}
    return _changenet_job(ctx, "export", results_dir, overrides, ("export.checkpoint", "export.onnx_file"))


# ---------------------------------------------------------------- Data Services


def _ds_job(ctx: DataServicesContext, words: tuple[str, str], results_dir: Path, spec_name: str,
            spec: dict[str, Any], overrides: dict[str, Any]) -> Job:
    results_dir = Path(results_dir).absolute()
    root = os.path.normpath(str(ctx.workspace.root))
    for key, value in overrides.items():
        path = os.path.normpath(str(value))
        if os.path.commonpath([root, path]) != root:
            raise InputError(f"{' '.join(words)}: {key} = {value} is outside the workspace {root}")
    spec_path = results_dir / DS_SPEC_DIR / spec_name
    write_spec({**spec, **overrides}, spec_path)
    ctx.workspace.hf_home.mkdir(parents=True, exist_ok=True)
    return Job(
        name=" ".join(words),
        image=ctx.image,
        argv=(*words, "-e", str(spec_path), *format_overrides(overrides)),
        log_file=results_dir / f"{words[0]}.log",
        workdir=results_dir,
        mounts=(Mount(ctx.workspace.root, ctx.workspace.root),),
        # SigLIP/CLIP weights are fetched into HF_HOME: inside the workspace, once, not on every job.
        env={"HF_HOME": str(ctx.workspace.hf_home), **dict(ctx.env)},
        gpus=ctx.gpus,
        # Data Services fails at start-up under --user (getpwuid); the runner fixes ownership afterwards.
        user=None,
        timeout_s=ctx.timeout_s,
        shm_size=SHM_SIZE,
        labels=dict(ctx.labels),
        writes=tuple(Path(str(v)) for k, v in overrides.items() if k.startswith("output")),
    )


# The Hugging Face model each Data Services `model` loads by default (NVIDIA's mining recipe: SigLIP base).
DS_MODEL_PATHS: dict[str, str] = {"SigLIP": "google/siglip-base-patch16-224", "CLIP": "openai/clip-vit-base-patch32"}


def embedding_job(ctx: DataServicesContext, *, results_dir: Path, input_parquet: Path, output_parquet: Path,
                  model: str = "SigLIP", model_path: str | None = None, model_config_path: str | None = None,
                  batch_size: int = 64) -> Job:
    """`embedding image_embeddings`: one embedding per `filepath` row of `input_parquet`. `model_path` a TAO
    checkpoint (.pth/.ckpt) needs its train spec as `model_config_path` (tao_rules.embedding_checkpoint_rule)."""
    from deft_aoi.runners.tao import rules as tao_rules

    # An unknown `model` gets SigLIP's path: Data Services itself names the misspelling (embedding_model_rule).
    path = model_path or DS_MODEL_PATHS.get(model, DS_MODEL_PATHS["SigLIP"])
    bad = tao_rules.failures([tao_rules.embedding_checkpoint_rule(path, model_config_path)])
    if bad:  # refused before a container starts: Data Services would fail only after loading
        raise UsageError(f"{bad[0].message} [TAO rule: {bad[0].rule}; {bad[0].source}]")
    spec: dict[str, Any] = {"model": model, "model_path": path, "batch_size": int(batch_size)}
    if model_config_path:
        spec["model_config_path"] = str(Path(model_config_path).absolute())
    return _ds_job(ctx, ("embedding", "image_embeddings"), results_dir, "image_embeddings.yaml", spec,
                   {"input_parquet": str(Path(input_parquet).absolute()),
                    "output_parquet": str(Path(output_parquet).absolute())})


def nearest_neighbors_job(ctx: DataServicesContext, *, results_dir: Path, source_parquet: Path,
                          target_parquet: Path, output_parquet: Path, topn: int = 5, knn_metric: str = "cosine",
                          filter_by_label: bool = False, source_rows: int | None = None) -> Job:
    """`tmm nearest_neighbors`: the `topn` nearest source rows per target, de-duplicated. `source_rows` (the pool
    size) caps topn: cuML's NearestNeighbors refuses more neighbours than the index holds."""
    if source_rows is not None and source_rows >= 1:
        topn = min(int(topn), int(source_rows))
    # TAO's schema types filter_by_label as a string ("true"/"false"), not a YAML boolean.
    spec = {"topn": int(topn), "knn_metric": knn_metric, "filter_by_label": "true" if filter_by_label else "false"}
    return _ds_job(ctx, ("tmm", "nearest_neighbors"), results_dir, "nearest_neighbors.yaml", spec,
                   {"source_parquet": str(Path(source_parquet).absolute()),
                    "target_parquet": str(Path(target_parquet).absolute()),
                    "output_parquet": str(Path(output_parquet).absolute())})
