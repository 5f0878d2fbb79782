"""pytest plugin: a unit test that would reach a real docker daemon fails, unless marked `requires_docker`.

Tests marked `requires_docker` run only when a daemon answers a ping (else they are skipped). Every other
test gets docker-py's low-level `APIClient` constructor replaced by a refusal, which covers
`docker.from_env()`, `docker.DockerClient(...)` and `docker.APIClient(...)`. The refusal is a pytest
failure (a BaseException, so `except Exception` in product code cannot swallow it), and is re-raised at
teardown in case something caught it anyway.

Enable it from tests/conftest.py with ``pytest_plugins = ["docker_guard"]`` (tests/ is on sys.path there).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

MARK = "requires_docker"
_TRIED = pytest.StashKey[str]()


@functools.cache
def daemon_answers() -> bool:
    """One real ping per session (only ever called for `requires_docker` tests)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARK}: talks to a real docker daemon (skipped when none answers)")


@pytest.fixture(autouse=True)
def docker_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker(MARK) is not None:
        if not daemon_answers():
            pytest.skip("no docker daemon answers")
        yield
        return
    try:
        import docker.api.client
    except ImportError:  # docker-py not installed: nothing can reach a daemon through it
        yield
        return
    node = request.node

    def refuse(*_args: object, **_kwargs: object) -> None:
        message = (f"{node.nodeid} tried to reach a real docker daemon; use FakeDockerClient "
                   f"or mark the test @pytest.mark.{MARK}")
        node.stash[_TRIED] = message
        pytest.fail(message, pytrace=False)

    monkeypatch.setattr(docker.api.client.APIClient, "__init__", refuse)
    yield
    message = node.stash.get(_TRIED, None)
    if message is not None:
        pytest.fail(message, pytrace=False)


def forget_attempt(node: pytest.Item) -> None:
    """For the guard's own test: clear the recorded attempt so teardown does not fail the test."""
    node.stash[_TRIED] = None  # type: ignore[assignment]
