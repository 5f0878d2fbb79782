"""The spec keys the local backend reads, typed (`TaskConfig`).

Stages build `visual_changenet <task> -e <spec.yaml> key=value ...` for every backend; the local runner parses
it with THE TAO command-line parser (`runners/tao/command.py`, which also owns the results_dir rule), so a job
means the same thing whichever backend runs it. Pure functions: the only file read is the spec itself, in
`load_task_config`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deft_aoi.dotted import get_dotted
from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import parse_spec
from deft_aoi.runners.tao.command import ChangeNetCommand, ChangeNetTask, changenet_command, parse_command

DEFAULT_EPOCHS = 20
DEFAULT_LR = 1e-3


class DatasetRef(BaseModel):
    """One `dataset.classify.<name>_dataset` entry, with paths resolved against the job's workdir."""

    model_config = ConfigDict(frozen=True)

    name: str
    csv_path: Path
    images_dir: Path


class TaskConfig(BaseModel):
    """Everything the local backend reads from a spec, resolved and typed."""

    model_config = ConfigDict(frozen=True)

    task: ChangeNetTask
    spec_path: Path
    raw: dict[str, Any]
    results_dir: Path
    lights: tuple[str, ...]
    image_ext: str
    image_width: int
    image_height: int
    batch_size: int
    workers: int
    num_epochs: int
    checkpoint_interval: int
    validation_interval: int
    lr: float
    cls_weight: tuple[float, float]
    augment: bool
    seed: int
    pretrained_model_path: Path | None
    checkpoint: Path | None
    datasets: dict[str, DatasetRef]

    def dataset(self, name: str) -> DatasetRef:
        if name not in self.datasets:
            raise InputError(
                f"spec has no dataset.classify.{name}_dataset (csv_path + images_dir) for the {self.task} task",
                file=self.spec_path,
            )
        return self.datasets[name]


def get(raw: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """Like get_dotted, but an explicit YAML `null` also falls back to the default."""
    value = get_dotted(raw, dotted)
    return default if value is None else value


def resolve_path(value: Any, workdir: Path) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else workdir / path


def _as_int(raw: dict[str, Any], key: str, default: int, spec: Path, *, minimum: int = 1) -> int:
    value = get(raw, key, default)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{key} must be an integer, found {value!r}", file=spec) from exc
    if number < minimum:
        raise InputError(f"{key} must be ≥ {minimum}, found {number}", file=spec)
    return number


def _augment_enabled(raw: dict[str, Any]) -> bool:
    """TAO keeps the switch in `dataset.classify.augmentation_config.augment`; a plain boolean
    `dataset.classify.augmentation` (or a mapping with `enable`) is accepted too."""
    config = get(raw, "dataset.classify.augmentation_config")
    if isinstance(config, dict) and "augment" in config:
        return bool(config["augment"])
    plain = get(raw, "dataset.classify.augmentation", get(raw, "augmentation"))
    if isinstance(plain, dict):
        return bool(plain.get("enable", plain.get("augment", False)))
    return bool(plain)


def build_task_config(job: ChangeNetCommand, *, workdir: Path, env_seed: str | None = None) -> TaskConfig:
    """Read every key the local backend uses from the job's resolved spec (overrides applied)."""
    spec_path = resolve_path(job.command.spec_path, workdir)
    raw = job.resolved
    task = job.task

    # The keys every reader of the spec shares (lights, image_ext, sizes, epochs, lr, cls_weight) are read once,
    # by changenet_spec.parse_spec; this module adds only what the local backend alone reads.
    spec = parse_spec(job.doc, spec_path)

    seed_value = get(raw, "train.seed")
    if seed_value is None:
        seed_value = env_seed if env_seed not in (None, "") else 0
    try:
        seed = int(seed_value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"seed must be an integer, found {seed_value!r}", file=spec_path) from exc

    datasets: dict[str, DatasetRef] = {}
    for name in ("train", "validation", "test", "infer"):
        entry = get(raw, f"dataset.classify.{name}_dataset")
        if isinstance(entry, dict) and entry.get("csv_path") and entry.get("images_dir"):
            datasets[name] = DatasetRef(
                name=name,
                csv_path=resolve_path(entry["csv_path"], workdir),
                images_dir=resolve_path(entry["images_dir"], workdir),
            )

    pretrained = get(raw, "train.pretrained_model_path")
    checkpoint = get(raw, f"{task}.checkpoint") if task in ("inference", "evaluate") else None
    return TaskConfig(
        task=task,
        spec_path=spec_path,
        raw=raw,
        results_dir=resolve_path(job.results_dir, workdir),
        lights=spec.lights,
        image_ext=spec.image_ext,
        image_width=spec.image_width,
        image_height=spec.image_height,
        batch_size=spec.batch_size,
        workers=_as_int(raw, "dataset.classify.workers", 2, spec_path, minimum=0),
        num_epochs=spec.num_epochs or DEFAULT_EPOCHS,
        checkpoint_interval=_as_int(raw, "train.checkpoint_interval", 1, spec_path),
        validation_interval=_as_int(
            raw, "train.validation_interval", int(get(raw, "train.val_interval", 1)), spec_path
        ),
        lr=spec.learning_rate if spec.learning_rate is not None else DEFAULT_LR,
        cls_weight=spec.cls_weight or (1.0, 1.0),
        augment=_augment_enabled(raw),
        seed=seed,
        pretrained_model_path=resolve_path(pretrained, workdir) if pretrained else None,
        checkpoint=resolve_path(checkpoint, workdir) if checkpoint else None,
        datasets=datasets,
    )


def load_task_config(argv: Sequence[str], *, workdir: Path, env_seed: str | None = None) -> TaskConfig:
    """Parse argv, read the spec it names, and resolve it (the one file read of this module)."""
    from deft_aoi.runners.tao.changenet_spec import load_spec_document

    doc = load_spec_document(resolve_path(parse_command(argv).spec_path, workdir))
    return build_task_config(changenet_command(argv, doc), workdir=workdir, env_seed=env_seed)
