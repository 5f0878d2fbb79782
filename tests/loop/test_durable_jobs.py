"""A job outlives deft (unit tier, over the in-memory docker client): a deft killed while a train job runs leaves
the job running, its handle already in the stage record; `deft resume` re-attaches — waits for a running job,
collects one that finished meanwhile, fails the stage with the job's own exit and log tail when it failed —
and never starts a second job for the stage. `--detach` leaves on purpose.

"Killed" (tests/loop/_runs.py) is a BaseException raised right after the handle is recorded: nothing in deft
catches it, as nothing in deft runs after a SIGKILL (the real-engine tier, tests/engine, SIGKILLs a real process).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app
from deft_aoi.runners.fake import docker_client
from deft_aoi.runners.jobs import JobHandle

from ._runs import Killed, fingerprint, kill_after_job_recorded, undisturbed

ARGS = ["--backend", "fake", "--yes", "--max-iterations", "0", "--epochs", "2", "--seed", "3"]
SLOW = "1.5"  # seconds a `slow` train job runs: long enough to kill deft in, short for the suite


def deft(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "DEFT_FAKE_FAULT": "",
                                                    "DEFT_FAKE_SLOW_S": SLOW, **env})


@pytest.fixture()
def shared_client(monkeypatch: pytest.MonkeyPatch, demo_ws: Path) -> docker_client.FakeDockerClient:
    """One in-memory engine for every deft process of the test: its containers outlive a killed deft."""
    client = docker_client.FakeDockerClient(state_dir=demo_ws / ".deft_cache" / "fake_docker")
    monkeypatch.setattr(docker_client, "FakeDockerClient", lambda **_: client)
    return client


@pytest.fixture()
def kill_after_train_submit(monkeypatch: pytest.MonkeyPatch) -> list[JobHandle]:
    """deft dies right after recording the baseline train job's handle (once)."""
    return kill_after_job_recorded(monkeypatch, "train")


def _run(ws: Path) -> None:
    result = deft("run", "-w", str(ws), *ARGS)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def clean(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return undisturbed(demo_template, tmp_path_factory.mktemp("undisturbed") / "ws", _run)


def _state(ws: Path) -> dict[str, Any]:
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "deft_state.json").read_text())


def _train_containers(client: docker_client.FakeDockerClient) -> list[dict[str, Any]]:
    return [kw for call, kw in client.calls if call == "containers.create"
            and (kw.get("labels") or {}).get("deft-aoi.stage") == "train"]


def _kill_during_train(ws: Path, fault: str) -> JobHandle:
    with pytest.raises(Killed):
        deft("run", "-w", str(ws), *ARGS, DEFT_FAKE_FAULT=fault)
    train = _state(ws)["iterations"]["baseline"]["stages"]["train"]
    assert train["status"] == "in_progress"
    (handle,) = [JobHandle.from_dict(j) for j in train["jobs"]]
    assert handle.backend == "docker" and handle.stage == "train" and handle.exit_code is None
    return handle


def test_resume_reattaches_to_a_running_job_and_equals_an_undisturbed_run(
        demo_ws: Path, shared_client: docker_client.FakeDockerClient, kill_after_train_submit: list[JobHandle],
        clean: dict[str, Any]) -> None:
    handle = _kill_during_train(demo_ws, "train:slow:once")
    container = shared_client.containers.get(handle.job_id)
    assert container.status == "running", "the job runs on after deft died"

    result = deft("resume", "-w", str(demo_ws))
    assert result.exit_code == 0, result.output
    assert f"re-attached to docker job {handle.job_id[:12]}" in result.output and "still running" in result.output
    assert len(_train_containers(shared_client)) == 1, "resume must not start a second train job"
    assert _state(demo_ws)["status"] == "finished"
    assert fingerprint(demo_ws) == clean
    train = _state(demo_ws)["iterations"]["baseline"]["stages"]["train"]
    assert [j["exit_code"] for j in train["jobs"]] == [0]
    assert shared_client.containers.list(all=True) == [], "a collected job's container is removed"


