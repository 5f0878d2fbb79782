"""The one narrow interface between stages and heavy compute.

A stage describes a Job (what TAO would run); a Runner executes it: in a docker container (real or fake
client) or in-process (local backend). Stages never touch docker or torch directly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from deft_aoi.errors import Interrupted, StageFailed

if TYPE_CHECKING:
    from deft_aoi.checks import CheckResult
    from deft_aoi.runners.gpus import GpuPlan
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout


LABEL_JOB = "deft-aoi.job"
GPU_CHECK = "GPUs per job"  # the Pre-Flight Summary row each runner writes from its GpuPlan
LABEL_RUN = "deft-aoi.run"
LABEL_ITERATION = "deft-aoi.iteration"
LABEL_STAGE = "deft-aoi.stage"


LABEL_ATTEMPT = "deft-aoi.attempt"  # the stage attempt's start: a redone stage never re-attaches to its old jobs


def stage_labels(run_id: str, iteration: str, stage: str, attempt: str | None = None) -> dict[str, str]:
    """Container labels naming the stage a job belongs to, so a resumed run can find what a killed deft left.
    `attempt` (the stage record's started_at, kept when a resumed deft re-attaches, new when it redoes the
    stage) tells this attempt's jobs from an earlier attempt's finished ones, which Slurm keeps listing."""
    labels = {LABEL_RUN: run_id, LABEL_ITERATION: iteration, LABEL_STAGE: stage}
    if attempt is not None:
        labels[LABEL_ATTEMPT] = re.sub(r"[^0-9A-Za-z]", "", attempt)
    return labels


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


JobPhase = Literal["pending", "running", "exited", "gone"]


@dataclass(frozen=True)
class JobHandle:
    """What deft needs to find a job again from another process: written to the stage record before waiting."""

    backend: str  # the runner family that owns `job_id` (docker, slurm)
    job_id: str  # container id, Slurm job id
    name: str  # Job.name, e.g. "visual_changenet train"
    run_id: str
    iteration: str
    stage: str
    step: int
    submitted_at: float  # epoch seconds
    log_path: str
    exit_code: int | None = None  # set once collected
    state: str | None = None  # the backend's own final state word (COMPLETED, OOMKilled, TIMEOUT...), once collected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobHandle:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def collected(self) -> bool:
        return self.exit_code is not None

    def elapsed(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.submitted_at)


@dataclass(frozen=True)
class JobStatus:
    """A job's state as its backend reports it now."""

    phase: JobPhase
    exit_code: int | None = None
    state: str = ""  # the backend's word (docker: running/exited; Slurm: PENDING, RUNNING, TIMEOUT...)
    reason: str = ""  # why it waits or how it ended (Slurm's Reason: Resources, ReqNodeNotAvail...)

    @property
    def done(self) -> bool:
        return self.phase in ("exited", "gone")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers ask this instead of comparing backend names (only runners/ knows them)."""

    durable: bool  # jobs outlive deft; resume re-attaches
    containers: bool  # jobs run TAO's container images (Data Services exists only as one)
    in_process: bool  # jobs run inside deft (the local backend's PyTorch model)
    default_gpus: int | str  # what a job asks for unless told otherwise (recorded as the run's num_gpus)


LOCAL_CAPABILITIES = Capabilities(durable=False, containers=False, in_process=True, default_gpus=0)
DOCKER_CAPABILITIES = Capabilities(durable=True, containers=True, in_process=False, default_gpus="all")
SLURM_CAPABILITIES = Capabilities(durable=True, containers=True, in_process=False, default_gpus=1)


class JobJournal(Protocol):
    """Where handles are recorded durably (the engine: the stage's record in deft_state.json)."""

    def recorded(self, labels: Mapping[str, str], step: int) -> JobHandle | None: ...

    def record(self, handle: JobHandle) -> None:
        """Persist `handle` (replacing the one of the same step); may raise JobDetached after persisting."""
        ...


class JobDetached(Interrupted):
    """`--detach`: deft leaves after recording a running job's handle; the job goes on without it. An Interrupted,
    so code that lets a user's stop through (an advisory job's `except DeftError`) lets this through too; the
    engine catches it first and leaves the stage in progress."""

    exit_code = 0


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

    def gpu_plan(self, image: str) -> GpuPlan:
        """The GPUs each job of `image` is given and how TAO is told (runners/gpus.py); resolved once."""
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
    from deft_aoi.runners.tao.outputs import STATUS_FILE, failure_record

    # TAO swallows an interruption after logging FAILURE and exits 0: exit 0 alone is no success.
    failure = failure_record(job.log_file.parent / STATUS_FILE)
    if failure is not None:
        raise StageFailed(f"{job.name} exited 0 but its {job.log_file.parent / STATUS_FILE} ends its run with a "
                          f"FAILURE record: {failure.get('message', '')!r}. Log: {job.log_file}")
    return result
