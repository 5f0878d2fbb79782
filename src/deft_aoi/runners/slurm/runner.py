"""SlurmRunner: each TAO job is a Slurm batch job, driven as a handle (runners/jobs.py).

Submit: `sbatch --parsable` with a script from launch.py; the job's name `deft.<run>.<iteration>.<stage>.<step>`
finds it again from another deft (never two jobs for one stage: `squeue --name` before submitting). Its output file
(`<log>.slurm.out`, on the shared file system the workspace lives on) is copied, redacted, into the stage's log
as it grows. Poll: `scontrol show job -o` (the controller keeps finished jobs for MinJobAge), else `sacct` where
accounting runs. States map to deft's phases, exit codes and hints in states.py; PREEMPTED is requeued
(`scontrol requeue`), not failed; a pending job's Reason (Resources, ReqNodeNotAvail, a drained node) is shown.
Ctrl-C cancels the job (`scancel`); anything else that stops deft leaves it to Slurm, and `deft resume`
re-attaches. The stage timeout is Slurm's own `--time` (TIMEOUT) and deft's, counted from the submission.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode

from deft_aoi.errors import Interrupted, StageFailed
from deft_aoi.runners.base import GPU_CHECK, LABEL_ATTEMPT, LABEL_ITERATION, LABEL_RUN, LABEL_STAGE, Job, JobResult
from deft_aoi.runners.gpus import GpuPlan, shown
from deft_aoi.runners.jobs import (
    SLURM_CAPABILITIES,
    JobHandle,
    JobJournal,
    JobStatus,
    StepCounter,
    remaining_timeout,
    run_durable,
)
from deft_aoi.runners.slurm.launch import batch_script, sbatch_args
from deft_aoi.runners.slurm.platform import SlurmPlatform, load_platform
from deft_aoi.runners.slurm.states import exit_code_of, slurm_state
from deft_aoi.secrets import redact, remember_secret_values

if TYPE_CHECKING:
    from deft_aoi.checks import CheckResult
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout

SLURM_HINT = "install Slurm's client commands (sbatch, squeue, scontrol, scancel) and munge on this machine"


def job_name(labels: Mapping[str, str], step: int) -> str:
    """`deft.<run>.<iteration>.<stage>.<attempt>.<step>`: Slurm lists finished jobs too (MinJobAge, sacct), so the
    stage attempt keeps a redone stage from re-attaching to the job its failed attempt left."""
    return ".".join(["deft", labels.get(LABEL_RUN, "adhoc"), labels.get(LABEL_ITERATION, "-"),
                     labels.get(LABEL_STAGE, "-"), labels.get(LABEL_ATTEMPT, "-"), str(step)])


def parse_scontrol(line: str) -> dict[str, str]:
    """`scontrol show job -o` (one line of Key=Value pairs) → dict; values may not contain spaces except the last."""
    out: dict[str, str] = {}
    for match in re.finditer(r"(\w[\w/:]*)=(\S*)", line):
        out.setdefault(match.group(1), match.group(2))
    return out


class SlurmRunner:
    name = "slurm"
    capabilities = SLURM_CAPABILITIES

    def __init__(self, workspace: WorkspaceLayout, platform: SlurmPlatform | None = None) -> None:
        self.workspace = workspace
        self.platform = platform or load_platform(workspace.root)
        self.journal: JobJournal | None = None
        self._steps = StepCounter()
        self._current: JobHandle | None = None
        self._said_reason: dict[str, str] = {}

    # ------------------------------------------------------------------ slurm commands
    def _cmd(self, argv: list[str], *, env: Mapping[str, str] | None = None, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if shutil.which(argv[0]) is None:
            raise StageFailed(f"`{argv[0]}` not found: the Slurm backend needs Slurm's client commands",
                              hint=SLURM_HINT)
        import os

        full_env = {**os.environ, **dict(env or {})}
        done = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise StageFailed(f"`{' '.join(argv[:2])}` failed (exit {done.returncode}): "
                              f"{redact((done.stderr or done.stdout).strip())}",
                              hint="check that slurmctld answers (`sinfo`) and that munge runs")
        return done

    # ------------------------------------------------------------------ JobBackend
    def run(self, job: Job) -> JobResult:
        from deft_aoi.console import say

        return run_durable(self, job, step=self._steps.next(job.labels), journal=self.journal, say=say)

    def submit(self, job: Job, step: int) -> JobHandle:
        remember_secret_values(job.env)
        labels = dict(job.labels)
        name = job_name(labels, step)
        job.log_file.parent.mkdir(parents=True, exist_ok=True)
        script = job.log_file.with_suffix(".sbatch")
        script.write_text(batch_script(job, self.platform, f"{job.name} ({name})"), encoding="utf-8")
        output = self._output(job.log_file)
        output.unlink(missing_ok=True)
        job.log_file.write_text(f"$ {redact(' '.join(job.argv))}\n", encoding="utf-8")
        # scontrol prints Key=Value pairs split on spaces: the comment is URL-encoded so it holds none.
        comment = urlencode({"job": job.name, "log": str(job.log_file)})
        argv = ["sbatch", *sbatch_args(job, self.platform, name=name, output=str(output), comment=comment),
                str(script)]
        submitted = time.time()
        done = self._cmd(argv, env={**dict(job.env), "DEFT_SLURM_STEP": str(step)})
        job_id = done.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise StageFailed(f"sbatch printed no job id: {redact(done.stdout.strip())!r}")
        return JobHandle(backend="slurm", job_id=job_id, name=job.name, run_id=labels.get(LABEL_RUN, ""),
                         iteration=labels.get(LABEL_ITERATION, ""), stage=labels.get(LABEL_STAGE, ""), step=step,
                         submitted_at=submitted, log_path=str(job.log_file))

    @staticmethod
    def _output(log_file: Path) -> Path:
        return log_file.with_name(log_file.name + ".slurm.out")

    def find(self, labels: Mapping[str, str], step: int) -> list[JobHandle]:
        """Jobs named for this stage and step that the controller still knows (pending, running, or finished
        within MinJobAge), oldest first."""
        name = job_name(labels, step)
        done = self._cmd(["squeue", "-h", "-t", "all", f"--name={name}", "-o", "%i"], check=False)
        handles = []
        for job_id in sorted({w for w in done.stdout.split() if w.isdigit()}, key=int):
            info = self._show(job_id)
            if info is None:
                continue
            meta = _comment(info.get("Comment", ""))
            handles.append(JobHandle(
                backend="slurm", job_id=job_id, name=meta.get("job", "?"), run_id=labels.get(LABEL_RUN, ""),
                iteration=labels.get(LABEL_ITERATION, ""), stage=labels.get(LABEL_STAGE, ""), step=step,
                submitted_at=_epoch(info.get("SubmitTime", "")), log_path=meta.get("log", "")))
        return handles

    def _show(self, job_id: str) -> dict[str, str] | None:
        done = self._cmd(["scontrol", "show", "job", "-o", job_id], check=False)
        if done.returncode != 0 or "JobId=" not in done.stdout:
            return None
        return parse_scontrol(done.stdout.strip().splitlines()[0])

    def _sacct(self, job_id: str) -> tuple[str, str] | None:
        done = self._cmd(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode"], check=False)
        line = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
        state, _, code = line.partition("|")
        return (state, code) if state else None

    def poll(self, handle: JobHandle) -> JobStatus:
        info = self._show(handle.job_id)
        if info is not None:
            word, code, reason = info.get("JobState", ""), info.get("ExitCode", "0:0"), info.get("Reason", "")
        elif (acct := self._sacct(handle.job_id)) is not None:
            (word, code), reason = acct, ""
        else:
            return JobStatus(phase="gone", state="unknown to Slurm")
        state = slurm_state(word)
        if state.phase == "exited":
            return JobStatus(phase="exited", exit_code=exit_code_of(word, code), state=word.split()[0],
                             reason=state.hint)
        return JobStatus(phase=state.phase, state=word.split()[0] if word else "PENDING",
                         reason="" if reason in ("None", "(null)") else reason)

    def cancel(self, handle: JobHandle) -> None:
        with contextlib.suppress(StageFailed, subprocess.SubprocessError, OSError):
            self._cmd(["scancel", handle.job_id], check=False)

    def wait(self, handle: JobHandle, job: Job, *, reattached: bool) -> JobResult:
        from deft_aoi.console import say

        output = self._output(job.log_file)
        copied = 0
        self._current = handle
        try:
            with open(job.log_file, "w", encoding="utf-8") as log:
                log.write(f"$ {redact(' '.join(job.argv))}\n")
                log.write(f"[deft] Slurm job {handle.job_id}" + (" (re-attached)" if reattached else "") + "\n")
                log.flush()
                while True:
                    status = self.poll(handle)
                    copied = _copy_new(output, log, copied)
                    if status.phase == "pending" and slurm_state(status.state).requeue:
                        self._cmd(["scontrol", "requeue", handle.job_id], check=False)
                        log.write(f"[deft] job {handle.job_id} was preempted: requeued\n")
                        say(f"  Slurm job {handle.job_id} was preempted: requeued, waiting for it to run again")
                    elif status.phase == "pending" and status.reason and \
                            self._said_reason.get(handle.job_id) != status.reason:
                        self._said_reason[handle.job_id] = status.reason
                        say(f"  Slurm job {handle.job_id} pending: {status.reason}")
                        log.write(f"[deft] pending: {status.reason}\n")
                    if status.done:
                        break
                    left = remaining_timeout(job, handle)
                    if left is not None and left <= 0:
                        self.cancel(handle)
                        log.write(f"[deft] timed out after {job.timeout_s:g}s: Slurm job cancelled\n")
                        raise StageFailed(
                            f"{job.name}: timed out after {job.timeout_s:g}s; the Slurm job {handle.job_id} was "
                            f"cancelled (the time counts from its submission, across deft restarts). "
                            f"Log: {job.log_file}",
                            hint="raise the stage timeout, or check the log tail for a stuck step")
                    log.flush()
                    time.sleep(self.platform.poll_s)
                time.sleep(0.2)  # the node may flush the last lines just after the state changes
                _copy_new(output, log, copied)
        except KeyboardInterrupt as exc:
            self.cancel(handle)
            raise Interrupted(f"{job.name}: interrupted; Slurm job {handle.job_id} was cancelled. "
                              "Resume the run to continue from this stage.") from exc
        finally:
            self._current = None
        if status.phase == "gone":
            raise StageFailed(f"{job.name}: Slurm no longer knows job {handle.job_id} (older than MinJobAge and no "
                              "accounting); resume to run the stage again")
        code = status.exit_code if status.exit_code is not None else 1
        state = status.state or "COMPLETED"
        return JobResult(exit_code=code, duration_s=handle.elapsed(), log_path=job.log_file,
                         state=None if code == 0 else state, hint=status.reason or None)

    def stop(self) -> None:
        if self._current is not None:
            self.cancel(self._current)

    def gpu_plan(self, image: str) -> GpuPlan:
        """`--gpus-per-node=N` for every job (the platform's gpus, or --gpus); the job sees its N as 0..N-1."""
        n = self.platform.gpus
        asked = f"--gpus-per-node={n} per job" if n else "none (gpus: 0, a CPU stand-in)"
        where = f"partition {self.platform.partition}" if self.platform.partition else "default partition"
        return GpuPlan(n, f"--gpus-per-node={n}", shown(f"{asked}, {where}", n))

    # ------------------------------------------------------------------ preflight
    def preflight(self, workspace: WorkspaceLayout, spec: ChangeNetSpec, batch_size: int, *,
                  mining_engine: str | None = None) -> list[CheckResult]:
        from deft_aoi.checks import failed, passed, warned
        from deft_aoi.runners.tao.checks import spec_schema_check, tao_rule_checks
        from deft_aoi.runners.tao.versions import load_versions

        results: list[CheckResult] = []
        try:
            versions = load_versions(workspace)
        except Exception as exc:  # a DeftError explains itself
            return [failed("container images", str(exc))]
        plan = self.gpu_plan(versions.pyt)
        results.append(passed(GPU_CHECK, plan.shown))
        results.append(spec_schema_check(workspace, spec, image=versions.pyt, batch_size=batch_size, gpu_plan=plan))
        results.extend(tao_rule_checks(workspace, spec, pyt_image=versions.pyt, ds_image=versions.data_services,
                                       batch_size=batch_size, mining_engine=mining_engine,
                                       real_tao=self.platform.launcher != "process", gpu_plan=plan))
        missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel", "sinfo") if shutil.which(c) is None]
        if missing:
            results.append(failed("Slurm", f"{', '.join(missing)} not found; {SLURM_HINT}"))
            return results
        part = self.platform.partition
        done = subprocess.run(["sinfo", "-h", "-o", "%P|%a|%D|%T|%G", *([f"--partition={part}"] if part else [])],
                              capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            results.append(failed("Slurm", f"sinfo failed: {redact(done.stderr.strip())} (is slurmctld up, "
                                           "munge running?)"))
            return results
        rows = [line.split("|") for line in done.stdout.strip().splitlines() if line.count("|") == 4]
        if not rows:
            results.append(failed("Slurm", f"no partition {part!r} (sinfo lists none)" if part
                                  else "sinfo lists no partition"))
            return results
        states = sorted({r[3] for r in rows})
        usable = [r for r in rows if r[3].rstrip("*~#") in ("idle", "mixed", "allocated", "completing")]
        detail = (f"partition {rows[0][0]} ({rows[0][1]}; nodes: {', '.join(states)}; gres {rows[0][4]}); "
                  f"launcher {self.platform.launcher}; platform from {self.platform.source}")
        results.append(passed("Slurm", detail) if usable else
                       warned("Slurm", detail + " — no node can run a job now; jobs will pend"))
        if self.platform.launcher == "pyxis":
            results.append(warned("pyxis", "jobs run through pyxis/enroot (srun --container-image): deft's "
                                           "command line follows pyxis' documented flags but was not tested on a "
                                           "real pyxis cluster; NGC images need enroot credentials "
                                           "(~/.config/enroot/.credentials)"))
        return results


def _copy_new(output: Path, log: object, offset: int) -> int:
    """Append what Slurm wrote to the job's output file since `offset` to the stage log, redacted."""
    try:
        with open(output, "rb") as src:
            src.seek(offset)
            data = src.read()
    except FileNotFoundError:
        return offset
    if not data:
        return offset
    end = data.rfind(b"\n") + 1  # whole lines only; the rest comes with the next poll
    if end == 0:
        return offset
    text = data[:end].decode("utf-8", errors="replace")
    log.write("".join(redact(line) + "\n" for line in text.splitlines()))  # type: ignore[attr-defined]
    return offset + end


def _comment(text: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(text).items() if v}


def _epoch(stamp: str) -> float:
    """scontrol's `2026-12-07T14:30:00` (the controller's local time) → epoch seconds; now when unparsable."""
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return time.time()
