"""Device, threads, seeds and the model config a spec implies: shared by train, inference, evaluate."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from deft_aoi.errors import UsageError
from deft_aoi.runners.local.argv import TaskConfig
from deft_aoi.runners.local.data import (
    ALIGN_MAX_SHIFT_PX,
    CHANNELS_PER_LIGHT,
    PairImages,
    PairTable,
    cpu_count,
    internal_size,
)
from deft_aoi.runners.local.model import ModelConfig

DEVICE_ENV = "DEFT_LOCAL_DEVICE"


def pick_device(wanted: str | None = None) -> torch.device:
    """CUDA when present, else CPU; `wanted` (the run's --gpus 0 → "cpu") or DEFT_LOCAL_DEVICE=cpu|cuda forces
    one (benchmarks compare both)."""
    forced = (wanted or os.environ.get(DEVICE_ENV, "")).strip().lower()
    if forced == "cpu":
        return torch.device("cpu")
    if forced == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{DEVICE_ENV}=cuda but torch sees no CUDA device")
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def configure_threads() -> int:
    """Use every core we may run on for intra-op parallelism (torch's default can be 1 in containers)."""
    cores = cpu_count()
    torch.set_num_threads(cores)
    return cores


def decode_workers(spec_workers: int) -> int:
    """A small pool: the spec's `workers`, at least 2 (decode overlaps I/O), at most 8."""
    return max(2, min(8, spec_workers or cpu_count()))


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed torch (weights init) and return the generator that drives shuffling and augmentation."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def model_config_for(cfg: TaskConfig, own_side: int | None = None) -> ModelConfig:
    """The model a train job builds: the spec's size capped at INTERNAL_MAX_SIDE and at the crops' own longer
    side `own_side` (a 224 px spec over 64 px crops is seen at 64 px, as the crops carry no more)."""
    width, height = internal_size(cfg.image_width, cfg.image_height, own_side=own_side)
    return ModelConfig(
        lights=cfg.lights,
        in_channels=len(cfg.lights) * CHANNELS_PER_LIGHT,
        input_width=width,
        input_height=height,
        spec_width=cfg.image_width,
        spec_height=cfg.image_height,
    )


def pair_images(table: PairTable, config: ModelConfig, workers: int) -> PairImages:
    """The pixels a model with `config` sees, for train and inference alike: the internal size, goldens
    registered onto inputs within ALIGN_MAX_SHIFT_PX of each crop's own resolution (not the spec size)."""
    return PairImages(table, (config.input_width, config.input_height), workers=workers,
                      align_px=ALIGN_MAX_SHIFT_PX)


def model_config_of_checkpoint(cfg: TaskConfig, checkpoint: Path) -> ModelConfig:
    """The model a job that loads `checkpoint` expects: the spec's lights and channels at the input size the
    checkpoint was trained at (train chose it from its crops; inference and fine-tuning see every set alike)."""
    from deft_aoi.runners.local.checkpoint import load_checkpoint

    found, _ = load_checkpoint(checkpoint)
    return model_config_for(cfg).model_copy(update={"input_width": found.input_width,
                                                    "input_height": found.input_height})
