"""A small siamese change classifier: the local stand-in for TAO Visual ChangeNet-Classification.

Two parts, summed into the defect logit (class 0 = PASS, class 1 = defect):

1. A comparator, as classic AOI does it: on the golden registered onto the input (data.align_goldens),
   how far any pixel of one side lies outside the range of the other side's 3x3 neighbourhood
   (tolerant_difference), log-scaled by a learned gain and bias. It needs no examples of a defect type
   to flag it, which is what a base training set with a few defect types lacks.
2. A learned correction, bounded to ±RESIDUAL_BOUND logits and zero at the start: one CNN encoder
   (shared weights) maps input and golden to feature maps at three scales (1/4, 1/8, 1/16 of the
   internal size, which is the crop's own resolution up to 128 px); at every scale a learned head looks
   only at |f_in − f_gold| (what CHANGED, not what the part looks like), pooled with global max (a
   defect is a small local change) and mean (a whole-part change), all scales feeding a linear layer.
   Training data teaches it which changes matter (e.g. noise that is not a defect), within the bound.

Importing this module imports torch: only the local backend does.
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
# Comparator prior (see SiameseChangeNet): defect logit = gain · log(change + eps) + bias, where change
# is tolerant_difference in normalised units (1.0 = 64 grey levels). The gain makes a 2x larger change
# ≈ 5.5 logits, more than the learned correction's bound; the bias is centred on the training set
# before a fresh train (centre_prior); both are then learned, at PRIOR_LR_FACTOR times the network's lr
# (two scalars).
PRIOR_GAIN = 8.0
PRIOR_BIAS = 0.0
RESIDUAL_BOUND = 3.0
PRIOR_EPS = 1e-3
PRIOR_LR_FACTOR = 10.0


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


def tolerant_difference(pairs: torch.Tensor) -> torch.Tensor:
    """A fixed (not learned) change measure per pair: (B,) = the global max of the smoothed
    out-of-tolerance map, in normalised pixel units.

    Classic AOI comparison: a pixel of one side counts as changed only by how far it lies outside the
    range of the OTHER side's 3x3 neighbourhood, both ways round (extra and missing copper), so the
    ±1 px left after integer registration and edge anti-aliasing cost nothing, while a pin-hole or a
    mouse-bite does. A 3x3 mean then favours areas over single speckle pixels. Why a fixed measure
    next to the learned ones: a base training set may hold only a few defect types, and "the part
    changed here" is what carries over to the types it lacks."""
    test, golden = pairs[:, 0], pairs[:, 1]

    def outside(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        high = nn.functional.max_pool2d(ref, 3, stride=1, padding=1)
        low = -nn.functional.max_pool2d(-ref, 3, stride=1, padding=1)
        return (x - high).clamp_min(0) + (low - x).clamp_min(0)

    changed = torch.maximum(outside(test, golden), outside(golden, test)).amax(dim=1, keepdim=True)
    return nn.functional.avg_pool2d(changed, 3, stride=1, padding=1).amax(dim=(1, 2, 3))


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
        # The model starts as the classic comparator (defect logit = gain · log change + bias) and
        # learns corrections to it: the learned part starts at zero, so what a small base training
        # set teaches is a residual on top of "the part changed", not a replacement for it.
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self.prior = nn.Parameter(torch.tensor([PRIOR_GAIN, PRIOR_BIAS]))

    def log_change(self, pairs: torch.Tensor) -> torch.Tensor:
        return torch.log(tolerant_difference(pairs) + PRIOR_EPS)

    @torch.no_grad()
    def centre_prior(self, log_change: torch.Tensor, targets: torch.Tensor) -> float | None:
        """Put the comparator's 50 % point midway between the median log change of the training set's
        PASS rows and of its defect rows (a fresh model only; a fine-tune keeps its learned prior).
        Returns the change (normalised units) at the 50 % point, or None when a class is missing."""
        if not bool((targets == 0).any()) or not bool((targets == 1).any()):
            return None
        midpoint = 0.5 * (log_change[targets == 0].median() + log_change[targets == 1].median())
        self.prior[1] = -self.prior[0] * midpoint
        return float(midpoint.exp())

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs: float (B, 2, C, H, W), side 0 = input, 1 = golden → logits (B, 2)."""
        batch = pairs.shape[0]
        # One encoder pass over input and golden together: same weights, half the kernel launches.
        features = pairs.flatten(0, 1)
        prior = self.prior[0] * self.log_change(pairs) + self.prior[1]
        pooled = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            features = stage(features)
            sides = features.unflatten(0, (batch, 2))
            pooled.append(pooled_difference(sides[:, 0], sides[:, 1], head))
        learned = self.classifier(torch.cat(pooled, dim=1))
        # Bounded correction: the learned part moves a pair's defect logit by at most ±RESIDUAL_BOUND,
        # so it can re-rank near-ties of the comparator but not bury a large change it has never seen.
        correction = RESIDUAL_BOUND * torch.tanh((learned[:, 1] - learned[:, 0]) / RESIDUAL_BOUND)
        defect = prior + correction
        return torch.stack([torch.zeros_like(defect), defect], dim=1)


def to_input(batch_uint8: Any, device: torch.device) -> torch.Tensor:
    """uint8 numpy (B, 2, C, H, W) → normalised float tensor on `device`."""
    tensor = torch.from_numpy(batch_uint8).to(device, non_blocking=True)
    return (tensor.float() / 255.0 - _MEAN) / _STD


def build_model(config: ModelConfig) -> SiameseChangeNet:
    return SiameseChangeNet(config)
