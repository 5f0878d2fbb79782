"""The Visual ChangeNet classify spec (`specs/baseline_spec.yaml`): the source of truth for architecture,
lights, image extension, image size and epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from deft_aoi.dotted import get_dotted
from deft_aoi.errors import InputError


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("expected a YAML file, found a directory", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"malformed YAML{where}: {problem}", file=path, row=None) from exc
    except UnicodeDecodeError as exc:
        raise InputError("not a UTF-8 text file", file=path) from exc
    if data is None:
        raise InputError("YAML file is empty", file=path)
    if not isinstance(data, dict):
        raise InputError(f"expected a YAML mapping at the top level, found {type(data).__name__}", file=path)
    return data


class ChangeNetSpec(BaseModel):
    """A parsed classify spec. `raw` keeps the whole document so rendered specs lose nothing."""

    model_config = ConfigDict(frozen=True)

    path: Path
    raw: dict[str, Any]
    lights: tuple[str, ...]
    image_ext: str
    image_width: int
    image_height: int
    num_epochs: int | None
    batch_size: int
    backbone: str
    learning_rate: float | None
    cls_weight: tuple[float, float] | None

    def get(self, dotted: str, default: Any = None) -> Any:
        return get_dotted(self.raw, dotted, default)


def parse_spec(raw: dict[str, Any], path: str | Path) -> ChangeNetSpec:
    path = Path(path)
    input_map = get_dotted(raw, "dataset.classify.input_map")
    if input_map is None:
        raise InputError(
            "spec has no dataset.classify.input_map (the lights, e.g. {SolderLight: 0})",
            file=path,
            hint="add dataset.classify.input_map with one entry per light",
        )
    if not isinstance(input_map, dict) or not input_map:
        raise InputError("dataset.classify.input_map must be a non-empty mapping of light -> index", file=path)
    try:
        ordered = sorted(input_map.items(), key=lambda kv: int(kv[1]))
    except (TypeError, ValueError) as exc:
        raise InputError("dataset.classify.input_map values must be integers", file=path) from exc
    lights = tuple(str(k) for k, _ in ordered)

    image_ext = str(get_dotted(raw, "dataset.classify.image_ext", ".jpg"))
    if not image_ext.startswith("."):
        image_ext = "." + image_ext

    def as_int(key: str, default: int | None) -> int | None:
        value = get_dotted(raw, key, default)
        if value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{key} must be an integer, found {value!r}", file=path) from exc

    cls_weight = get_dotted(raw, "train.classify.cls_weight")
    weights: tuple[float, float] | None = None
    if cls_weight is not None:
        if not isinstance(cls_weight, list | tuple) or len(cls_weight) != 2:
            raise InputError(f"train.classify.cls_weight must be a pair [w_pass, w_defect], found {cls_weight!r}",
                             file=path)
        weights = (float(cls_weight[0]), float(cls_weight[1]))
    lr = get_dotted(raw, "train.optim.lr")
    return ChangeNetSpec(
        path=path,
        raw=raw,
        lights=lights,
        image_ext=image_ext,
        image_width=as_int("dataset.classify.image_width", 128) or 128,
        image_height=as_int("dataset.classify.image_height", 128) or 128,
        num_epochs=as_int("train.num_epochs", None),
        batch_size=as_int("dataset.classify.batch_size", 16) or 16,
        backbone=str(get_dotted(raw, "model.backbone.type", "unknown")),
        learning_rate=float(lr) if lr is not None else None,
        cls_weight=weights,
    )


def load_spec(path: str | Path) -> ChangeNetSpec:
    return parse_spec(load_yaml_mapping(path), path)
