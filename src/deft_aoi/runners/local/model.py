"""A small siamese change classifier: the local stand-in for TAO Visual ChangeNet-Classification.

One strided CNN encoder (shared weights) maps the input and the golden image to 1/8-resolution feature
maps; a learned difference head looks at [f_in, f_gold, |f_in − f_gold|] per location, so a small local
change is not averaged away before the comparison, then global max+mean pooling feeds two logits
(class 0 = PASS, class 1 = defect). Importing this module imports torch: only the local backend does.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

ARCH = "deft_local_siamese_cnn_v1"
NUM_CLASSES = 2
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
    width: int = 32


def _conv(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SiameseChangeNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        w = config.width
        self.config = config
        self.encoder = nn.Sequential(
            _conv(config.in_channels, w, 2),
            _conv(w, w * 3 // 2, 2),
            _conv(w * 3 // 2, 2 * w, 2),
            _conv(2 * w, 2 * w, 1),
        )
        self.difference = nn.Sequential(_conv(6 * w, 2 * w, 1, kernel=1), _conv(2 * w, 2 * w, 1))
        self.classifier = nn.Linear(4 * w, NUM_CLASSES)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs: float (B, 2, C, H, W), side 0 = input, 1 = golden → logits (B, 2)."""
        batch = pairs.shape[0]
        # One encoder pass over input and golden together: same weights, half the kernel launches.
        features = self.encoder(pairs.flatten(0, 1))
        features = features.unflatten(0, (batch, 2))
        f_in, f_gold = features[:, 0], features[:, 1]
        fused = self.difference(torch.cat([f_in, f_gold, (f_in - f_gold).abs()], dim=1))
        pooled = torch.cat([fused.amax(dim=(2, 3)), fused.mean(dim=(2, 3))], dim=1)
        return self.classifier(pooled)


def to_input(batch_uint8: Any, device: torch.device) -> torch.Tensor:
    """uint8 numpy (B, 2, C, H, W) → normalised float tensor on `device`."""
    tensor = torch.from_numpy(batch_uint8).to(device, non_blocking=True)
    return (tensor.float() / 255.0 - _MEAN) / _STD


def build_model(config: ModelConfig) -> SiameseChangeNet:
    return SiameseChangeNet(config)
