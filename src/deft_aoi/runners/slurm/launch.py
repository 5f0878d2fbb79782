"""The batch script of one TAO job on a Slurm node, by launcher (platform.yaml `launcher`):

- pyxis: `srun --container-image=… --container-mounts=… --container-workdir=…` (NVIDIA's clusters; the pyxis
  SPANK plugin runs the image through enroot). Built from pyxis' documented flags (PYXIS_FLAGS, from its wiki's
  Usage page); NOT tested on a real pyxis cluster — pyxis/enroot cannot be installed on the CI machine.
- docker: `docker run --rm …` on the node, as the docker backend runs it locally.
- process: the command itself (TAO's pip package in a venv on the node; deft's stand-in in the Slurm tier).

Secrets never enter the script: they reach the job as sbatch's environment (`--export=ALL`), and docker / pyxis
pass named variables on from there.
"""

from __future__ import annotations

import shlex

from deft_aoi.runners.base import Job
from deft_aoi.runners.slurm.platform import SlurmPlatform

# Every pyxis flag this module may emit, as `srun --help` lists them with pyxis loaded (github.com/NVIDIA/pyxis,
# wiki "Usage"). A test checks the built command line uses these and only these.
PYXIS_FLAGS = frozenset({
    "--container-image", "--container-mounts", "--container-workdir", "--container-name", "--container-save",
    "--container-mount-home", "--no-container-mount-home", "--container-remap-root", "--no-container-remap-root",
    "--container-entrypoint", "--no-container-entrypoint", "--container-writable", "--container-readonly",
    "--container-env",
})


def enroot_image(image: str) -> str:
    """A docker reference as enroot spells it: `nvcr.io/nvidia/tao/x:tag` → `nvcr.io#nvidia/tao/x:tag` (enroot
    separates the registry with `#`); an image without a registry part stays as it is."""
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return image


def pyxis_command(job: Job) -> list[str]:
    mounts = ",".join(f"{m.host}:{m.container}" + (":ro" if m.read_only else "") for m in job.mounts)
    argv = ["srun", f"--container-image={enroot_image(job.image)}"]
    if mounts:
        argv.append(f"--container-mounts={mounts}")
    # TAO's containers expect root (Data Services looks the user up; CONTRACTS §7): remapped, no real privilege.
    argv += [f"--container-workdir={job.workdir}", "--container-remap-root", "--no-container-mount-home"]
    if job.env:
        argv.append(f"--container-env={','.join(sorted(job.env))}")
    return [*argv, *job.argv]


# The docker launcher's GPU request, expanded by the batch script's shell on the node: the GPUs Slurm allocated
# (SLURM_JOB_GPUS: the node's own indices, which the Docker daemon, outside the job's cgroup, uses too), in the
# double quotes docker's --gpus needs around a list (`--gpus '"device=1,2"'`, docs.docker.com "Access an NVIDIA
# GPU"; unquoted, its CSV parser splits `device=1,2` at the comma).
GPU_DEVICES_VAR = "DEFT_GPU_DEVICES"
GPU_DEVICES_LINE = f'{GPU_DEVICES_VAR}="\\"device=${{SLURM_JOB_GPUS:-${{CUDA_VISIBLE_DEVICES:-0}}}}\\""\n'
_GPU_PLACEHOLDER = "@DEFT_GPU_DEVICES@"  # replaced in batch_script by the shell variable


def docker_command(job: Job, gpus: int) -> list[str]:
    """`docker run` on the node; with GPUs, `--gpus` takes the allocation's device ids (GPU_DEVICES_LINE)."""
    argv = ["docker", "run", "--rm", "--init", "-w", str(job.workdir)]
    for m in job.mounts:
        argv += ["-v", f"{m.host}:{m.container}" + (":ro" if m.read_only else "")]
    for name in sorted(job.env):
        argv += ["-e", name]  # the value comes from the job's environment, never the script
    if job.shm_size:
        argv += ["--shm-size", job.shm_size]
    if gpus:
        argv += ["--gpus", _GPU_PLACEHOLDER]
    return [*argv, job.image, *job.argv]


def job_command(job: Job, platform: SlurmPlatform) -> list[str]:
    if platform.launcher == "pyxis":
        return pyxis_command(job)
    if platform.launcher == "docker":
        return docker_command(job, platform.gpus)
    return [*platform.entry_argv, *job.argv]


def batch_script(job: Job, platform: SlurmPlatform, title: str) -> str:
    command = shlex.join(job_command(job, platform))
    gpus = ""
    if shlex.quote(_GPU_PLACEHOLDER) in command:
        gpus = GPU_DEVICES_LINE
        command = command.replace(shlex.quote(_GPU_PLACEHOLDER), f'"${GPU_DEVICES_VAR}"')
    return ("#!/bin/bash\n"
            f"# deft-aoi: {title}\n"
            f"cd {shlex.quote(str(job.workdir))}\n"
            f"{gpus}exec {command}\n")


def minutes(seconds: float) -> int:
    """Slurm's --time in whole minutes, rounded up (at least one)."""
    return max(1, -(-int(seconds) // 60))


def sbatch_args(job: Job, platform: SlurmPlatform, *, name: str, output: str, comment: str) -> list[str]:
    args = ["--parsable", f"--job-name={name}", f"--output={output}", "--open-mode=append", "--export=ALL",
            "--requeue", f"--comment={comment}", f"--chdir={job.workdir}"]
    # The platform's settings that map one to one onto an sbatch option; an unset one leaves Slurm's default.
    options = {"partition": platform.partition, "account": platform.account, "qos": platform.qos,
               "gpus-per-node": platform.gpus, "cpus-per-task": platform.cpus, "mem": platform.mem}
    args += [f"--{option}={value}" for option, value in options.items() if value]
    if platform.time:
        args.append(f"--time={platform.time}")
    elif job.timeout_s is not None:
        args.append(f"--time={minutes(job.timeout_s)}")
    return [*args, *platform.extra]