def test_a_job_that_finished_while_deft_was_away_is_collected_not_rerun(
        demo_ws: Path, shared_client: docker_client.FakeDockerClient, kill_after_train_submit: list[JobHandle],
        clean: dict[str, Any]) -> None:
    handle = _kill_during_train(demo_ws, "train:slow:once")
    container = shared_client.containers.get(handle.job_id)
    deadline = time.monotonic() + 120  # a slow fake train took past 30 s on a loaded box; fast ones end at once
    while container.status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert container.status == "exited"

    result = deft("resume", "-w", str(demo_ws))
    assert result.exit_code == 0, result.output
    assert "finished while deft was away" in result.output
    assert len(_train_containers(shared_client)) == 1
    assert fingerprint(demo_ws) == clean


def test_a_job_that_failed_while_deft_was_away_fails_the_stage_with_its_own_exit_and_log(
        demo_ws: Path, shared_client: docker_client.FakeDockerClient,
        kill_after_train_submit: list[JobHandle]) -> None:
    _kill_during_train(demo_ws, "train:slowfail:once")
    result = deft("resume", "-w", str(demo_ws))
    assert result.exit_code == 1, result.output
    assert "exited with code 1" in result.output and "injected failure" in result.output
    assert len(_train_containers(shared_client)) == 1
    st = _state(demo_ws)
    assert st["status"] == "failed" and st["failure"]["stage"] == "train"
    assert [j["exit_code"] for j in st["iterations"]["baseline"]["stages"]["train"]["jobs"]] == [1]

    result = deft("resume", "-w", str(demo_ws))  # the job ended: the stage is redone, with a new job
    assert result.exit_code == 0, result.output
    assert len(_train_containers(shared_client)) == 2
    assert _state(demo_ws)["status"] == "finished"


def test_detach_leaves_the_job_running_and_resume_comes_back_to_it(
        demo_ws: Path, shared_client: docker_client.FakeDockerClient, clean: dict[str, Any]) -> None:
    result = deft("run", "-w", str(demo_ws), *ARGS, "--detach", DEFT_FAKE_FAULT="train:slow:once")
    assert result.exit_code == 0, result.output
    assert "runs on" in result.output and "deft resume" in result.output
    st = _state(demo_ws)
    assert st["status"] == "interrupted" and st["failure"]["kind"] == "detached"
    (job,) = st["iterations"]["baseline"]["stages"]["train"]["jobs"]
    assert shared_client.containers.get(job["job_id"]).status == "running"

    result = deft("resume", "-w", str(demo_ws))
    assert result.exit_code == 0, result.output
    assert "re-attached" in result.output
    assert len(_train_containers(shared_client)) == 1
    assert fingerprint(demo_ws) == clean


def test_detach_is_refused_where_jobs_run_inside_deft(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), *ARGS[2:], "--backend", "local", "--detach")
    assert result.exit_code == 2, result.output
    assert "--detach needs a backend whose jobs outlive deft" in result.output


def test_timeout_counts_from_the_jobs_start_across_restarts(
        demo_ws: Path, shared_client: docker_client.FakeDockerClient, kill_after_train_submit: list[JobHandle],
        monkeypatch: pytest.MonkeyPatch) -> None:
    handle = _kill_during_train(demo_ws, "train:hang:once")
    # The job was submitted an hour ago as far as the timeout is concerned: resume must not restart the clock.
    runs = sorted((demo_ws / "results").glob("run_*"))
    state_file = runs[0] / "deft_state.json"
    doc = json.loads(state_file.read_text())
    doc["iterations"]["baseline"]["stages"]["train"]["jobs"][0]["submitted_at"] -= 3600
    state_file.write_text(json.dumps(doc))
    container = shared_client.containers.get(handle.job_id)
    container.kwargs["labels"]["deft-aoi.submitted"] = f"{handle.submitted_at - 3600:.3f}"
    result = deft("resume", "-w", str(demo_ws), DEFT_FAKE_FAULT="train:hang:once")
    assert result.exit_code == 1, result.output
    assert "timed out after" in result.output and "counts from the job's start" in result.output
    assert shared_client.containers.list(all=True) == [], "a timed-out job is stopped and removed"
