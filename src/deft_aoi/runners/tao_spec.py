"""Render a per-stage Visual ChangeNet spec from the workspace's baseline spec, and validate it before launch.

Validation runs before any container starts, so a typo costs a second instead of a GPU hour: unknown or
misspelled keys (the message names the nearest valid key), wrong value types, closed choices,
`checkpoint_interval` / `validation_interval` larger than `num_epochs`, and paths that are relative or
outside the workspace (the container only sees the workspace, mounted at the same path).
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deft_aoi.dotted import get_dotted, set_dotted  # re-exported: the runners import them from here
from deft_aoi.errors import InputError
from deft_aoi.runners.tao_schema import SCHEMA, Leaf, Node, all_keys
from deft_aoi.workspace.spec_file import ChangeNetSpec

_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
               "list": "a list", "dict": "a mapping", "mapping": "a mapping"}


def render_spec(base: ChangeNetSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the baseline spec with dotted-key overrides applied (the baseline is never modified)."""
    doc = copy.deepcopy(base.raw)
    for dotted, value in overrides.items():
        set_dotted(doc, dotted, value)
    return doc


def nearest_key(dotted: str, siblings: list[str]) -> str | None:
    """The closest valid key: first among siblings at the same level, then across the whole schema."""
    leaf = dotted.rsplit(".", 1)[-1]
    prefix = dotted[: -len(leaf)]
    match = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if match:
        return prefix + match[0]
    match = difflib.get_close_matches(dotted, all_keys(), n=1, cutoff=0.75)
    return match[0] if match else None


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list | tuple)
    return isinstance(value, Mapping)


def _check_leaf(dotted: str, leaf: Leaf, value: Any, root: str, source: Path | None) -> None:
    if value is None:
        if leaf.nullable:
            return
        raise InputError(f"spec key '{dotted}' must not be null", file=source)
    if not _type_ok(value, leaf.kind):
        raise InputError(
            f"spec key '{dotted}' must be {_KIND_NAMES[leaf.kind]}, found {type(value).__name__} {value!r}",
            file=source,
        )
    if leaf.kind in ("list", "dict"):
        items = value.values() if leaf.kind == "dict" else value
        bad = [v for v in items if not _type_ok(v, leaf.item)]
        if bad:
            raise InputError(f"spec key '{dotted}' must hold {_KIND_NAMES[leaf.item]} values, found {bad[0]!r}",
                             file=source)
    if leaf.choices is not None and value not in leaf.choices:
        raise InputError(f"spec key '{dotted}' = {value!r}; expected one of {', '.join(leaf.choices)}", file=source)
    if leaf.minimum is not None and value < leaf.minimum:
        raise InputError(f"spec key '{dotted}' = {value!r} must be ≥ {leaf.minimum:g}", file=source)
    if leaf.path and value != "":
        _check_path(dotted, str(value), root, source)


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


def _walk(doc: Mapping[str, Any], schema: dict[str, Node], prefix: str, root: str, source: Path | None) -> None:
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        node = schema.get(str(key))
        if node is None:
            near = nearest_key(dotted, list(schema))
            if near:
                raise InputError(f"unknown spec key '{dotted}' — did you mean '{near}'?", file=source)
            raise InputError(f"unknown spec key '{dotted}'", file=source,
                             hint=f"valid keys here: {', '.join(sorted(schema))}")
        if isinstance(node, dict):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise InputError(f"spec key '{dotted}' must be a mapping, found {value!r}", file=source)
            _walk(value, node, dotted + ".", root, source)
        else:
            _check_leaf(dotted, node, value, root, source)


def validate_spec(doc: dict[str, Any], workspace_root: Path, *, source: Path | None = None) -> None:
    """Refuse a rendered spec TAO would reject or that would waste GPU time. Raises InputError."""
    root = os.path.normpath(str(Path(workspace_root).expanduser().absolute()))
    _walk(doc, SCHEMA, "", root, source)
    epochs = get_dotted(doc, "train.num_epochs")
    unit = get_dotted(doc, "train.checkpoint_interval_unit", "epoch")
    if isinstance(epochs, int) and unit == "epoch":
        for key in ("checkpoint_interval", "validation_interval"):
            interval = get_dotted(doc, f"train.{key}")
            if isinstance(interval, int) and interval > epochs:
                raise InputError(
                    f"train.{key} = {interval} is larger than train.num_epochs = {epochs}: "
                    f"no {'checkpoint' if key.startswith('checkpoint') else 'validation'} would ever happen",
                    file=source,
                    hint=f"set train.{key} ≤ {epochs}",
                )
    input_map = get_dotted(doc, "dataset.classify.input_map")
    num_input = get_dotted(doc, "dataset.classify.num_input")
    if isinstance(input_map, Mapping) and isinstance(num_input, int) and num_input != len(input_map):
        raise InputError(
            f"dataset.classify.num_input = {num_input} but input_map lists {len(input_map)} light(s)",
            file=source,
        )


def write_spec(doc: dict[str, Any], path: Path) -> None:
    """Write the spec atomically, keys in document order."""
    import yaml

    from deft_aoi.io_utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
