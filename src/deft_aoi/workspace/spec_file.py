"""YAML files of the customer workspace (versions.yaml, ...): one mapping per file, errors naming the file and line.

The TAO spec itself is TAO's business: `runners/tao/changenet_spec.py` loads it as TAO does (OmegaConf)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from deft_aoi.bounded import check_yaml_bounds
from deft_aoi.errors import InputError
from deft_aoi.io_utils import refuse_special_file


def parse_yaml_file(path: str | Path, parse: Callable[[str], Any]) -> dict[str, Any]:
    """Run `parse(text)` on a YAML file; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("expected a YAML file, found a directory", file=path)
    refuse_special_file(path)
    try:
        text = path.read_text(encoding="utf-8")
        check_yaml_bounds(text, file=path)
        data = parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"malformed YAML{where}: {problem}", file=path, row=None) from exc
    except UnicodeDecodeError as exc:
        raise InputError("not a UTF-8 text file", file=path) from exc
    if data is None or data == {}:
        raise InputError("YAML file is empty", file=path)
    if not isinstance(data, dict):
        raise InputError(f"expected a YAML mapping at the top level, found {type(data).__name__}", file=path)
    return data


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; errors name the file and line."""
    return parse_yaml_file(path, yaml.safe_load)
