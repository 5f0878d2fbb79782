"""CPU shims for NVIDIA TAO 7.3.0 in deft's real-TAO test image (docker/tao-real), inactive unless
DEFT_TAO_CPU_SHIMS=1 (the image sets it; nothing else does).

NVIDIA's files stay untouched: each patch below is applied to a module object right after NVIDIA's own code
has run, and names the line it works around. Only what a CPU-only box cannot do is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


def _cpu_trainer(module: ModuleType) -> None:
    # nvidia_tao_pytorch/core/initialize_experiments.py (7.3.0) hard-codes `'accelerator': 'gpu'` in the
    # trainer kwargs of initialize_train_experiment / _evaluation_ / _inference_experiment, with
    # `'devices': gpus` from TAO_VISIBLE_DEVICES ([0]); Lightning's CPU accelerator wants an int count.
    trainer_cls = module.Trainer
    original = trainer_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["accelerator"] = "cpu"
        kwargs["devices"] = 1
        original(self, *args, **kwargs)

    trainer_cls.__init__ = __init__


def _no_cuda_ops(module: ModuleType) -> None:
    # nvidia_tao_pytorch/cv/deformable_detr/model/ops/modules.py (7.3.0) MSDeformAttn.__init__ calls
    # `load_ops(ops_dir, lib_name)` = torch.ops.load_library of a CUDA .so; its forward already uses the
    # grid_sample path (multi_scale_deformable_attn_pytorch) for CPU tensors, so the library is not needed.
    module.load_ops = lambda ops_dir, lib_name: None


def _cpu_export(module: ModuleType) -> None:
    # nvidia_tao_pytorch/cv/visual_changenet/scripts/export.py:78 (7.3.0) run_export calls
    # `torch.cuda.set_device(gpu_id)` before anything else, even with `export.on_cpu: true` (which deft sets),
    # and torch raises without a CUDA device. export.py runs as `python export.py` (__main__, no module name to
    # hook), so the hook is on the ONNX exporter it imports at module level (utils/onnx_export.py; the
    # entrypoint's get_subtasks imports it too): from then on, with no CUDA device, set_device does nothing
    # instead of raising; with one it is torch's own.
    import torch

    original = torch.cuda.set_device

    def set_device(device: Any) -> None:
        if torch.cuda.is_available():
            original(device)

    torch.cuda.set_device = set_device


PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "pytorch_lightning.trainer.trainer": _cpu_trainer,
    "nvidia_tao_pytorch.cv.deformable_detr.model.ops.functions": _no_cuda_ops,
    "nvidia_tao_pytorch.cv.visual_changenet.utils.onnx_export": _cpu_export,
}


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self.inner = inner
        self.patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        self.patch(module)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


if os.environ.get("DEFT_TAO_CPU_SHIMS") == "1":
    sys.meta_path.insert(0, _PatchingFinder())
