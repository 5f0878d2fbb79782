"""The Visual ChangeNet classify spec (`specs/baseline_spec.yaml`) read as TAO reads it: the source of truth for
architecture, lights, image extension, image size and epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deft_aoi.dotted import get_dotted
from deft_aoi.errors import InputError
from deft_aoi.workspace.spec_file import parse_yaml_file


def load_spec_document(path: str | Path) -> dict[str, Any]:
    """Parse a TAO spec the way TAO does: OmegaConf's YAML loader (so `lr: 1e-5` is a float, where plain YAML 1.1
    reads a string). `${...}` interpolations are kept as written; `resolve_document` resolves them."""

    def parse(text: str) -> Any:
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            cfg = OmegaConf.create(text)
        except OmegaConfBaseException as exc:
            raise InputError(f"not a valid spec: {str(exc).splitlines()[0]}", file=path) from exc
        return OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg

    return parse_yaml_file(path, parse)


def resolve_document(doc: dict[str, Any], *, source: str | Path | None = None) -> dict[str, Any]:
    """`doc` with every `${...}` interpolation resolved, as OmegaConf resolves it inside TAO."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(doc), resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise InputError(f"spec interpolation cannot be resolved: {str(exc).splitlines()[0]}", file=source) from exc


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


def resolved_as_written(resolved: Any, written: Any) -> Any:
    """The resolved values of exactly the keys the user wrote (TAO's defaults filled only the interpolations)."""
    if isinstance(written, dict) and isinstance(resolved, dict):
        return {k: resolved_as_written(resolved.get(k), v) for k, v in written.items()}
    return resolved


def resolve_spec(written: dict[str, Any], *, source: str | Path | None = None, snapshot: Any = None) -> dict[str, Any]:
    """The keys the user wrote, interpolations resolved over TAO's schema defaults (as TAO's hydra runner does)."""
    from deft_aoi.runners.tao.schema import with_defaults

    resolved: dict[str, Any] = resolved_as_written(resolve_document(with_defaults(written, snapshot), source=source),
                                                   written)
    return resolved


def parse_spec(raw: dict[str, Any], path: str | Path) -> ChangeNetSpec:
    """The typed view deft needs; values are read with interpolations resolved over TAO's defaults."""
    path = Path(path)
    written = raw
    raw = resolve_spec(written, source=path)
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

    def as_int(key: str, default: int | None, minimum: int = 1) -> int | None:
        value = get_dotted(raw, key, default)
        if value is None:
            return None
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise InputError(f"{key} must be an integer, found {value!r}", file=path)
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{key} must be an integer, found {value!r}", file=path) from exc
        if number < minimum:  # never replaced by a default: `image_width: 0` is a mistake to show
            raise InputError(f"{key} must be ≥ {minimum}, found {number}", file=path)
        return number

    cls_weight = get_dotted(raw, "train.classify.cls_weight")
    weights: tuple[float, float] | None = None
    if cls_weight is not None:
        if not isinstance(cls_weight, list | tuple) or len(cls_weight) != 2:
            raise InputError(f"train.classify.cls_weight must be a pair [w_pass, w_defect], found {cls_weight!r}",
                             file=path)
        weights = (float(cls_weight[0]), float(cls_weight[1]))
    lr = get_dotted(raw, "train.optim.lr")
    try:
        learning_rate = float(lr) if lr is not None else None
    except (TypeError, ValueError) as exc:
        raise InputError(f"train.optim.lr must be a number, found {lr!r}", file=path) from exc
    return ChangeNetSpec(
        path=path,
        raw=written,
        lights=lights,
        image_ext=image_ext,
        image_width=as_int("dataset.classify.image_width", 128) or 128,  # `or`: a null key means the default
        image_height=as_int("dataset.classify.image_height", 128) or 128,
        num_epochs=as_int("train.num_epochs", None),
        batch_size=as_int("dataset.classify.batch_size", 16) or 16,
        backbone=str(get_dotted(raw, "model.backbone.type", "unknown")),
        learning_rate=learning_rate,
        cls_weight=weights,
    )


def load_spec(path: str | Path) -> ChangeNetSpec:
    return parse_spec(load_spec_document(path), path)
