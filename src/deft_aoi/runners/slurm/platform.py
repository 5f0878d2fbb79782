"""Where and how Slurm jobs run: the `slurm:` section of `<workspace>/platform.yaml`, each key overridable by a
`DEFT_SLURM_<KEY>` environment variable (scripts, CI), and partition, account, qos, time and gpus by `deft run`'s
--partition, --account, --qos, --time-limit and --gpus (`with_flags`): flag > environment > platform.yaml >
Slurm's default. Only runners/ reads it.

```yaml
slurm:
  partition: gpu          # sbatch --partition (default: the cluster's default partition)
  account: aoi-team       # sbatch --account
  qos: normal             # sbatch --qos
  gpus: 1                 # sbatch --gpus-per-node; 0 = none (CPU stand-in). TAO sees the same count.
  time: "08:00:00"        # sbatch --time; default: the stage timeout (LoopConfig.job_timeout_s), rounded up
  cpus: 8                 # sbatch --cpus-per-task
  mem: 64G                # sbatch --mem
  launcher: pyxis         # pyxis (srun --container-image, NVIDIA's clusters) | docker (docker on the node)
                          # | process (TAO's pip package in a venv on the node, or deft's stand-in)
  entry: ""               # process launcher: command prefix for visual_changenet/embedding/tmm
  poll_s: 5               # seconds between squeue/scontrol polls
  extra: []               # more sbatch arguments, verbatim
```
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from deft_aoi.errors import UsageError

PLATFORM_FILE = "platform.yaml"
ENV_PREFIX = "DEFT_SLURM_"
LAUNCHERS = ("pyxis", "docker", "process")


@dataclass(frozen=True)
class SlurmPlatform:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int = 1
    time: str | None = None
    cpus: int | None = None
    mem: str | None = None
    launcher: str = "pyxis"
    entry: str = ""
    poll_s: float = 5.0
    extra: tuple[str, ...] = field(default_factory=tuple)
    source: str = "defaults"

    @property
    def entry_argv(self) -> list[str]:
        return shlex.split(self.entry)


def load_platform(workspace_root: Path) -> SlurmPlatform:
    """The workspace's slurm section with DEFT_SLURM_* overrides; a bad value is a usage error naming its source."""
    values: dict[str, Any] = {}
    sources = []
    path = workspace_root / PLATFORM_FILE
    if path.is_file():
        from deft_aoi.workspace.spec_file import load_yaml_mapping

        section = load_yaml_mapping(path).get("slurm") or {}
        if not isinstance(section, dict):
            raise UsageError(f"{path}: `slurm:` must be a mapping of settings")
        values.update(section)
        sources.append(str(path))
    for f in fields(SlurmPlatform):
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if env is not None and f.name != "source":
            values[f.name] = shlex.split(env) if f.name == "extra" else env
            sources.append(ENV_PREFIX + f.name.upper())
    unknown = set(values) - {f.name for f in fields(SlurmPlatform)} - {"source"}
    if unknown:
        raise UsageError(f"unknown slurm platform setting(s) {sorted(unknown)} ({', '.join(sources)}); "
                         f"known: {', '.join(f.name for f in fields(SlurmPlatform) if f.name != 'source')}")
    try:
        platform = SlurmPlatform(
            partition=_opt(values.get("partition")), account=_opt(values.get("account")),
            qos=_opt(values.get("qos")), gpus=int(values.get("gpus", 1)), time=_opt(values.get("time")),
            cpus=None if values.get("cpus") in (None, "") else int(values["cpus"]), mem=_opt(values.get("mem")),
            launcher=str(values.get("launcher", "pyxis")), entry=str(values.get("entry") or ""),
            poll_s=float(values.get("poll_s", 5.0)), extra=tuple(str(v) for v in values.get("extra") or ()),
            source=", ".join(sources) or "defaults")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"slurm platform settings ({', '.join(sources) or 'defaults'}): {exc}") from None
    if platform.launcher not in LAUNCHERS:
        raise UsageError(f"slurm launcher {platform.launcher!r} ({platform.source}): choose {', '.join(LAUNCHERS)}")
    return platform


def _opt(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def with_flags(platform: SlurmPlatform, *, partition: str | None, account: str | None, qos: str | None,
               time: str | None, gpus: str | None) -> SlurmPlatform:
    """`platform` with the run's flags applied (a flag given beats the file and the environment); the source
    names the flags that did."""
    given = {"partition": partition, "account": account, "qos": qos, "time": time}
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if gpus is not None:
        from deft_aoi.runners.gpus import GpuRequest

        request = GpuRequest.parse(gpus)
        if request.count is None:
            raise UsageError(f"--gpus {request}: Slurm allocates GPUs by count (sbatch --gpus-per-node)")
        changes["gpus"] = request.count
    if not changes:
        return platform
    flags = ", ".join(f"--{'time-limit' if k == 'time' else k}" for k in changes)
    return replace(platform, **changes, source=f"{platform.source}; flags {flags}")
