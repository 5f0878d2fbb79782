"""LocalRunner: runs `visual_changenet train|inference|evaluate` jobs in-process with PyTorch.

torch is an optional extra, so this module imports it only inside methods; constructing a LocalRunner
without torch installed is a UsageError telling the user how to install it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from deft_aoi.errors import DeftError, StageFailed, UsageError, write_traceback
from deft_aoi.runners.base import GPU_CHECK, Job, JobResult
from deft_aoi.runners.jobs import LOCAL_CAPABILITIES, JobJournal
from deft_aoi.runners.local.joblog import JobControl, JobLog, JobStopped, command_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from deft_aoi.checks import CheckResult
    from deft_aoi.runners.gpus import GpuPlan
    from deft_aoi.runners.local.argv import TaskConfig
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout

INSTALL_HINT = "pip install 'deft-aoi[local]'"
EXIT_STOPPED = 130
EXIT_FAILED = 1
EXIT_USAGE = 2


def require_torch() -> str:
    """torch's version, or a UsageError naming the extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise UsageError(
            f"the local backend needs PyTorch, which is not installed: {INSTALL_HINT}",
            hint="or choose --backend docker to run TAO's container",
        ) from exc
    return str(torch.__version__)


class LocalRunner:
    """In-process jobs: nothing outlives deft, so there is no handle to record or re-attach (a stage cut short
    is redone on resume)."""

    name = "local"
    capabilities = LOCAL_CAPABILITIES
    journal: JobJournal | None = None

    def __init__(self, workspace: WorkspaceLayout, *, gpus: str | None = None) -> None:
        """`gpus`: the run's --gpus (0 = cpu; 1 or all = cuda when present); None = cuda when present."""
        from deft_aoi.runners.gpus import GpuRequest

        self.torch_version = require_torch()
        self.workspace = workspace
        self._stop = threading.Event()
        self._device = "cpu" if gpus is not None and GpuRequest.parse(gpus).count == 0 else None

    def gpu_plan(self, image: str) -> GpuPlan:
        """One device per job: cuda when torch sees one (and --gpus is not 0), else cpu. The in-process model
        reads no TAO GPU key, so the plan's count only describes (TAO's keys get 1 on cuda, none on cpu)."""
        import torch

        from deft_aoi.runners.gpus import GpuPlan

        if self._device != "cpu" and torch.cuda.is_available():
            return GpuPlan(1, "cuda", f"cuda:0 ({torch.cuda.get_device_name(0)}), in-process")
        why = "--gpus 0" if self._device == "cpu" else "no CUDA GPU visible"
        return GpuPlan(0, "cpu", f"cpu ({why}), in-process")

    def run(self, job: Job) -> JobResult:
        started = time.monotonic()
        self._stop.clear()
        log = JobLog(job.log_file)
        code = 0
        try:
            log.line(command_line(job.argv))
            code = self._run(job, log)
        except KeyboardInterrupt:
            self.stop()
            log.line("interrupted (Ctrl-C)")
            raise
        finally:
            log.close()
        return JobResult(exit_code=code, duration_s=time.monotonic() - started, log_path=job.log_file)

    def _run(self, job: Job, log: JobLog) -> int:
        from deft_aoi.runners.local.argv import load_task_config

        control = JobControl(job.name, self._stop, job.timeout_s, device=self._device)
        try:
            cfg = load_task_config(job.argv, workdir=job.workdir, env_seed=job.env.get("DEFT_SEED"))
            task_function(cfg.task)(cfg, log, control)
        except StageFailed as exc:  # the timeout: the base contract raises it rather than returning
            log.line(f"ERROR: {exc.render()}")
            raise
        except UsageError as exc:
            log.line(f"ERROR: {exc.render()}")
            return EXIT_USAGE
        except DeftError as exc:  # bad data: missing image, bad CSV, incompatible checkpoint...
            log.line(f"ERROR: {exc.render()}")
            return EXIT_FAILED
        except JobStopped:
            log.line("stopped")
            return EXIT_STOPPED
        except Exception as exc:  # a crash inside the job must read like a container that exited non-zero
            # The traceback goes beside the log, not into it: the log's tail is what the user is shown.
            details = write_traceback(job.log_file.with_suffix(".traceback.txt"), exc)
            log.line(f"ERROR: the local job crashed: {exc!r} ({details})")
            return EXIT_FAILED
        log.line("Execution status: PASS")
        return 0

    def stop(self) -> None:
        self._stop.set()

    def preflight(self, workspace: WorkspaceLayout, spec: ChangeNetSpec, batch_size: int, *,
                  mining_engine: str | None = None) -> list[CheckResult]:
        from deft_aoi.checks import failed, passed, warned

        try:
            version = require_torch()
        except UsageError as exc:
            return [failed("local backend: PyTorch", exc.message)]
        import torch

        from deft_aoi.runners.local.data import INTERNAL_MAX_SIDE, first_crop_size, internal_size

        checks = [passed("local backend: PyTorch", f"torch {version}")]
        if torch.cuda.is_available() and self._device != "cpu":
            props = torch.cuda.get_device_properties(0)
            checks.append(passed("local backend: device", f"cuda: {props.name} ({props.total_memory / 2**30:.0f} GiB)"))
        else:
            checks.append(passed("local backend: device", "cpu (the small CNN trains on CPU)"))
        checks.append(passed(GPU_CHECK, self.gpu_plan("").shown))
        width, height = internal_size(spec.image_width, spec.image_height)
        own = first_crop_size(workspace, spec)
        # Only detail the crops carry is worth a warning: a spec larger than the crops (C-RADIO's 224 px over
        # 128 px crops) upsamples, and the local model seeing those crops at their own 128 px loses nothing.
        if own is not None and max(width, height) < max(own):
            checks.append(
                warned(
                    "local backend: image size",
                    f"the crops ({own[0]}x{own[1]} px, first training row) are seen at {width}x{height} px inside "
                    f"the local model (spec {spec.image_width}x{spec.image_height} px, at most "
                    f"{INTERNAL_MAX_SIDE} px)",
                )
            )
        if batch_size < 2:
            checks.append(warned("local backend: batch size", f"batch_size {batch_size} makes batch norm noisy"))
        return checks


def task_function(task: str) -> Callable[[TaskConfig, JobLog, JobControl], None]:
    """The in-process implementation of a task (imports torch)."""
    if task == "export":  # refused earlier for a run (runners.factory.check_settings); a stray job ends exit 2
        raise UsageError("visual_changenet export is TAO's ONNX export: the local backend's in-process model has "
                         "none (use --backend docker or slurm)")
    if task == "train":
        from deft_aoi.runners.local.train import run_train

        return run_train
    from deft_aoi.runners.local.infer import run_evaluate, run_inference

    return run_inference if task == "inference" else run_evaluate
