"""The one narrow interface between stages and heavy compute.

A stage describes a Job (what TAO would run); a Runner executes it: in a docker container (real or fake
client) or in-process (local backend). Stages never touch docker or torch directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from deft_aoi.errors import StageFailed

if TYPE_CHECKING:
    from deft_aoi.checks import CheckResult
    from deft_aoi.runners.jobs import Capabilities, JobJournal
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout


LABEL_JOB = "deft-aoi.job"
LABEL_RUN = "deft-aoi.run"
LABEL_ITERATION = "deft-aoi.iteration"
LABEL_STAGE = "deft-aoi.stage"


def stage_labels(run_id: str, iteration: str, stage: str) -> dict[str, str]:
    """Container labels naming the stage a job belongs to, so a resumed run can find what a killed deft left."""
    return {LABEL_RUN: run_id, LABEL_ITERATION: iteration, LABEL_STAGE: stage}


@dataclass(frozen=True)
class Mount:
    host: Path
    container: Path
    read_only: bool = False


@dataclass(frozen=True)
class Job:
    """What to run. `argv` is the TAO entrypoint command line, e.g.
    ("visual_changenet", "train", "-e", "/ws/results/run_x/iter1/train/spec.yaml", "results_dir=...")."""

    name: str
    image: str
    argv: tuple[str, ...]
    log_file: Path
    workdir: Path
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # may hold secrets: never log these values
    gpus: int | str = "all"
    user: str | None = None  # "uid:gid"; None = the image's default user
    timeout_s: float | None = None
    shm_size: str | None = None
    ipc_host: bool = False  # NVIDIA: shm_size, not --ipc=host (tao/commands.SHM_SIZE)
    labels: Mapping[str, str] = field(default_factory=dict)  # container labels: run id, iteration, stage
    writes: tuple[Path, ...] = ()  # outputs outside `workdir`; a root container's are handed back to the caller


@dataclass(frozen=True)
class JobResult:
    exit_code: int
    duration_s: float
    log_path: Path
    state: str | None = None  # the backend's word for how it ended (Slurm: FAILED, OUT_OF_MEMORY, NODE_FAIL...)
    hint: str | None = None  # what to do about it, from the backend that knows (runners/slurm/states.py)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Runner(Protocol):
    """Executes jobs. Implementations: DockerRunner (docker-py or the fake client), SlurmRunner, LocalRunner.

    Durable runners (`capabilities.durable`) run each job as a handle (runners/jobs.py): submitted, recorded in
    `journal` before deft waits, re-attached by a resumed deft. `run` is submit + wait for every runner."""

    name: str
    capabilities: Capabilities
    journal: JobJournal | None  # set by the loop for the stage running now; None outside the loop

    def run(self, job: Job) -> JobResult:
        """Run to completion (or re-attach to the job an earlier deft left). Raises StageFailed on timeout;
        returns non-zero exit codes as results."""
        ...

    def stop(self) -> None:
        """Stop the job in flight (Ctrl-C). Safe to call when nothing runs."""
        ...

    def preflight(self, workspace: WorkspaceLayout, spec: ChangeNetSpec, batch_size: int, *,
                  mining_engine: str | None = None) -> list[CheckResult]:
        """Backend checks of CONTRACTS §4: images, credentials, GPU (and, for TAO containers, TAO's rules).
        Never prints secrets."""
        ...


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a job log, cleaned: a crashed writer's NUL bytes or binary junk never travel on."""
    from deft_aoi.textutil import read_text_lenient

    try:
        text = read_text_lenient(path).splitlines()
    except FileNotFoundError:
        return "(no log)"
    except OSError as exc:
        return f"(log unreadable: {exc.strerror})"
    return "\n".join(line for line in text[-lines:] if line.strip())


def explain_exit(job: Job, result: JobResult) -> str:
    if result.state and result.hint:
        return (f"{job.name}: ended {result.state} (exit code {result.exit_code}) — {result.hint}. "
                f"Log: {result.log_path}\n{log_tail(result.log_path)}")
    if result.exit_code == 137:
        return (f"{job.name}: killed (exit 137) — out of memory? lower batch_size "
                f"(dataset.classify.batch_size). Log: {result.log_path}")
    return f"{job.name}: exited with code {result.exit_code}. Log: {result.log_path}\n{log_tail(result.log_path)}"


def run_checked(runner: Runner, job: Job) -> JobResult:
    """Run a job and turn a failure into StageFailed with an explanation and the log's tail."""
    result = runner.run(job)
    if not result.ok:
        raise StageFailed(explain_exit(job, result))
    return result
