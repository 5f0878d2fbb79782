from __future__ import annotations

import importlib.util
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

# Any test that would reach a real docker daemon fails unless it is marked `requires_docker`.
pytest_plugins = ["docker_guard"]

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb-dev"


@pytest.fixture(scope="session")
def load_bench() -> Callable[[str], ModuleType]:
    """Import a script of bench/ (not a package) by its file name, e.g. load_bench("paired_stats")."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
        return module

    return load


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


@pytest.fixture()
def deft_sigint() -> Iterator[None]:
    """deft's own SIGINT handler (as the `deft` command installs it) for one test; Python's default afterwards."""
    from deft_aoi import interrupts

    interrupts.install()
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.reset()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated demo workspace per session; tests copy it (tests/demo has its own, session-wide one)."""
    from deft_aoi.demo.generator import generate_workspace

    out = tmp_path_factory.mktemp("demo") / "ws"
    generate_workspace(out, seed=11, size="small")
    return out


@pytest.fixture()
def demo_ws(demo_template: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's demo workspace."""
    dest = tmp_path / "ws"
    shutil.copytree(demo_template, dest)
    return dest
