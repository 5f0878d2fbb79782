from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated demo workspace per session; tests copy it."""
    from deft_aoi.demo.generator import generate_workspace

    out = tmp_path_factory.mktemp("demo") / "ws"
    generate_workspace(out, seed=11, size="small")
    return out


@pytest.fixture()
def demo_ws(demo_template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(demo_template, dest)
    return dest
