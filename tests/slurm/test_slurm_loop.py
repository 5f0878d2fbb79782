"""`deft run --backend slurm` on a real one-node Slurm cluster, each TAO job a Slurm batch job running the stand-in,
with faults: SIGKILL deft + resume re-attaches (one Slurm job per stage step), scancel mid-job, a job past its
TimeLimit, a drained node (pending and why), a preempted job requeued."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.helpers import interrupt, only_run, run_deft, start_deft, state, wait_for

pytestmark = pytest.mark.requires_slurm
LOOP = ["--backend", "slurm", "--yes", "--max-iterations", "0", "--epochs", "2", "--seed", "1"]


def _ws(deeppcb_dev: Path, tmp_path: Path) -> Path:
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(deeppcb_dev, ws)
    (ws / "platform.yaml").write_text(
        "slurm:\n  partition: debug\n  gpus: 0\n  launcher: process\n"
        f"  entry: {sys.executable} -m deft_aoi.runners.fake.standin_entry\n  poll_s: 0.5\n", encoding="utf-8")
    return ws


def _env(ws: Path, **extra: str) -> dict[str, str]:
    import os

    import deft_aoi

    src = str(Path(deft_aoi.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFT_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": src,
                "DEFT_FAKE_STATE_DIR": str(ws / ".deft_cache" / "fake_docker")})
    env.update(extra)
    return env


def _jobs(run_id: str, stage: str = "train", iteration: str = "baseline") -> list[dict[str, str]]:
    """Every Slurm job the controller remembers (MinJobAge=3600) for one stage, by deft's job name."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T"], capture_output=True, text=True,
                         check=True).stdout
    prefix = f"deft.{run_id}.{iteration}.{stage}."
    rows = [dict(zip(("id", "name", "state"), line.split("|"), strict=True)) for line in out.splitlines() if line]
    return [r for r in rows if r["name"].startswith(prefix)]


def _sacct(run_id: str, stage: str = "train", iteration: str = "baseline") -> list[dict[str, str]]:
    """The jobs Slurm's accounting recorded as ended for one stage: `sacct --completion` over the tier's
    jobcomp/filetxt log (.ci/slurm-cluster; no slurmdbd), one line per job end."""
    out = subprocess.run(["sacct", "--completion", "-P", "-n", "-o", "JobID,JobName,State"], capture_output=True,
                         text=True, check=True).stdout
    prefix = f"deft.{run_id}.{iteration}.{stage}."
    rows = [dict(zip(("id", "name", "state"), line.split("|"), strict=True)) for line in out.splitlines() if line]
    return [r for r in rows if r["name"].startswith(prefix)]


def _train_log(ws: Path) -> Path | None:
    runs = sorted((ws / "results").glob("run_*"))
    log = runs[0] / ".scratch" / "baseline" / "train" / "train.log" if runs else None
    return log if log is not None and log.is_file() else None


def _start_slow(ws: Path, fault: str, seconds: str) -> tuple[Any, dict[str, str]]:
    env = _env(ws, DEFT_FAKE_FAULT=fault, DEFT_FAKE_SLOW_S=seconds)
    return start_deft(["run", "-w", str(ws), *LOOP], env), env


def _wait_running(ws: Path, proc: Any) -> str:
    def beating() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"deft ended early ({proc.returncode}):\n{proc.communicate()[0][-3000:]}")
        log = _train_log(ws)
        return log is not None and "heartbeat 2" in log.read_text(encoding="utf-8")

    wait_for(beating, 240, "the train job's heartbeats in the stage log")
    return only_run(ws).name


def test_the_loop_runs_on_slurm(deeppcb_dev: Path, tmp_path: Path) -> None:
    ws = _ws(deeppcb_dev, tmp_path)
    (ws / "platform.yaml").write_text((ws / "platform.yaml").read_text().replace("partition: debug", "partition: nope"))
    # The flags beat platform.yaml: a partition that does not exist there would fail every sbatch.
    flags = ["--partition", "debug", "--time-limit", "50", "--gpus", "0"]
    code, out = run_deft(["run", "-w", str(ws), *LOOP, "--max-iterations", "1", *flags], _env(ws), timeout=900)
    assert code == 0, out[-3000:]
    assert "none (gpus: 0, a CPU stand-in), partition debug" in out  # the Pre-Flight Summary's GPUs row
    run = only_run(ws)
    st = state(run)
    assert st["status"] == "finished"
    for it in ("baseline", "iter1"):
        (listed,) = _jobs(run.name, "train", it)
        assert [j["id"] for j in _sacct(run.name, "train", it)] == [listed["id"]]
        (job,) = st["iterations"][it]["stages"]["train"]["jobs"]
        assert job["backend"] == "slurm" and job["exit_code"] == 0
        shown = subprocess.run(["scontrol", "show", "job", "-o", listed["id"]], capture_output=True, text=True,
                               check=True).stdout
        assert "Partition=debug" in shown and "TimeLimit=00:50:00" in shown


