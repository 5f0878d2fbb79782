"""pytest plugin: a unit test that would reach a real docker daemon fails, unless marked `requires_docker`.

Tests marked `requires_docker` run only when a daemon answers a ping (else they are skipped), and the
terminal summary says how many ran against which engine version (the real-engine tier's CI line). Those that
need the local TAO stand-in image (docker/standin, built by `make docker-test`) take the `standin_image`
fixture, which names it from DEFT_STANDIN_IMAGE or skips saying how to build it. Every other
test gets docker-py's low-level `APIClient` constructor replaced by a refusal, which covers
`docker.from_env()`, `docker.DockerClient(...)` and `docker.APIClient(...)`. The refusal is a pytest
failure (a BaseException, so `except Exception` in product code cannot swallow it), and is re-raised at
teardown in case something caught it anyway.

Enable it from tests/conftest.py with ``pytest_plugins = ["docker_guard"]`` (tests/ is on sys.path there).
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Iterator

import pytest

MARK = "requires_docker"
IMAGE_ENV = "DEFT_STANDIN_IMAGE"
_TRIED = pytest.StashKey[str]()
_OUTCOMES: collections.Counter[str] = collections.Counter()
_MARKED: set[str] = set()


@functools.cache
def engine_version() -> str | None:
    """"Docker Engine <version> (API <v>)" of the daemon that answers, None when none does; one query per
    session (only ever called for `requires_docker` tests)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
            info = client.version()
            return f"Docker Engine {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"
        finally:
            client.close()
    except Exception:
        return None


def daemon_answers() -> bool:
    return engine_version() is not None


def image_named_by(env: str, *, built_by: str, script: str) -> str:
    """The image the environment variable `env` names, present in the engine; otherwise the test skips, saying
    that `built_by` makes and sets it (or that `script` rebuilds it). Shared by every tier's image fixture."""
    image = os.environ.get(env, "").strip()
    if not image:
        pytest.skip(f"{env} is not set: {built_by}")
    import docker

    client = docker.from_env()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{env}={image} is not in the engine: rebuild it with {script}")
    finally:
        client.close()
    return image


@pytest.fixture(scope="session")
def standin_image() -> str:
    """The local TAO stand-in image `make docker-test` built (docker/standin/build.sh)."""
    return image_named_by(IMAGE_ENV, built_by="`make docker-test` builds the stand-in TAO image and sets it",
                          script="docker/standin/build.sh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _MARKED.update(item.nodeid for item in items if item.get_closest_marker(MARK) is not None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # By the report's keywords, not only the collected items: under pytest-xdist (make test) the controller
    # that prints the summary collects nothing, the workers send it their reports.
    if report.nodeid not in _MARKED and MARK not in report.keywords:
        return
    _MARKED.add(report.nodeid)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES["skipped" if report.skipped else "failed" if report.failed else "passed"] += 1
    elif report.when == "teardown" and report.failed:
        _OUTCOMES["errors at teardown"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _MARKED:
        return
    ran = _OUTCOMES["passed"] + _OUTCOMES["failed"]
    engine = engine_version() if ran else None
    counts = ", ".join(f"{n} {k}" for k, n in sorted(_OUTCOMES.items()) if n)
    where = f"against {engine}" if engine else "(no engine answered)"
    terminalreporter.write_line(f"real-engine tier: {ran} test(s) ran {where}; {counts or 'none reached'}")


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
