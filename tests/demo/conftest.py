from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.demo.generator import DemoSummary, generate_workspace


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    """One small demo workspace (seed 7) shared by the read-only tests."""
    out = tmp_path_factory.mktemp("demo") / "ws"
    return out, generate_workspace(out, seed=7, size="small")
