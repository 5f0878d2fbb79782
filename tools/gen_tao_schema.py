"""Regenerate deft's snapshot of TAO's Visual ChangeNet spec schema from NVIDIA's own config dataclasses.

NVIDIA publishes the config dataclasses of each TAO release as `nvidia-tao-core` on PyPI (Apache-2.0). Its
runtime pins make it a poor dependency, so deft ships a JSON snapshot per supported release instead, made
by this script, and `tests/runners/tao/test_tao_schema_snapshot.py` regenerates and diffs it.

    python -m venv /tmp/gen && /tmp/gen/bin/pip install omegaconf==2.3.0
    pip download --no-deps nvidia-tao-core==7.1.0 -d /tmp/w && unzip -q /tmp/w/*.whl -d /tmp/core-7.1.0
    PYTHONPATH=/tmp/core-7.1.0 /tmp/gen/bin/python tools/gen_tao_schema.py 7.1.0 > \
        src/deft_aoi/resources/tao_schema/visual_changenet-7.1.0.json

The snapshot is what TAO's hydra runner merges the user's spec into (`OmegaConf.structured(ExperimentConfig)`):
one entry per dotted key with its type, nullability, default and the field metadata NVIDIA declares
(`valid_options`, `valid_min`, `valid_max`). Only the key structure is NVIDIA's; no code is copied.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

CONFIG_MODULE = "nvidia_tao_core.config.visual_changenet.default_config"
SCHEMA_FORMAT = 1


def _number(text: Any) -> float | None:
    if text in (None, "") or isinstance(text, bool):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if value in (float("inf"), float("-inf")) else value


def _leaf(node: Any, meta: dict[str, Any]) -> dict[str, Any]:
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf import nodes as onodes

    kinds = ((onodes.BooleanNode, "bool"), (onodes.IntegerNode, "int"), (onodes.FloatNode, "float"),
             (onodes.StringNode, "str"))
    entry: dict[str, Any]
    if isinstance(node, ListConfig):
        item = node._metadata.element_type
        entry = {"type": "list", "item": getattr(item, "__name__", "any") if item in (int, float, str, bool) else "any"}
    elif isinstance(node, DictConfig):
        item = node._metadata.element_type
        entry = {"type": "dict", "item": getattr(item, "__name__", "any") if item in (int, float, str, bool) else "any"}
    else:
        entry = {"type": next((name for cls, name in kinds if isinstance(node, cls)), "any")}
    entry["nullable"] = bool(node._is_optional())
    value = OmegaConf.to_container(node) if isinstance(node, DictConfig | ListConfig) else node._value()
    plain = value is None or isinstance(value, bool | int | float | str | list | dict)
    entry["default"] = value if plain else str(value)
    options = meta.get("valid_options")
    if isinstance(options, str) and options.strip():
        entry["choices"] = [o.strip() for o in options.split(",") if o.strip()]
    for bound in ("valid_min", "valid_max"):
        number = _number(meta.get(bound))
        if number is not None:
            entry[bound.removeprefix("valid_")] = number
    return entry


def _walk(cfg: Any, prefix: str, out: dict[str, dict[str, Any]]) -> None:
    from omegaconf import DictConfig, OmegaConf

    cls = OmegaConf.get_type(cfg)
    metas = {f.name: dict(f.metadata) for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key in cfg:
        node = cfg._get_node(key)
        dotted = f"{prefix}{key}"
        if isinstance(node, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(node)):
            out[dotted] = {"type": "section", "nullable": bool(node._is_optional())}
            _walk(node, dotted + ".", out)
        else:
            out[dotted] = _leaf(node, metas.get(str(key), {}))


def snapshot(version: str) -> dict[str, Any]:
    import importlib

    from omegaconf import OmegaConf

    module = importlib.import_module(CONFIG_MODULE)
    cfg = OmegaConf.structured(module.ExperimentConfig)
    keys: dict[str, dict[str, Any]] = {}
    _walk(cfg, "", keys)
    return {
        "format": SCHEMA_FORMAT,
        "tao_version": version,
        "source": f"nvidia-tao-core=={version} {CONFIG_MODULE}.ExperimentConfig (Apache-2.0)",
        "generated_by": "tools/gen_tao_schema.py",
        "keys": dict(sorted(keys.items())),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gen_tao_schema.py <tao version, e.g. 7.1.0>  (nvidia_tao_core importable)", file=sys.stderr)
        return 2
    json.dump(snapshot(argv[0]), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
