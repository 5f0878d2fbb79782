"""Dotted-key access to nested spec mappings (`train.optim.lr`), as Hydra overrides name them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def get_dotted(doc: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating (or replacing non-mapping) intermediate levels."""
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
