"""DockerRunner and `deft preflight` against a real Docker Engine (no GPU, no registry, no NVIDIA runtime):
each fault is the engine's own, not a simulation."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from deft_aoi.errors import StageFailed
from deft_aoi.runners.base import Job, Mount, run_checked
from deft_aoi.runners.docker.runner import DockerRunner
from deft_aoi.workspace.layout import WorkspaceLayout

from .helpers import SECRETS, deft_env, engine_workspace, labelled, run_deft

pytestmark = pytest.mark.requires_docker
ABSENT = "nvcr.io/nvidia/tao/tao-toolkit:0.0.0-deft-absent-pyt"


def _runner(root: Path, *, gpus: int | str | None = 0) -> DockerRunner:
    import docker

    return DockerRunner(docker.from_env, WorkspaceLayout.at(root), gpus=gpus, stop_timeout_s=1)


def _job(tmp_path: Path, image: str, argv: tuple[str, ...], **kw: Any) -> Job:
    return Job(name="engine test", image=image, argv=argv, log_file=tmp_path / "job.log", workdir=tmp_path,
               mounts=(Mount(tmp_path, tmp_path),), user=f"{os.getuid()}:{os.getgid()}",
               labels={"deft-aoi.run": tmp_path.name}, **kw)


def test_container_exiting_non_zero_fails_the_stage_with_its_log_tail(
        tmp_path: Path, standin_image: str, engine: Any) -> None:
    job = _job(tmp_path, standin_image, ("visual_changenet", "train"), gpus=0)
    with pytest.raises(StageFailed) as err:
        run_checked(_runner(tmp_path), job)
    text = err.value.render()
    assert "exited with code 1" in text and "no '-e <spec>'" in text
    assert job.log_file.read_text().splitlines()[0] == "$ visual_changenet train"


def test_timeout_stops_and_removes_the_container(tmp_path: Path, standin_image: str, engine: Any) -> None:
    job = _job(tmp_path, standin_image, ("sh", "-c", "echo started; sleep 300"), gpus=0, timeout_s=3)
    with pytest.raises(StageFailed, match="timed out after 3s; the container was stopped"):
        _runner(tmp_path).run(job)
    assert labelled(engine, run=tmp_path.name) == []
    log = job.log_file.read_text()
    assert "started" in log and "[deft] timed out after 3s" in log


def test_env_secrets_reach_the_container_but_not_its_log_or_the_console(
        tmp_path: Path, standin_image: str, engine: Any, capfd: pytest.CaptureFixture[str]) -> None:
    from deft_aoi.secrets import SECRET_NAMES, load_env_file

    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()), encoding="utf-8")
    env = {k: v for k, v in load_env_file(tmp_path / ".env").items() if k in SECRET_NAMES}
    argv = ("sh", "-c", 'printf %s "$NGC_API_KEY" | sha256sum; echo "token=$HF_TOKEN"')
    result = _runner(tmp_path).run(_job(tmp_path, standin_image, argv, gpus=0, env=env))
    assert result.exit_code == 0
    log = result.log_path.read_text()
    assert hashlib.sha256(SECRETS["NGC_API_KEY"].encode()).hexdigest() in log  # it was in the container's env
    assert "token=" in log
    seen = log + "".join(capfd.readouterr())
    for secret in SECRETS.values():
        assert secret not in seen


def test_gpu_request_without_nvidia_runtime_is_one_clear_line(tmp_path: Path, standin_image: str,
                                                              engine: Any) -> None:
    job = _job(tmp_path, standin_image, ("true",), gpus="all")
    with pytest.raises(StageFailed) as err:
        _runner(tmp_path, gpus=None).run(job)
    message = err.value.message
    assert "no NVIDIA runtime" in message and "install nvidia-container-toolkit" in message
    assert "\n" not in message and "Traceback" not in message
    assert labelled(engine, run=tmp_path.name) == []  # the refused start left no created container


def test_preflight_gpu_check_without_nvidia_runtime(deeppcb_dev: Path, tmp_path: Path, standin_image: str,
                                                    engine: Any) -> None:
    ws = engine_workspace(deeppcb_dev, tmp_path / "ws", standin_image)
    env = deft_env(ws)
    del env["DEFT_DOCKER_GPUS"]  # a GPU request, as for real TAO
    code, out = run_deft(["preflight", "-w", str(ws), "--backend", "docker"], env, timeout=300)
    assert code == 1, out
    lines = [line for line in out.splitlines() if "install nvidia-container-toolkit" in line]
    assert len(lines) == 1 and "no NVIDIA runtime" in lines[0], out
    assert "Traceback" not in out


def test_preflight_names_an_absent_unpullable_image_and_docker_login(
        deeppcb_dev: Path, tmp_path: Path, standin_image: str, engine: Any) -> None:
    ws = engine_workspace(deeppcb_dev, tmp_path / "ws", standin_image)
    (ws / "versions.yaml").write_text(
        f"images:\n  tao_toolkit:\n    pyt: {ABSENT}\n    data_services: {standin_image}\n", encoding="utf-8")
    code, out = run_deft(["preflight", "-w", str(ws), "--backend", "docker"], deft_env(ws), timeout=300)
    assert code == 1, out
    assert ABSENT in out and "docker login nvcr.io" in out
    assert "Traceback" not in out


def test_unreachable_engine_names_docker_host(deeppcb_dev: Path, tmp_path: Path, standin_image: str,
                                             engine: Any) -> None:
    ws = engine_workspace(deeppcb_dev, tmp_path / "ws", standin_image)
    socket = f"unix://{tmp_path}/no-engine.sock"
    code, out = run_deft(["preflight", "-w", str(ws), "--backend", "docker"],
                         deft_env(ws, DOCKER_HOST=socket), timeout=300)
    assert code == 1, out
    assert f"DOCKER_HOST={socket}" in out and "start dockerd" in out
    assert "Traceback" not in out
