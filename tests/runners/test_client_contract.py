"""The docker-py surface DockerRunner relies on, run against the fake client and (where a daemon answers)
the real one, on the local stand-in image (nothing is pulled), so the fake cannot drift from docker-py's
behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

FAKE_IMAGE = "deft-aoi/any:fake"  # the default fake daemon has every image


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.requires_docker)])
def client(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if request.param == "fake":
        from deft_aoi.runners.fake.docker_client import FakeDockerClient

        yield FakeDockerClient(state_dir=tmp_path)
        return
    import docker

    request.getfixturevalue("standin_image")  # skips, saying how to build it, when it is missing
    real = docker.from_env()
    yield real
    real.close()


@pytest.fixture()
def image(client: Any, request: pytest.FixtureRequest) -> str:
    return FAKE_IMAGE if hasattr(client, "present_images") else str(request.getfixturevalue("standin_image"))


def test_missing_image_raises_image_not_found(client: Any) -> None:
    import docker.errors

    if not hasattr(client, "present_images"):
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("deft-aoi/definitely-not-present:0")
        return
    client.present_images = set()
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("deft-aoi/definitely-not-present:0")


def test_detached_run_streams_logs_and_reports_exit_code(client: Any, image: str) -> None:
    container = client.containers.run(image, command=["echo", "hello contract"], detach=True)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        streamed = b"".join(container.logs(stream=True, follow=True))
        assert b"hello contract" in streamed
    finally:
        container.remove(force=True)


def test_non_zero_exit_code(client: Any, image: str) -> None:
    container = client.containers.run(image, command=["sh", "-c", "exit 3"], detach=True)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 3
    finally:
        container.remove(force=True)


def test_removed_container_is_gone(client: Any, image: str) -> None:
    import docker.errors

    container = client.containers.run(image, command=["true"], detach=True)
    container.wait(timeout=60)
    container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container.id)


def test_foreground_run_raises_container_error(client: Any, image: str) -> None:
    import docker.errors

    with pytest.raises(docker.errors.ContainerError):
        client.containers.run(image, command=["false"], remove=True)


def test_label_filter_lists_only_matching_containers(client: Any, image: str) -> None:
    """What orphan removal relies on: `containers.list(all=True, filters={"label": [...]})`."""
    mine = client.containers.run(image, command=["true"], detach=True, labels={"deft-aoi.contract": "a"})
    other = client.containers.run(image, command=["true"], detach=True, labels={"deft-aoi.contract": "b"})
    try:
        mine.wait(timeout=60)
        found = client.containers.list(all=True, filters={"label": ["deft-aoi.contract=a"]})
        assert [c.id for c in found] == [mine.id]
    finally:
        mine.remove(force=True)
        other.remove(force=True)
