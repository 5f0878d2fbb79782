"""The Slurm tier (`make slurm-test`): a one-node cluster on localhost (.ci/slurm-cluster) runs deft's jobs with
the process launcher and the TAO stand-in (`python -m deft_aoi.runners.fake.standin_entry`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/slurm/" in str(item.fspath) and not item.get_closest_marker("requires_slurm"):
            item.add_marker(pytest.mark.requires_slurm)


@pytest.fixture(autouse=True)
def _cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("requires_slurm") is None:
        return
    if shutil.which("sinfo") is None:
        pytest.skip("no Slurm client commands here: `make slurm-test` installs and starts a one-node cluster")
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip(f"no Slurm controller answers (sinfo: {done.stderr.strip()[:200]}): `make slurm-test`")