def test_sigkill_and_resume_reattaches_one_slurm_job_per_stage(deeppcb_dev: Path, tmp_path: Path) -> None:
    ws = _ws(deeppcb_dev, tmp_path)
    proc, env = _start_slow(ws, "train:slow:once", "15")
    run_id = _wait_running(ws, proc)
    interrupt(proc, signal.SIGKILL)
    assert [j["state"] for j in _jobs(run_id)] == ["RUNNING"], "the Slurm job outlives deft"
    code, out = run_deft(["resume", "-w", str(ws)], env, timeout=900)
    assert code == 0, out[-3000:]
    assert "re-attached to slurm job" in out
    assert [j["state"] for j in _jobs(run_id)] == ["COMPLETED"], "one Slurm job for the stage, ever"
    assert [j["state"] for j in _sacct(run_id)] == ["COMPLETED"], "and Slurm's accounting recorded one"
    assert state(only_run(ws))["status"] == "finished"


def test_scancel_mid_job_fails_the_stage_with_slurms_word_and_resume_finishes(
        deeppcb_dev: Path, tmp_path: Path) -> None:
    ws = _ws(deeppcb_dev, tmp_path)
    proc, env = _start_slow(ws, "train:hang:once", "0")
    run_id = _wait_running(ws, proc)
    (job,) = _jobs(run_id)
    subprocess.run(["scancel", job["id"]], check=True)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, out[-3000:]
    assert "CANCELLED" in out and "cancelled outside deft" in out
    code, out = run_deft(["resume", "-w", str(ws)], env, timeout=900)
    assert code == 0, out[-3000:]
    assert len(_jobs(run_id)) == 2


def test_a_job_past_its_time_limit_is_timeout_with_the_hint(deeppcb_dev: Path, tmp_path: Path) -> None:
    ws = _ws(deeppcb_dev, tmp_path)
    with (ws / "platform.yaml").open("a", encoding="utf-8") as f:
        f.write('  time: "1"\n')  # one minute; the hanging job runs past it
    env = _env(ws, DEFT_FAKE_FAULT="train:hang:once")
    code, out = run_deft(["run", "-w", str(ws), *LOOP], env, timeout=600)
    assert code == 1, out[-3000:]
    assert "TIMEOUT" in out and "time limit" in out
    st = state(only_run(ws))
    assert st["failure"]["stage"] == "train"
    assert [j["state"] for j in _jobs(st["run_id"])] == ["TIMEOUT"]
    assert [j["state"] for j in _sacct(st["run_id"])] == ["TIMEOUT"]


def test_a_drained_node_leaves_the_job_pending_and_says_why(deeppcb_dev: Path, tmp_path: Path) -> None:
    node = subprocess.run(["sinfo", "-h", "-o", "%n"], capture_output=True, text=True, check=True).stdout.split()[0]
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=deft-test"], check=True)
    try:
        ws = _ws(deeppcb_dev, tmp_path)
        proc = start_deft(["run", "-w", str(ws), *LOOP], _env(ws))

        def pending() -> bool:
            log = _train_log(ws)
            return log is not None and "pending:" in log.read_text(encoding="utf-8")

        wait_for(pending, 240, "the train job to pend with a reason")
        log = _train_log(ws)
        assert log is not None
        reason = next(line for line in log.read_text().splitlines() if "pending:" in line)
        assert any(word in reason for word in ("ReqNodeNotAvail", "Resources", "Nodes_required")), reason
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "pending:" in out


def test_a_requeued_job_is_waited_for_not_failed(deeppcb_dev: Path, tmp_path: Path) -> None:
    """Preemption requeues a job (sbatch --requeue); `scontrol requeue` does the same to a running one."""
    ws = _ws(deeppcb_dev, tmp_path)
    proc, _env_used = _start_slow(ws, "train:slow:once", "10")
    run_id = _wait_running(ws, proc)
    (job,) = _jobs(run_id)
    subprocess.run(["scontrol", "requeue", job["id"]], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    st = state(only_run(ws))
    assert st["status"] == "finished"
    assert [j["id"] for j in _jobs(run_id)] == [job["id"]], "requeued in place: still one job"
    restarts = subprocess.run(["scontrol", "show", "job", "-o", job["id"]], capture_output=True, text=True,
                              check=True).stdout
    assert "Restarts=1" in restarts

