"""Render a per-stage Visual ChangeNet spec from the workspace's baseline spec, and validate it before launch.

Validation runs before any container starts, so a typo costs a second instead of a GPU hour. The schema is
NVIDIA's (`tao/schema.py`: a snapshot of `ExperimentConfig` per TAO release, picked by the image tag): unknown or
misspelled keys (the message names the nearest valid key), value types as OmegaConf converts them, the options
and bounds NVIDIA declares, and paths that are relative or outside the workspace (the container only sees the
workspace, mounted at the same path). Interpolations (`${...}`) are resolved first, over TAO's defaults, as
TAO's hydra runner does. Where `nvidia_tao_core` itself is importable, the spec is also merged into
`OmegaConf.structured(ExperimentConfig)` exactly as TAO does. `validate_spec` then applies TAO's run-time
spec rules (`tao_rules.spec_rules`).
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.dotted import get_dotted as get_dotted  # re-exported: the runners import them from here
from deft_aoi.dotted import set_dotted as set_dotted
from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec, resolve_document, resolve_spec
from deft_aoi.runners.tao.schema import Snapshot, snapshot_for_image, with_defaults

if TYPE_CHECKING:
    pass

_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
               "list": "a list", "dict": "a mapping", "section": "a mapping", "any": "a value"}
# Keys whose value is a file or directory the container must see (inside the workspace). The backbone path is
# a run-time rule of its own (tao_rules.backbone_rule): only the docker backend loads it.
PATH_KEYS = frozenset({
    "results_dir", "train.results_dir", "evaluate.results_dir", "inference.results_dir",
    "train.resume_training_checkpoint_path", "train.pretrained_model_path", "evaluate.checkpoint",
    "inference.checkpoint", "evaluate.trt_engine", "inference.trt_engine",
    *(f"dataset.classify.{ds}.{k}" for ds in ("train_dataset", "validation_dataset", "test_dataset",
                                              "infer_dataset") for k in ("csv_path", "images_dir")),
})
# NVIDIA's declared options that lag behind what its own code runs: `valid_options` of model.backbone.type
# lists no C-RADIO backbone, yet changenet.py builds them and NVIDIA's DEFT spec trains one.
UNDECLARED_OPTIONS = frozenset({"model.backbone.type"})


def render_spec(base: ChangeNetSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the baseline spec with dotted-key overrides applied (the baseline is never modified)."""
    doc = copy.deepcopy(base.raw)
    for dotted, value in overrides.items():
        set_dotted(doc, dotted, value)
    return doc


def nearest_key(dotted: str, siblings: list[str], snapshot: Snapshot | None = None) -> str | None:
    """The closest valid key: first among siblings at the same level, then across the whole schema."""
    from deft_aoi.runners.tao.schema import all_keys

    leaf = dotted.rsplit(".", 1)[-1]
    prefix = dotted[: -len(leaf)]
    match = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if match:
        return prefix + match[0]
    match = difflib.get_close_matches(dotted, all_keys(snapshot), n=1, cutoff=0.75)
    return match[0] if match else None


def _type_ok(value: Any, kind: str) -> bool:
    """What OmegaConf's typed nodes accept (it converts numeric strings, as TAO's merge does)."""
    if kind == "any":
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        if isinstance(value, str):
            return value.strip().lstrip("+-").isdigit()
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return False
            return True
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list | tuple)
    return isinstance(value, Mapping)


def _check_leaf(dotted: str, entry: Mapping[str, Any], value: Any, root: str | None, source: Path | None) -> None:
    kind = entry["type"]
    if value is None:
        if entry.get("nullable"):
            return
        raise InputError(f"spec key '{dotted}' must not be null", file=source)
    if not _type_ok(value, kind):
        raise InputError(
            f"spec key '{dotted}' must be {_KIND_NAMES[kind]}, found {type(value).__name__} {value!r}", file=source)
    if kind in ("list", "dict"):
        items = value.values() if kind == "dict" else value
        bad = [v for v in items if not _type_ok(v, entry.get("item", "any"))]
        if bad:
            raise InputError(f"spec key '{dotted}' must hold {_KIND_NAMES[entry.get('item', 'any')]} values, "
                             f"found {bad[0]!r}", file=source)
    choices = entry.get("choices")
    if choices and dotted not in UNDECLARED_OPTIONS and str(value) not in choices:
        raise InputError(f"spec key '{dotted}' = {value!r}; expected one of {', '.join(choices)}", file=source)
    if kind in ("int", "float"):
        _check_bounds(dotted, entry, float(value), source)
    if root is not None and dotted in PATH_KEYS and value != "":
        _check_path(dotted, str(value), root, source)


