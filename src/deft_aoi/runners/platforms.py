"""Platform intake (`deft platforms`): what this machine can reach — local CPU/CUDA, a Docker Engine and its
GPUs, Slurm partitions and their GPUs — and the credentials each needs. Each probe is cheap and bounded:
nothing is pulled, submitted or started."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Platform:
    backend: str  # the --backend value that uses it
    name: str
    available: bool
    detail: str
    gpus: list[str] = field(default_factory=list)
    credentials: list[str] = field(default_factory=list)  # what the user must provide, never their values

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _local() -> Platform:
    cpus = os.cpu_count() or 1
    try:
        import torch
    except ImportError:
        return Platform("local", "local (in-process PyTorch)", False,
                        f"{cpus} CPU cores; torch not installed: pip install 'deft-aoi[local]'")
    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)} "
            f"({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return Platform("local", "local (in-process PyTorch)", True,
                    f"{cpus} CPU cores; torch {torch.__version__}; " + (f"{len(gpus)} CUDA GPU(s)" if gpus
                                                                        else "no CUDA GPU: runs on CPU"), gpus)


def _docker() -> Platform:
    creds = ["NGC_API_KEY (workspace .env; pulls from nvcr.io)", "HF_TOKEN (Data Services' SigLIP)"]
    try:
        import docker

        client = docker.from_env(timeout=5)
        info = client.info()
    except Exception as exc:  # no engine, no socket, no permission: all say the same to the user
        from deft_aoi.runners.docker.runner import engine_address

        return Platform("docker", "Docker Engine", False,
                        f"no engine answers at {engine_address()} ({str(exc).splitlines()[0][:120]})",
                        credentials=creds)
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    nvidia = "nvidia" in runtimes or any("nvidia" in str(v) for v in (info.get("CDISpecDirs") or []))
    gpus: list[str] = []
    exe = shutil.which("nvidia-smi")
    if nvidia and exe:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
        gpus = [line.strip() for line in out.splitlines() if line.strip()]
    detail = (f"Docker Engine {info.get('ServerVersion', '?')}; runtimes {', '.join(runtimes) or '—'}; "
              + ("NVIDIA runtime present" if nvidia else "no NVIDIA runtime: jobs run on CPU only "
                 "(install nvidia-container-toolkit)"))
    return Platform("docker", "Docker Engine", True, detail, gpus, creds)


def _slurm() -> list[Platform]:
    creds = ["a Slurm account (munge)", "enroot credentials for nvcr.io (~/.config/enroot/.credentials) "
             "with the pyxis launcher", "NGC_API_KEY / HF_TOKEN as for docker"]
    if shutil.which("sinfo") is None:
        return [Platform("slurm", "Slurm", False, "no Slurm client commands (sinfo) on this machine",
                         credentials=creds)]
    done = subprocess.run(["sinfo", "-h", "-o", "%P|%a|%D|%T|%G|%l"], capture_output=True, text=True, timeout=30,
                          check=False)
    if done.returncode != 0:
        return [Platform("slurm", "Slurm", False, f"sinfo failed: {done.stderr.strip()[:160]}", credentials=creds)]
    partitions: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 6:
            continue
        name, avail, nodes, state, gres, limit = parts
        entry = partitions.setdefault(name, {"avail": avail, "nodes": 0, "states": set(), "gres": set(),
                                             "limit": limit})
        entry["nodes"] += int(nodes) if nodes.isdigit() else 0
        entry["states"].add(state)
        if gres not in ("(null)", ""):
            entry["gres"].add(gres)
    out = []
    for name, e in partitions.items():
        gpus = sorted(g for g in e["gres"] if g.startswith("gpu"))
        out.append(Platform("slurm", f"Slurm partition {name}", e["avail"] == "up",
                            f"{e['avail']}; {e['nodes']} node(s) ({', '.join(sorted(e['states']))}); "
                            f"time limit {e['limit']}; " + (f"GRES {', '.join(gpus)}" if gpus else "no GPU GRES"),
                            gpus, creds))
    return out or [Platform("slurm", "Slurm", False, "sinfo lists no partition", credentials=creds)]


def discover() -> list[Platform]:
    return [_local(), _docker(), *_slurm()]
