"""The TAO command line the local backend accepts, and the spec it resolves to.

Stages build `visual_changenet <task> -e <spec.yaml> key=value ...` for every backend; the local runner
parses the same argv so a job means the same thing whichever backend runs it. Pure functions: the only
file read is the spec itself, in `load_task_config`.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from deft_aoi.dotted import get_dotted, set_dotted
from deft_aoi.errors import InputError, UsageError

Task = Literal["train", "inference", "evaluate"]
TASKS: tuple[str, ...] = ("train", "inference", "evaluate")
ENTRYPOINT = "visual_changenet"
DEFAULT_EPOCHS = 20
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ParsedArgv(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: Task
    spec_path: str
    overrides: tuple[tuple[str, Any], ...]


class DatasetRef(BaseModel):
    """One `dataset.classify.<name>_dataset` entry, with paths resolved against the job's workdir."""

    model_config = ConfigDict(frozen=True)

    name: str
    csv_path: Path
    images_dir: Path


class TaskConfig(BaseModel):
    """Everything the local backend reads from a spec, resolved and typed."""

    model_config = ConfigDict(frozen=True)

    task: Task
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


def parse_argv(argv: tuple[str, ...] | list[str]) -> ParsedArgv:
    """`visual_changenet <task> -e <spec> [key=value ...]` → task, spec path and ordered overrides."""
    args = list(argv)
    if args and Path(args[0]).name == ENTRYPOINT:
        args = args[1:]
    if not args or args[0] not in TASKS:
        got = args[0] if args else "nothing"
        raise UsageError(f"local backend: expected a task ({', '.join(TASKS)}) after {ENTRYPOINT}, got {got!r}")
    task = args.pop(0)
    spec_path: str | None = None
    overrides: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-e", "--experiment_spec_file", "--experiment-spec-file"):
            if i + 1 >= len(args):
                raise UsageError(f"local backend: {arg} needs a spec file path")
            spec_path = args[i + 1]
            i += 2
            continue
        if arg.startswith("-e="):
            spec_path = arg[3:]
        elif "=" in arg and not arg.startswith("-"):
            key, _, value = arg.partition("=")
            key = key.strip().lstrip("+")  # Hydra's "+key=value" (add a key) means the same here
            if not key:
                raise UsageError(f"local backend: override {arg!r} has no key")
            overrides.append((key, parse_scalar(value)))
        else:
            raise UsageError(f"local backend: unexpected argument {arg!r} (want key=value overrides)")
        i += 1
    if spec_path is None:
        raise UsageError(f"local backend: `{ENTRYPOINT} {task}` needs -e <spec.yaml>")
    return ParsedArgv(task=task, spec_path=spec_path, overrides=tuple(overrides))  # type: ignore[arg-type]


def parse_scalar(text: str) -> Any:
    """A Hydra-style override value read as a YAML scalar ("1e-4" → float, "null" → None, "[1, 10]" → list).

    Text YAML cannot parse (e.g. a path with ": ") stays a string, as Hydra would treat it."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # PyYAML's YAML 1.1 resolver leaves "1e-4" a string; Hydra reads it as a float.
    if isinstance(value, str) and _FLOAT_RE.match(value):
        return float(value)
    return value


def apply_overrides(raw: dict[str, Any], overrides: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """A deep copy of `raw` with each dotted `key=value` set, creating intermediate mappings."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides:
        set_dotted(out, dotted, value)
    return out


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


def _lights(raw: dict[str, Any], spec: Path) -> tuple[str, ...]:
    input_map = get(raw, "dataset.classify.input_map")
    if not isinstance(input_map, dict) or not input_map:
        raise InputError("spec has no non-empty dataset.classify.input_map (light → index)", file=spec)
    try:
        ordered = sorted(input_map.items(), key=lambda kv: int(kv[1]))
    except (TypeError, ValueError) as exc:
        raise InputError("dataset.classify.input_map values must be integers", file=spec) from exc
    return tuple(str(k) for k, _ in ordered)


def build_task_config(
    parsed: ParsedArgv, raw_spec: dict[str, Any], *, workdir: Path, env_seed: str | None = None
) -> TaskConfig:
    """Apply the overrides to the spec and read every key the local backend uses."""
    spec_path = resolve_path(parsed.spec_path, workdir)
    raw = apply_overrides(raw_spec, parsed.overrides)
    task = parsed.task

    results = get(raw, f"{task}.results_dir") or get(raw, "results_dir")
    if not results:
        raise InputError(f"no results_dir (set {task}.results_dir or results_dir)", file=spec_path)

    image_ext = str(get(raw, "dataset.classify.image_ext", ".jpg"))
    if not image_ext.startswith("."):
        image_ext = "." + image_ext

    cls_weight = get(raw, "train.classify.cls_weight", [1.0, 1.0])
    if not isinstance(cls_weight, list | tuple) or len(cls_weight) != 2:
        raise InputError(f"train.classify.cls_weight must be [w_pass, w_defect], found {cls_weight!r}", file=spec_path)

    seed_value = get(raw, "train.seed")
    if seed_value is None:
        seed_value = env_seed if env_seed not in (None, "") else 0
    try:
        seed = int(seed_value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"seed must be an integer, found {seed_value!r}", file=spec_path) from exc

    lr = get(raw, "train.optim.lr", 1e-3)
    try:
        lr = float(lr)
    except (TypeError, ValueError) as exc:
        raise InputError(f"train.optim.lr must be a number, found {lr!r}", file=spec_path) from exc

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
        results_dir=resolve_path(results, workdir),
        lights=_lights(raw, spec_path),
        image_ext=image_ext,
        image_width=_as_int(raw, "dataset.classify.image_width", 128, spec_path),
        image_height=_as_int(raw, "dataset.classify.image_height", 128, spec_path),
        batch_size=_as_int(raw, "dataset.classify.batch_size", 16, spec_path),
        workers=_as_int(raw, "dataset.classify.workers", 2, spec_path, minimum=0),
        num_epochs=_as_int(raw, "train.num_epochs", DEFAULT_EPOCHS, spec_path),
        checkpoint_interval=_as_int(raw, "train.checkpoint_interval", 1, spec_path),
        validation_interval=_as_int(
            raw, "train.validation_interval", int(get(raw, "train.val_interval", 1)), spec_path
        ),
        lr=lr,
        cls_weight=(float(cls_weight[0]), float(cls_weight[1])),
        augment=_augment_enabled(raw),
        seed=seed,
        pretrained_model_path=resolve_path(pretrained, workdir) if pretrained else None,
        checkpoint=resolve_path(checkpoint, workdir) if checkpoint else None,
        datasets=datasets,
    )


def load_task_config(argv: tuple[str, ...] | list[str], *, workdir: Path, env_seed: str | None = None) -> TaskConfig:
    """Parse argv, read the spec it names, and resolve it (the one file read of this module)."""
    from deft_aoi.workspace.spec_file import load_spec_document, resolve_spec

    parsed = parse_argv(argv)
    raw = resolve_spec(load_spec_document(resolve_path(parsed.spec_path, workdir)))
    return build_task_config(parsed, raw, workdir=workdir, env_seed=env_seed)
