"""What the real-engine tier relies on, checked over the fake client: stage labels and orphan removal,
DEFT_DOCKER_GPUS / DEFT_DOCKER_MEMORY, DEFT_FAKE_* reaching containers, and a refused GPU start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from deft_aoi.errors import StageFailed, UsageError
from deft_aoi.runners.base import Job, Mount, stage_labels
from deft_aoi.runners.docker.runner import DockerRunner, no_gpu_runtime
from deft_aoi.runners.factory import make_runner
from deft_aoi.runners.fake.docker_client import FakeDockerClient
from deft_aoi.workspace.layout import WorkspaceLayout


def _job(root: Path, argv: tuple[str, ...] = ("true",), **kw: Any) -> Job:
    return Job(name="t", image="img:1", argv=argv, log_file=root / "t.log", workdir=root,
               mounts=(Mount(root, root),), **kw)


def _created(client: FakeDockerClient) -> dict[str, Any]:
    return next(kw for call, kw in reversed(client.calls) if call == "containers.create")


def test_jobs_carry_their_stage_labels_and_orphans_are_found_by_them(tmp_path: Path) -> None:
    client = FakeDockerClient(state_dir=tmp_path)
    runner = DockerRunner(client, WorkspaceLayout.at(tmp_path))
    labels = stage_labels("run_1", "baseline", "train")
    # what a SIGKILLed deft leaves: its container, still running
    orphan = client.containers.create("img:1", ["sleep"], labels={"deft-aoi.job": "x", **labels}, name="orphan")
    orphan.status = "running"
    other = client.containers.create("img:1", ["sleep"], labels={**labels, "deft-aoi.stage": "inference"})
    assert _created(client)["labels"]["deft-aoi.stage"] == "inference"
    assert runner.remove_orphans(labels) == ["orphan"]
    assert [c.id for c in client.containers.list(all=True)] == [other.id]
    assert runner.remove_orphans({}) == []


def test_loop_jobs_are_labelled_with_run_iteration_and_stage(tmp_path: Path) -> None:
    from deft_aoi.runners.tao.commands import DataServicesContext, embedding_job

    ws = WorkspaceLayout.at(tmp_path)
    labels = stage_labels("run_9", "iter1", "mine")
    job = embedding_job(DataServicesContext(workspace=ws, image="img:1", labels=labels),
                        results_dir=tmp_path / "r", input_parquet=tmp_path / "in.parquet",
                        output_parquet=tmp_path / "out.parquet")
    client = FakeDockerClient(state_dir=tmp_path)
    DockerRunner(client, ws).run(job)
    created = _created(client)["labels"]
    submitted = float(created.pop("deft-aoi.submitted"))  # the job's timeout counts from here, across restarts
    assert abs(submitted - time.time()) < 60
    # the step names the job among its stage's jobs; the log path is where a re-attaching deft streams it
    assert created == {"deft-aoi.job": "embedding image_embeddings", "deft-aoi.step": "0",
                       "deft-aoi.log": str(tmp_path / "r" / "embedding.log"), **labels}


def test_gpu_and_memory_settings_reach_the_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    monkeypatch.setenv("DEFT_DOCKER_GPUS", "0")
    monkeypatch.setenv("DEFT_DOCKER_MEMORY", "512m")
    monkeypatch.setenv("DEFT_FAKE_OOM_MB", "64")
    ws = WorkspaceLayout.at(tmp_path)
    runner = make_runner("docker", ws)
    assert isinstance(runner, DockerRunner)
    kwargs = runner._container_kwargs(_job(tmp_path, gpus="all", env={"HF_TOKEN": "x"}))
    assert kwargs["device_requests"] == []
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "512m"
    assert kwargs["environment"] == {"DEFT_FAKE_OOM_MB": "64", "HF_TOKEN": "x"}
    monkeypatch.setenv("DEFT_DOCKER_MEMORY", "lots")
    with pytest.raises(UsageError, match="DEFT_DOCKER_MEMORY='lots' is not a memory size"):
        make_runner("docker", ws)


def test_gpu_preflight_is_skipped_when_no_gpu_is_requested(small_ws: Path) -> None:
    from deft_aoi.runners.tao.changenet_spec import load_spec

    ws = WorkspaceLayout.at(small_ws)
    runner = DockerRunner(FakeDockerClient(state_dir=small_ws), ws, gpus=0)
    gpu = next(r for r in runner.preflight(ws, load_spec(ws.spec_file), 8) if r.name == "GPU")
    assert gpu.status == "skip" and "DEFT_DOCKER_GPUS=0" in gpu.detail


def test_a_refused_gpu_start_is_one_line_and_leaves_no_container(tmp_path: Path) -> None:
    import docker.errors

    client = FakeDockerClient(state_dir=tmp_path)

    def refuse(image: str, command: Any = None, **kwargs: Any) -> Any:
        client.containers.create(image, command, **kwargs)  # docker-py creates, then the start fails
        raise docker.errors.APIError('500 Server Error: could not select device driver "" with capabilities: '
                                     '[[gpu]]')

    client.containers.run = refuse  # type: ignore[method-assign]
    with pytest.raises(StageFailed) as err:
        DockerRunner(client, WorkspaceLayout.at(tmp_path)).run(_job(tmp_path, gpus="all"))
    assert "install nvidia-container-toolkit" in err.value.message and "\n" not in err.value.message
    assert client.containers.list(all=True) == []


@pytest.mark.parametrize(("message", "expected"), [
    ('could not select device driver "" with capabilities: [[gpu]]', True),
    ("Unknown runtime specified nvidia", True),
    ("unknown or invalid runtime name: nvidia", True),
    ("No such image: x", False),
])
def test_no_gpu_runtime_recognises_the_engines_refusals(message: str, expected: bool) -> None:
    assert no_gpu_runtime(message) is expected


def test_a_root_data_services_job_hands_its_outputs_outside_workdir_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedding job writes its parquet beside its own dir: that file must be chowned too."""
    import os

    from deft_aoi.runners.tao.commands import DataServicesContext, embedding_job

    ws = WorkspaceLayout.at(tmp_path)
    out = tmp_path / "ds" / "targets_embeddings.parquet"
    job = embedding_job(DataServicesContext(workspace=ws, image="img:1"), results_dir=tmp_path / "ds" / "embed",
                        input_parquet=tmp_path / "in.parquet", output_parquet=out)
    assert job.writes == (out,)
    client = FakeDockerClient(state_dir=tmp_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"root-owned in real life")
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    monkeypatch.setattr(os, "getgid", lambda: 4243)
    DockerRunner(client, ws).run(job)
    chown = _created(client)
    assert chown["command"] == ["chown", "-R", "4242:4243", str(job.workdir), str(out)]
    assert chown["labels"]["deft-aoi.job"] == "embedding image_embeddings (chown)"
