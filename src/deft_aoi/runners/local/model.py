"""A small siamese change classifier: the local stand-in for TAO Visual ChangeNet-Classification.

One CNN encoder (shared weights) maps the input and the (registered, see data.align_goldens) golden
image to feature maps at three scales (1/4, 1/8, 1/16 of the internal size, which is the crop's own
resolution up to 128 px). At every scale a learned difference head looks only at
|f_in − f_gold|, so the decision rests on what CHANGED rather than on what the part looks like (which is
what lets a model trained on a few defect types still flag unseen ones). Each difference map is pooled
with global max (a defect is a small local change that averaging would dilute) and mean (a whole-part
change such as a shift), and the pooled vectors of all scales feed two logits (class 0 = PASS,
class 1 = defect). Importing this module imports torch: only the local backend does.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

# v3: stride-2 stem at up to 128 px on registered pairs; v2 (64 px, full-resolution stem, unregistered)
# and v1 (single-scale late fusion) checkpoints do not load into it.
ARCH = "deft_local_siamese_msdiff_v3"
NUM_CLASSES = 2
# Channel multiplier per scale: width, 2·width, 4·width.
SCALE_MULTIPLIERS = (1, 2, 4)
# Pixel normalisation: uint8 → roughly zero-mean, unit-variance.
_MEAN = 0.5
_STD = 0.25


class ModelConfig(BaseModel):
    """Stored in every checkpoint so inference can refuse an incompatible spec with a clear message."""

    model_config = ConfigDict(frozen=True)

    arch: str = ARCH
    lights: tuple[str, ...]
    in_channels: int
    input_width: int
    input_height: int
    spec_width: int
    spec_height: int
    width: int = 24


def _conv(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def pooled_difference(f_in: torch.Tensor, f_gold: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """head(|f_in − f_gold|) pooled to (B, 2·C): global max then global mean."""
    diff = head((f_in - f_gold).abs())
    return torch.cat([diff.amax(dim=(2, 3)), diff.mean(dim=(2, 3))], dim=1)


class SiameseChangeNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c1, c2, c3 = (config.width * m for m in SCALE_MULTIPLIERS)
        self.config = config
        # The stem is a 3x3 conv at stride 2: its kernel still covers every pixel, so a 1–2 px defect at
        # the crop's full resolution reaches the features (a learned downscale, unlike the bilinear
        # resize it replaces), at the cost of the old full-resolution stem on a 4x smaller image.
        self.stages = nn.ModuleList([
            nn.Sequential(_conv(config.in_channels, c1, 2), _conv(c1, c1, 2)),
            nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2, 1)),
            nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3, 1)),
        ])
        self.heads = nn.ModuleList([_conv(c, c, 1) for c in (c1, c2, c3)])
        self.classifier = nn.Linear(2 * (c1 + c2 + c3), NUM_CLASSES)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs: float (B, 2, C, H, W), side 0 = input, 1 = golden → logits (B, 2)."""
        batch = pairs.shape[0]
        # One encoder pass over input and golden together: same weights, half the kernel launches.
        features = pairs.flatten(0, 1)
        pooled = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            features = stage(features)
            sides = features.unflatten(0, (batch, 2))
            pooled.append(pooled_difference(sides[:, 0], sides[:, 1], head))
        return self.classifier(torch.cat(pooled, dim=1))


def to_input(batch_uint8: Any, device: torch.device) -> torch.Tensor:
    """uint8 numpy (B, 2, C, H, W) → normalised float tensor on `device`."""
    tensor = torch.from_numpy(batch_uint8).to(device, non_blocking=True)
    return (tensor.float() / 255.0 - _MEAN) / _STD


def build_model(config: ModelConfig) -> SiameseChangeNet:
    return SiameseChangeNet(config)
