"""Device, threads, seeds and the model config a spec implies: shared by train, inference, evaluate."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from deft_aoi.errors import UsageError
from deft_aoi.runners.local.argv import TaskConfig
from deft_aoi.runners.local.data import (
    CHANNELS_PER_LIGHT,
    PairImages,
    PairTable,
    align_shift_px,
    cpu_count,
    internal_size,
)
from deft_aoi.runners.local.model import ModelConfig

DEVICE_ENV = "DEFT_LOCAL_DEVICE"


def pick_device() -> torch.device:
    """CUDA when present, else CPU; DEFT_LOCAL_DEVICE=cpu|cuda forces one (benchmarks compare both)."""
    forced = os.environ.get(DEVICE_ENV, "").strip().lower()
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


def model_config_for(cfg: TaskConfig) -> ModelConfig:
    width, height = internal_size(cfg.image_width, cfg.image_height)
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
    registered onto inputs within ALIGN_MAX_SHIFT_PX of the crop's own resolution."""
    shift = align_shift_px(max(config.spec_width, config.spec_height), max(config.input_width, config.input_height))
    return PairImages(table, (config.input_width, config.input_height), workers=workers, align_shift=shift)
