"""Pick the runner for `--backend`: docker (docker-py, or the fake client when DEFT_DOCKER=fake), fake, local, slurm
(runners/slurm, settings from the workspace's platform.yaml). The only place backend names are compared."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import UsageError

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.runners.base import Runner
    from deft_aoi.runners.jobs import Capabilities
    from deft_aoi.workspace.layout import WorkspaceLayout

DOCKER_ENV = "DEFT_DOCKER"
GPUS_ENV = "DEFT_DOCKER_GPUS"  # overrides every job's GPU request: all, a count, ids, or 0 for none
MEMORY_ENV = "DEFT_DOCKER_MEMORY"  # caps each container's memory (docker --memory syntax: 512m, 8g)


def fake_state_dir(workspace: WorkspaceLayout) -> Path:
    """Where the fake client keeps once-fault markers: inside the workspace, so a resumed run sees them."""
    return workspace.root / ".deft_cache" / "fake_docker"


def capabilities(backend: str) -> Capabilities:
    """What `--backend NAME` can do, without constructing its runner. Code outside runners/ asks this and never
    compares backend names: a new backend is added here and in make_runner only."""
    from deft_aoi.runners.jobs import DOCKER_CAPABILITIES, LOCAL_CAPABILITIES, SLURM_CAPABILITIES

    known = {"local": LOCAL_CAPABILITIES, "docker": DOCKER_CAPABILITIES, "fake": DOCKER_CAPABILITIES,
             "slurm": SLURM_CAPABILITIES}
    if backend not in known:
        raise UsageError(f"unknown backend {backend!r}; choose {', '.join(known)}")
    return known[backend]


def check_settings(config: LoopConfig) -> None:
    """The settings that depend on what the chosen backend can do (usage errors, exit 2): for fresh runs and
    resumed ones alike. Here, not in config.py, because only runners/ knows the backends."""
    from deft_aoi.runners.gpus import GpuRequest

    backend = config.backend.value
    if config.mining_engine.value == "data_services" and not capabilities(backend).containers:
        # The local backend runs Visual ChangeNet in-process; Data Services exists only as a container.
        raise UsageError(f"--mining-engine data_services needs containers: use --backend docker, slurm (or fake), "
                         f"or --mining-engine builtin with --backend {backend}")
    if config.export.value != "none" and not capabilities(backend).containers:
        # The local backend's in-process model is not TAO's Visual ChangeNet: an ONNX of it would not be the
        # model a TAO/DeepStream consumer expects, so it is refused rather than exported differently.
        raise UsageError(f"--export {config.export.value} runs TAO's `visual_changenet export`, which needs "
                         f"containers: use --backend docker, slurm (or fake), or leave --export out with "
                         f"--backend {backend}")
    slurm_flags = {"--partition": config.partition.value, "--account": config.account.value,
                   "--qos": config.qos.value, "--time-limit": config.time_limit.value}
    given = [flag for flag, value in slurm_flags.items() if value is not None]
    if given and backend != "slurm":  # silently ignored, they would look obeyed
        raise UsageError(f"{', '.join(given)}: Slurm placement flags apply to --backend slurm, not {backend}")
    if config.gpus.value is not None:
        request = GpuRequest.parse(config.gpus.value)
        if backend == "slurm" and (request.all or request.ids):
            raise UsageError(f"--gpus {request}: Slurm allocates GPUs by count (sbatch --gpus-per-node); "
                             f"write a count such as 2")
        if backend == "local" and (request.ids or (request.count or 0) > 1):
            raise UsageError(f"--gpus {request}: the local backend trains on one device; write 1 (cuda), "
                             f"0 (cpu) or all")


def make_runner(backend: str, workspace: WorkspaceLayout, config: LoopConfig | None = None) -> Runner:
    """The runner of `backend`; `config` (a run's settings) supplies --gpus and the Slurm flags."""
    gpus_flag = config.gpus.value if config is not None else None
    if backend == "local":
        from deft_aoi.runners.local.runner import LocalRunner

        return LocalRunner(workspace, gpus=gpus_flag)
    if backend == "slurm":
        from deft_aoi.runners.slurm.platform import load_platform, with_flags
        from deft_aoi.runners.slurm.runner import SlurmRunner

        platform = load_platform(workspace.root)
        if config is not None:
            platform = with_flags(platform, partition=config.partition.value, account=config.account.value,
                                  qos=config.qos.value, time=config.time_limit.value, gpus=gpus_flag)
        return SlurmRunner(workspace, platform)
    if backend not in ("docker", "fake"):
        raise UsageError(f"unknown backend {backend!r}; choose local, docker, fake or slurm")
    from deft_aoi.runners.docker.runner import DockerRunner

    # --gpus beats DEFT_DOCKER_GPUS (an engine-wide setting of CI machines without GPUs).
    gpus = gpus_flag or os.environ.get(GPUS_ENV, "").strip() or None
    memory = os.environ.get(MEMORY_ENV, "").strip() or None
    if memory is not None and not re.fullmatch(r"\d+[bkmg]?", memory.lower()):
        raise UsageError(f"{MEMORY_ENV}={memory!r} is not a memory size; write e.g. 512m or 8g")
    if backend == "fake" or os.environ.get(DOCKER_ENV, "").strip().lower() == "fake":
        from deft_aoi.runners.fake.docker_client import FakeDockerClient

        client = FakeDockerClient(state_dir=fake_state_dir(workspace))
        return DockerRunner(client, workspace, name="docker (fake client)" if backend == "docker" else "fake",
                            gpus=gpus, mem_limit=memory)

    def connect() -> object:
        import docker

        return docker.from_env()

    return DockerRunner(connect, workspace, name="docker", gpus=gpus, mem_limit=memory)
