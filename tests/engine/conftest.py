"""The real-engine tier (`make docker-test`): every test here talks to a real Docker Engine and the local TAO
stand-in image; each one also checks that it left no deft container or volume behind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture()
def engine(standin_image: str) -> Iterator[Any]:
    """A docker-py client of the real engine; after the test, no deft-labelled container and no new volume."""
    import docker

    client = docker.from_env()
    volumes = {v.name for v in client.volumes.list()}
    yield client
    # Only the stand-in's containers: another tier on the same engine (tests/tao_real runs NVIDIA's image)
    # may have deft jobs running that are not this test's to remove.
    left = client.containers.list(all=True, filters={"label": "deft-aoi.job", "ancestor": standin_image})
    for container in left:  # clean up so one failure does not cascade, then fail
        container.remove(force=True)
    new_volumes = {v.name for v in client.volumes.list()} - volumes
    client.close()
    assert not left, f"containers left behind: {[c.name for c in left]}"
    assert not new_volumes, f"volumes left behind: {sorted(new_volumes)}"
