from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Any test that would reach a real docker daemon fails unless it is marked `requires_docker`.
pytest_plugins = ["docker_guard"]

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb-dev"


@pytest.fixture(scope="session")
def deeppcb_dev() -> Path:
    """The real DeepPCB workspace beside the checkout (read-only)."""
    if not DEEPPCB.is_dir():
        pytest.skip(f"real-data workspace not found at {DEEPPCB}")
    return DEEPPCB


@pytest.fixture()
def deeppcb_copy(deeppcb_dev: Path, tmp_path: Path) -> Path:
    """A writable copy: runs write results/ into the workspace."""
    dest = tmp_path / "ws"
    shutil.copytree(deeppcb_dev, dest)
    return dest
