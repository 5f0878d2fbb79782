"""Container image URIs from `versions.yaml`: the workspace's file when present, else the package default.

Shape (CONTRACTS §7)::

    images:
      tao_toolkit:
        pyt: nvcr.io/nvidia/tao/tao-toolkit:<ver>-pyt
        data_services: nvcr.io/nvidia/tao/tao-toolkit:<ver>-data-services

A workspace file may set only one entry; the other falls back to the package default. Unknown keys are
errors (a misspelled key would otherwise silently pull the default image).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deft_aoi.errors import InputError
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.spec_file import load_yaml_mapping

IMAGE_KEYS = ("pyt", "data_services")
# registry/name[:tag][@digest]; strict enough to catch a pasted `docker pull ...` or a stray space.
_IMAGE_RE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


class ImageVersions(BaseModel):
    model_config = ConfigDict(frozen=True)

    pyt: str
    data_services: str
    source: str  # path of the versions.yaml the values came from


def package_versions_file() -> Path:
    return Path(str(resources.files("deft_aoi").joinpath("resources", "versions.yaml")))


def _section(value: Any, allowed: tuple[str, ...], where: str, what: str, path: Path) -> dict[str, Any]:
    """`value` as a mapping holding only `allowed` keys; InputError names the section and the strays."""
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping of {what}", file=path)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InputError(f"unknown key(s) under {where}: {', '.join(unknown)}; expected {', '.join(allowed)}",
                         file=path)
    return value


def _images_of(doc: dict[str, Any], path: Path) -> dict[str, str]:
    images = _section(doc, ("images",), "the top level", "'images'", path).get("images")
    toolkit = _section(images, ("tao_toolkit",), "'images'", "'tao_toolkit'", path).get("tao_toolkit")
    toolkit = _section(toolkit, IMAGE_KEYS, "'images.tao_toolkit'", "pyt / data_services", path)
    out: dict[str, str] = {}
    for key, value in toolkit.items():
        if not isinstance(value, str) or not _IMAGE_RE.match(value.strip()):
            raise InputError(f"images.tao_toolkit.{key} is not a container image reference: {value!r}", file=path)
        out[key] = value.strip()
    return out


def load_versions(workspace: WorkspaceLayout) -> ImageVersions:
    """Image URIs for this workspace. InputError names unknown keys or malformed YAML."""
    default_path = package_versions_file()
    images = _images_of(load_yaml_mapping(default_path), default_path)
    source = default_path
    if workspace.versions_file.exists():
        source = workspace.versions_file
        images.update(_images_of(load_yaml_mapping(source), source))
    missing = [k for k in IMAGE_KEYS if k not in images]
    if missing:
        raise InputError(f"no image for {', '.join(missing)}", file=source)
    return ImageVersions(pyt=images["pyt"], data_services=images["data_services"], source=str(source))
