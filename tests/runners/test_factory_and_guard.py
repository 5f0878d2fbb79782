from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import UsageError
from deft_aoi.runners.docker.runner import DockerRunner
from deft_aoi.runners.factory import make_runner
from deft_aoi.runners.fake.docker_client import FakeDockerClient
from deft_aoi.workspace.layout import WorkspaceLayout


def test_fake_backend(tmp_path: Path) -> None:
    runner = make_runner("fake", WorkspaceLayout.at(tmp_path))
    assert isinstance(runner, DockerRunner) and isinstance(runner.client, FakeDockerClient)


def test_docker_backend_uses_fake_client_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    runner = make_runner("docker", WorkspaceLayout.at(tmp_path))
    assert isinstance(runner.client, FakeDockerClient)  # type: ignore[attr-defined]


def test_docker_backend_connects_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEFT_DOCKER", raising=False)
    runner = make_runner("docker", WorkspaceLayout.at(tmp_path))  # must not touch the daemon yet
    assert isinstance(runner, DockerRunner)


def test_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown backend"):
        make_runner("podman", WorkspaceLayout.at(tmp_path))


def test_guard_refuses_a_real_daemon(request: pytest.FixtureRequest) -> None:
    import docker

    from docker_guard import forget_attempt

    with pytest.raises(pytest.fail.Exception, match="tried to reach a real docker daemon"):
        docker.from_env()
    forget_attempt(request.node)


def test_guard_failure_is_not_swallowed_by_the_runner(tmp_path: Path, request: pytest.FixtureRequest,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from docker_guard import forget_attempt

    monkeypatch.delenv("DEFT_DOCKER", raising=False)
    runner = make_runner("docker", WorkspaceLayout.at(tmp_path))
    with pytest.raises(pytest.fail.Exception):
        runner.client  # noqa: B018 - the lazy connection is the point
    forget_attempt(request.node)
