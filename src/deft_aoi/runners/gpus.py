"""The GPUs each TAO job is given, and what TAO is told about them.

`--gpus` (LoopConfig.gpus) asks for all of a machine's GPUs, a count, or device ids; each backend turns the ask
into its own request (docker: device requests; Slurm: `--gpus-per-node`; local: cuda or cpu) and into a
`GpuPlan`: how many GPUs a job sees. TAO must be told the same count: its entrypoint (tao-pytorch
`nvidia_tao_pytorch/core/entrypoint.py` `launch()`) reads `<task>.num_gpus` and `<task>.gpu_ids` from the spec
file (train / evaluate / inference), sets TAO_VISIBLE_DEVICES from gpu_ids, and Lightning trains on exactly those
(`core/initialize_experiments.py`: `devices=gpus`). Left at the schema default (1, [0]) a job given 4 GPUs trains
on one. The ids TAO gets are the ones the job SEES: docker's `--gpus device=2,3` and a Slurm allocation both
appear inside the job as 0..n-1, so gpu_ids is always range(count).

The keys go into the spec file only, never onto the command line: TAO's entrypoint takes `num_gpus` or
`gpu_ids` anywhere in the override arguments as replacing the spec's GPU settings wholesale, and parses the
gpu_ids override with `ast.literal_eval` of the text up to the next space, which a quoted list breaks.

TAO's batch_size is per GPU (each Lightning process loads batch_size rows), so a job with n GPUs needs at least
batch_size x n rows in every set: runners/tao/rules.rows_rule reads the rendered spec's train.num_gpus, which
this plan wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deft_aoi.errors import UsageError

# The Visual ChangeNet tasks whose `<task>.num_gpus` / `<task>.gpu_ids` TAO's entrypoint reads (export and
# gen_trt_engine take a single gpu_id; the loop does not set it).
GPU_TASKS = ("train", "inference", "evaluate")


@dataclass(frozen=True)
class GpuRequest:
    """`--gpus` parsed: `all`, a count (0 = none, CPU), or device ids (`0,2`)."""

    all: bool = False
    count: int | None = None
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | int) -> GpuRequest:
        value = str(text).strip().lower()
        if value == "all":
            return cls(all=True)
        if value.isdigit():
            return cls(count=int(value))
        ids = tuple(part.strip() for part in value.split(","))
        if len(ids) > 1 and all(part.isdigit() for part in ids) and len(set(ids)) == len(ids):
            return cls(ids=ids)
        raise UsageError(f"--gpus {text!r}: write all, a count (2; 0 = none) or distinct device ids (0,2)")

    def __str__(self) -> str:
        return "all" if self.all else ",".join(self.ids) if self.ids else str(self.count)


@dataclass(frozen=True)
class GpuPlan:
    """What each job of a run is given: `count` GPUs it sees (0: none; None: all of a machine whose GPUs could
    not be counted), the backend's `request` word, and `shown`, the Pre-Flight Summary's description."""

    count: int | None
    request: str
    shown: str

    def tao_overrides(self, task: str) -> dict[str, Any]:
        """`<task>.num_gpus` and `<task>.gpu_ids` for the job's spec file; nothing for a CPU job (TAO's schema
        minimum is 1 and only a stand-in runs without a GPU) or an uncounted `all` (TAO's own spec values stay)."""
        if task not in GPU_TASKS or not self.count:
            return {}
        return {f"{task}.num_gpus": self.count, f"{task}.gpu_ids": list(range(self.count))}

    @property
    def devices(self) -> int:
        """GPUs a batch is split over for TAO's per-GPU batch rules (at least one process runs)."""
        return max(1, self.count or 1)


def shown(given: str, count: int | None) -> str:
    """The summary row: what each job is given · how TAO is told (short: it shares a line with its name)."""
    if not count:
        told = "no TAO GPU keys (CPU job)" if count == 0 else "TAO keeps the spec's num_gpus"
    else:
        told = f"TAO num_gpus={count}, gpu_ids={list(range(count))}"
    return f"{given} · {told}"
