"""The Slurm backend's pure parts, without a cluster: state → exit code / hint, the platform section, the batch
script per launcher, and the pyxis command line checked against pyxis' documented flags (pyxis itself is not
installable here: that launcher is untested on a real cluster, and docs/PLATFORMS.md says so)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deft_aoi.errors import UsageError
from deft_aoi.runners.base import Job, JobResult, Mount, explain_exit, stage_labels
from deft_aoi.runners.factory import capabilities
from deft_aoi.runners.slurm.launch import PYXIS_FLAGS, batch_script, enroot_image, pyxis_command, sbatch_args
from deft_aoi.runners.slurm.platform import SlurmPlatform, load_platform
from deft_aoi.runners.slurm.runner import job_name, parse_scontrol
from deft_aoi.runners.slurm.states import exit_code_of, slurm_state


def _job(tmp_path: Path, **kw: object) -> Job:
    base = dict(name="visual_changenet train", image="nvcr.io/nvidia/tao/tao-toolkit:6.0.0-pyt",
                argv=("visual_changenet", "train", "-e", str(tmp_path / "spec.yaml")),
                log_file=tmp_path / "train.log", workdir=tmp_path, mounts=(Mount(tmp_path, tmp_path),),
                env={"NGC_API_KEY": "nvapi-secret", "DEFT_SEED": "1"}, timeout_s=3601.0, shm_size="8g")
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("word", "code", "expected"), [
    ("COMPLETED", "0:0", 0), ("FAILED", "3:0", 3), ("FAILED", "0:9", 137), ("TIMEOUT", "0:15", 124),
    ("OUT_OF_MEMORY", "0:125", 137), ("CANCELLED by 0", "0:15", 143), ("NODE_FAIL", "0:0", 1),
])
def test_final_states_map_to_exit_codes(word: str, code: str, expected: int) -> None:
    assert exit_code_of(word, code) == expected


def test_preempted_is_requeued_not_failed_and_every_failure_has_a_hint() -> None:
    assert slurm_state("PREEMPTED").phase == "pending" and slurm_state("PREEMPTED").requeue
    for word in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
        assert slurm_state(word).phase == "exited" and slurm_state(word).hint, word
    assert slurm_state("PENDING").phase == "pending" and slurm_state("RUNNING").phase == "running"


def test_a_failed_slurm_job_is_explained_with_its_state_and_hint(tmp_path: Path) -> None:
    job = _job(tmp_path)
    job.log_file.write_text("step 1\nKilled\n")
    result = JobResult(exit_code=137, duration_s=1.0, log_path=job.log_file, state="OUT_OF_MEMORY",
                       hint=slurm_state("OUT_OF_MEMORY").hint)
    text = explain_exit(job, result)
    assert "ended OUT_OF_MEMORY" in text and "batch_size" in text and "Killed" in text


def test_pyxis_command_uses_only_documented_flags_and_an_enroot_image(tmp_path: Path) -> None:
    argv = pyxis_command(_job(tmp_path, mounts=(Mount(tmp_path, tmp_path), Mount(Path("/data"), Path("/d"), True))))
    assert argv[0] == "srun"
    flags = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
    assert flags and set(flags) <= PYXIS_FLAGS
    assert "--container-image=nvcr.io#nvidia/tao/tao-toolkit:6.0.0-pyt" in argv
    assert f"--container-mounts={tmp_path}:{tmp_path},/data:/d:ro" in argv
    assert f"--container-workdir={tmp_path}" in argv
    assert "--container-env=DEFT_SEED,NGC_API_KEY" in argv  # names only: values travel in the environment
    # TAO runs with Slurm's task variables cleared, as NVIDIA's Slurm platform runs it (SLURM_TASK_VARS)
    assert argv[-3:-1] == ["/bin/bash", "-c"]
    assert argv[-1].endswith("; exec " + shlex.join(["visual_changenet", "train", "-e", str(tmp_path / "spec.yaml")]))
    assert "unset SLURM_NTASKS" in argv[-1] and "LOCAL_RANK" in argv[-1] and "SLURM_JOB_NAME=bash" in argv[-1]


def test_a_process_job_runs_with_the_slurm_task_variables_cleared(tmp_path: Path) -> None:
    """Run the batch script's command for real: the job sees no SLURM_NTASKS / LOCAL_RANK, so Lightning spawns
    the ranks of every GPU it is given itself (NVIDIA's Slurm platform does the same)."""
    import os
    import subprocess
    import sys

    job = _job(tmp_path, argv=("-c", "import os, sys; print(os.environ.get('SLURM_NTASKS'), "
                                     "os.environ.get('LOCAL_RANK'), os.environ['SLURM_JOB_NAME'], sys.argv[1:])",
                               "a b"))
    script = batch_script(job, SlurmPlatform(launcher="process", entry=sys.executable), "t")
    env = {**os.environ, "SLURM_NTASKS": "1", "LOCAL_RANK": "0", "SLURM_JOB_NAME": "deft.x"}
    out = subprocess.run(["bash", "-c", script.split("\n", 2)[2]], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.strip() == "None None bash ['a b']"


@pytest.mark.parametrize(("image", "expected"), [
    ("nvcr.io/nvidia/tao/tao-toolkit:6.0.0-pyt", "nvcr.io#nvidia/tao/tao-toolkit:6.0.0-pyt"),
    ("localhost:5000/x:1", "localhost:5000#x:1"),
    ("ubuntu:22.04", "ubuntu:22.04"),
    ("library/ubuntu", "library/ubuntu"),
])
def test_enroot_image(image: str, expected: str) -> None:
    assert enroot_image(image) == expected


def test_batch_script_never_holds_a_secret_and_sbatch_asks_for_what_the_platform_says(tmp_path: Path) -> None:
    job = _job(tmp_path)
    for launcher in ("pyxis", "docker", "process"):
        script = batch_script(job, SlurmPlatform(launcher=launcher, entry="python -m stand.in"), "t")
        assert "nvapi-secret" not in script and script.startswith("#!/bin/bash\n")
        assert shlex.split(script.splitlines()[-1])[0] == "exec"
    platform = SlurmPlatform(partition="gpu", account="aoi", qos="high", gpus=2, cpus=8, mem="64G")
    args = sbatch_args(job, platform, name="deft.r.baseline.train.0", output="/o", comment="c")
    for flag in ("--partition=gpu", "--account=aoi", "--qos=high", "--gpus-per-node=2", "--cpus-per-task=8",
                 "--mem=64G", "--time=61", "--requeue", "--export=ALL", "--job-name=deft.r.baseline.train.0"):
        assert flag in args
    assert "--time=04:00:00" in sbatch_args(job, SlurmPlatform(time="04:00:00"), name="n", output="/o", comment="c")


def test_platform_section_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "platform.yaml").write_text("slurm:\n  partition: gpu\n  gpus: 4\n  launcher: docker\n")
    monkeypatch.setenv("DEFT_SLURM_PARTITION", "debug")
    platform = load_platform(tmp_path)
    assert (platform.partition, platform.gpus, platform.launcher) == ("debug", 4, "docker")
    assert "platform.yaml" in platform.source and "DEFT_SLURM_PARTITION" in platform.source
    (tmp_path / "platform.yaml").write_text("slurm:\n  partitoin: gpu\n")
    with pytest.raises(UsageError, match="unknown slurm platform setting"):
        load_platform(tmp_path)
    monkeypatch.setenv("DEFT_SLURM_LAUNCHER", "kubernetes")
    (tmp_path / "platform.yaml").unlink()
    with pytest.raises(UsageError, match="choose pyxis, docker, process"):
        load_platform(tmp_path)


def test_job_names_and_scontrol_parsing() -> None:
    labels = stage_labels("run_1", "iter2", "train", "2026-12-07T14:50:54Z")
    assert job_name(labels, 0) == "deft.run_1.iter2.train.20261207T145054Z.0"
    redone = stage_labels("run_1", "iter2", "train", "2026-12-07T15:02:10Z")
    assert job_name(redone, 0) != job_name(labels, 0), "a redone stage must not find its failed attempt's job"
    info = parse_scontrol("JobId=7 JobName=x JobState=PENDING Reason=ReqNodeNotAvail,_UnavailableNodes:vm "
                          "ExitCode=0:0 Comment=job=visual_changenet+train&log=%2Fa%2Fb.log")
    assert info["JobState"] == "PENDING" and info["Reason"].startswith("ReqNodeNotAvail")
    assert info["Comment"] == "job=visual_changenet+train&log=%2Fa%2Fb.log"


def test_capabilities_answer_for_every_backend_and_refuse_unknown_ones() -> None:
    assert capabilities("slurm").durable and capabilities("docker").durable and capabilities("fake").durable
    assert not capabilities("local").durable and capabilities("local").in_process
    with pytest.raises(UsageError, match="unknown backend"):
        capabilities("k8s")