def _check_bounds(dotted: str, entry: Mapping[str, Any], number: float, source: Path | None) -> None:
    default = entry.get("default")
    for bound, low in (("min", True), ("max", False)):
        limit = entry.get(bound)
        if limit is None:
            continue
        # NVIDIA marks "derive it" with out-of-range defaults (evaluate.batch_size = -1): such a bound is advisory.
        if isinstance(default, int | float) and (default < limit if low else default > limit):
            continue
        if (number < limit) if low else (number > limit):
            raise InputError(f"spec key '{dotted}' = {number:g} must be {'≥' if low else '≤'} {limit:g}",
                             file=source)


def _check_path(dotted: str, value: str, root: str, source: Path | None) -> None:
    if not os.path.isabs(value):
        raise InputError(
            f"spec key '{dotted}' = '{value}' is a relative path; rendered specs use absolute workspace paths",
            file=source,
        )
    # normpath (not realpath): a symlink inside the workspace is the user's business, `..` escapes are not.
    resolved = os.path.normpath(value)
    if os.path.commonpath([root, resolved]) != root:
        raise InputError(
            f"spec key '{dotted}' = '{value}' is outside the workspace {root}",
            file=source,
            hint="the container sees only the workspace (mounted at the same path); move the file inside it",
        )


def _walk(doc: Mapping[str, Any], snap: Snapshot, prefix: str, root: str | None, source: Path | None) -> None:
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        entry = snap.entry(dotted)
        if entry is None:
            siblings = snap.children(prefix[:-1])
            near = nearest_key(dotted, siblings, snap)
            if near:
                raise InputError(f"unknown spec key '{dotted}' — did you mean '{near}'?", file=source)
            raise InputError(f"unknown spec key '{dotted}' (TAO {snap.release})", file=source,
                             hint=f"valid keys here: {', '.join(siblings)}")
        if entry["type"] == "section":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise InputError(f"spec key '{dotted}' must be a mapping, found {value!r}", file=source)
            _walk(value, snap, dotted + ".", root, source)
        else:
            _check_leaf(dotted, entry, value, root, source)


def effective_spec(doc: Mapping[str, Any], *, image: str | None = None, source: Path | None = None) -> dict[str, Any]:
    """The document TAO runs: the spec merged over the schema defaults of the image's release, resolved."""
    snap, _ = snapshot_for_image(image)
    return resolve_document(with_defaults(doc, snap), source=source)


def _merge_like_tao(doc: Mapping[str, Any], source: Path | None) -> None:
    """Where NVIDIA's own dataclasses are importable, merge into them exactly as TAO's hydra runner does."""
    try:
        from nvidia_tao_core.config.visual_changenet.default_config import (
            ExperimentConfig,
        )
    except Exception:  # not installed (the usual case): the snapshot check above stands alone
        return
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.create(dict(doc)))
    except OmegaConfBaseException as exc:
        raise InputError(f"TAO's ExperimentConfig refuses the spec: {str(exc).splitlines()[0]}", file=source) from exc


def check_schema(doc: dict[str, Any], workspace_root: Path | None, *, source: Path | None = None,
                 image: str | None = None) -> None:
    """Refuse a spec whose keys, types, options or paths TAO's schema refuses. Raises InputError.
    `workspace_root` None checks no paths (a spec not yet rendered, or a container that decides for itself)."""
    root = None if workspace_root is None else os.path.normpath(str(Path(workspace_root).expanduser().absolute()))
    snap, _ = snapshot_for_image(image)
    resolved = resolve_spec(doc, source=source, snapshot=snap)
    _walk(resolved, snap, "", root, source)
    _merge_like_tao(doc, source)


def validate_spec(doc: dict[str, Any], workspace_root: Path, *, source: Path | None = None,
                  image: str | None = None, task: str = "train") -> None:
    """Refuse a rendered spec TAO would reject or that would waste GPU time: the schema, then TAO's run-time
    spec rules for a `visual_changenet <task>` run. Raises InputError naming the first problem."""
    from deft_aoi.runners.tao.rules import failures, spec_rules

    check_schema(doc, workspace_root, source=source, image=image)
    bad = failures(spec_rules(effective_spec(doc, image=image, source=source), task))
    if bad:
        raise InputError(f"{bad[0].message} [TAO rule: {bad[0].rule}; {bad[0].source}]", file=source)


def write_spec(doc: dict[str, Any], path: Path) -> None:
    """Write the spec atomically, keys in document order."""
    import yaml

    from deft_aoi.io_utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
