"""Jobs are handles, not calls: submit → JobHandle → poll / follow logs / cancel / collect.

A backend whose jobs can outlive deft (a container, a Slurm job) implements `JobBackend`; `run_durable` drives
one job through it the same way for every such backend (Dagster's step launcher and submitit's job objects are
the shape):

1. a job this stage already collected with exit 0 (recorded in the journal, before a crash) is not run again;
2. a job carrying this stage's labels and step number that an earlier deft left (running or finished) is
   re-attached — found by its labels, so a crash between submit and the journal write cannot start a second;
3. otherwise the job is submitted, and its handle is written to the journal (the stage's record in
   `deft_state.json`) BEFORE deft waits on it;
4. waiting streams the job's log into the stage's log file and counts the job's timeout from its submission,
   across restarts; the result is collected (exit state, log, clean-up) and written to the journal too.

Ctrl-C cancels the job (its meaning is unchanged); any other way deft stops — SIGKILL, a dropped SSH session,
`--detach` — leaves the job running for `deft resume` to re-attach.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from deft_aoi.errors import DeftError
from deft_aoi.runners.base import (
    DOCKER_CAPABILITIES,
    LABEL_ITERATION,
    LABEL_RUN,
    LABEL_STAGE,
    LOCAL_CAPABILITIES,
    SLURM_CAPABILITIES,
    Capabilities,
    Job,
    JobDetached,
    JobHandle,
    JobJournal,
    JobResult,
    JobStatus,
)

# The handle types live in base.py (the interface every runner shares); this module drives them. Re-exported
# so callers import everything about jobs from here.
__all__ = ["DOCKER_CAPABILITIES", "LABEL_STEP", "LABEL_SUBMITTED", "LOCAL_CAPABILITIES", "SLURM_CAPABILITIES",
           "Capabilities", "JobBackend", "JobDetached", "JobHandle", "JobJournal", "JobStatus", "StepCounter",
           "remaining_timeout", "result_state", "run_durable", "stage_key"]

LABEL_STEP = "deft-aoi.step"  # the job's position among its stage's jobs (a stage may run several)
LABEL_SUBMITTED = "deft-aoi.submitted"  # epoch seconds: the timeout counts from here, across restarts

class JobBackend(Protocol):
    name: str

    def submit(self, job: Job, step: int) -> JobHandle: ...

    def find(self, labels: Mapping[str, str], step: int) -> list[JobHandle]:
        """Jobs an earlier deft left for this stage and step (any state but removed), oldest first."""
        ...

    def poll(self, handle: JobHandle) -> JobStatus: ...

    def wait(self, handle: JobHandle, job: Job, *, reattached: bool) -> JobResult:
        """Follow the log into `job.log_file` until the job ends, enforce the timeout counted from
        `handle.submitted_at`, collect and clean up. Ctrl-C cancels the job; nothing else does."""
        ...

    def cancel(self, handle: JobHandle) -> None: ...


def stage_key(labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(run, iteration, stage) of a job's labels; None for a job outside the loop (tests, `deft mine`)."""
    try:
        return labels[LABEL_RUN], labels[LABEL_ITERATION], labels[LABEL_STAGE]
    except KeyError:
        return None


class StepCounter:
    """Numbers a stage's jobs in the order it submits them; a stage re-run after a crash submits them in the
    same order, so (stage, step) names one job across processes."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str, str], int] = {}

    def next(self, labels: Mapping[str, str]) -> int:
        key = stage_key(labels)
        if key is None:
            return 0
        step = self._next.get(key, 0)
        self._next[key] = step + 1
        return step


def run_durable(backend: JobBackend, job: Job, *, step: int, journal: JobJournal | None,
                say: Callable[[str], None] = lambda _m: None) -> JobResult:
    """One job through a durable backend: skip if collected, re-attach if left running, else submit + record,
    then wait and record the result (see the module docstring)."""
    from pathlib import Path

    labels = dict(job.labels)
    loop_job = stage_key(labels) is not None
    prior = journal.recorded(labels, step) if journal is not None and loop_job else None
    if prior is not None and prior.collected and prior.exit_code == 0 and prior.name == job.name \
            and Path(prior.log_path).is_file():
        say(f"  {job.name}: already ran to completion as {prior.backend} job {prior.job_id[:12]}; not run again")
        return JobResult(exit_code=0, duration_s=0.0, log_path=Path(prior.log_path))
    handle: JobHandle | None = None
    if prior is not None and not prior.collected and backend.poll(prior).phase != "gone":
        handle = prior  # the recorded handle first: it names the job whatever its labels say
    else:
        found = backend.find(labels, step) if loop_job else []
        for extra in found[:-1]:  # never two jobs for one step: keep the newest (only a bug could make two)
            backend.cancel(extra)
        handle = found[-1] if found else None
    if handle is not None:
        status = backend.poll(handle)
        word = "still running" if not status.done else f"finished while deft was away ({status.state or 'exited'})"
        say(f"  re-attached to {handle.backend} job {handle.job_id[:12]} ({job.name}, submitted "
            f"{_ago(handle.elapsed())} ago): {word}")
        reattached = True
    else:
        if prior is not None and not prior.collected:
            say(f"  {job.name}: {prior.backend} job {prior.job_id[:12]} recorded by an earlier deft is gone; "
                "submitting it again")
        handle = backend.submit(job, step)
        reattached = False
    if journal is not None and loop_job:
        journal.record(handle)  # BEFORE waiting: a deft killed from here on leaves a job resume can find
    try:
        result = backend.wait(handle, job, reattached=reattached)
    except (DeftError, KeyboardInterrupt):
        # Timed out, cancelled, or deft lost the backend: record the job as ended when it has (so resume redoes
        # the stage), and leave it uncollected when it may still run (so resume re-attaches to it).
        if journal is not None and loop_job:
            status = JobStatus(phase="running")
            with contextlib.suppress(Exception):
                status = backend.poll(handle)
            if status.done:
                journal.record(replace(handle, exit_code=-1 if status.exit_code is None else status.exit_code,
                                       state=status.state or status.phase))
        raise
    if journal is not None and loop_job:
        journal.record(replace(handle, exit_code=result.exit_code, state=result_state(result)))
    return result


def result_state(result: JobResult) -> str:
    return "COMPLETED" if result.ok else f"EXIT {result.exit_code}"


def remaining_timeout(job: Job, handle: JobHandle) -> float | None:
    """Seconds left of the job's timeout, counted from its submission (across deft restarts); None = untimed."""
    if job.timeout_s is None:
        return None
    return job.timeout_s - handle.elapsed()


def _ago(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
