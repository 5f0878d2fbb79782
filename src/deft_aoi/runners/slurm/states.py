"""Slurm job states → deft's job phases, exit codes and hints (sbatch(1), squeue(1) "JOB STATE CODES").

One table, read by the runner (phase, what to do) and by `explain_exit` (the hint a failed stage shows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["pending", "running", "exited"]


@dataclass(frozen=True)
class SlurmState:
    phase: Phase
    exit_code: int | None = None  # for final states without a process exit code of their own
    hint: str = ""
    requeue: bool = False  # deft asks Slurm to requeue the job rather than failing the stage


STATES: dict[str, SlurmState] = {
    "PENDING": SlurmState("pending"),
    "CONFIGURING": SlurmState("pending"),
    "REQUEUED": SlurmState("pending"),
    "REQUEUE_HOLD": SlurmState("pending", hint="held after a requeue: `scontrol release <id>`"),
    "REQUEUE_FED": SlurmState("pending"),
    "RESIZING": SlurmState("pending"),
    "SUSPENDED": SlurmState("pending"),
    "RUNNING": SlurmState("running"),
    "COMPLETING": SlurmState("running"),
    "STAGE_OUT": SlurmState("running"),
    "SIGNALING": SlurmState("running"),
    "COMPLETED": SlurmState("exited", 0),
    "FAILED": SlurmState("exited", 1, "the job's program failed: see the log tail"),
    "CANCELLED": SlurmState("exited", 143, "cancelled outside deft (scancel or an administrator); "
                                           "`deft resume` submits it again"),
    "TIMEOUT": SlurmState("exited", 124, "ran past its Slurm time limit: raise `time` in the workspace's "
                                         "platform.yaml (slurm section) or --stage-timeout, then `deft resume`"),
    "DEADLINE": SlurmState("exited", 124, "reached its deadline before it could finish"),
    "OUT_OF_MEMORY": SlurmState("exited", 137, "out of memory: lower batch_size (dataset.classify.batch_size) "
                                               "or ask Slurm for more memory"),
    "NODE_FAIL": SlurmState("exited", 1, "its node failed; `deft resume` submits the job again "
                                          "(check `sinfo -R` for the node's reason)"),
    "BOOT_FAIL": SlurmState("exited", 1, "its node failed to boot; `deft resume` submits the job again"),
    # Preemption is not a failure: deft requeues the job (it was submitted with --requeue) and keeps waiting.
    "PREEMPTED": SlurmState("pending", requeue=True),
}


def slurm_state(word: str) -> SlurmState:
    """The entry for a state word as squeue/scontrol/sacct print it ("CANCELLED by 0" → CANCELLED)."""
    key = word.strip().split()[0].rstrip("+").upper() if word.strip() else "PENDING"
    return STATES.get(key, SlurmState("exited", 1, f"unknown Slurm state {word!r}"))


def exit_code_of(word: str, exit_field: str) -> int:
    """The job's exit code: the program's own (ExitCode=N:SIG) when it FAILED, else the state's (TIMEOUT 124,
    OUT_OF_MEMORY 137, CANCELLED 143...), so the hint follows what Slurm saw, not the signal it sent."""
    state = slurm_state(word)
    if state.exit_code is not None and state.exit_code != 1:
        return state.exit_code
    code, _, signal = exit_field.partition(":")
    if code.strip().isdigit() and int(code) != 0:
        return int(code)
    if signal.strip().isdigit() and int(signal) != 0:
        return 128 + int(signal)
    return state.exit_code if state.exit_code is not None else 1
