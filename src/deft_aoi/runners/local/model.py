"""A small siamese change classifier: the local stand-in for TAO Visual ChangeNet-Classification.

Three terms, summed into the defect logit (class 0 = PASS, class 1 = defect):

1. A comparator, as classic AOI does it: on the golden registered onto the input (data.align_goldens),
   how far any pixel of one side lies outside the range of the other side's 3x3 neighbourhood
   (out_of_tolerance), its smoothed peak log-scaled by a gain and bias. It needs no examples of a
   defect type to flag it, which is what a base training set with a few defect types lacks.
2. A shape head: a linear read of fixed morphology descriptors of that out-of-tolerance map
   (change_shape: changed area, what survives erosions, how much lies in the golden's edge tolerance
   zones). The comparator's peak saturates on high-contrast parts, where a moved copper edge and a small
   open reach the same value; their SHAPE differs. Gain, bias and this head are fitted exactly on the
   base training set (train.fit_comparator, an L2 logistic regression), with no learning rate to get
   wrong; a fine-tune keeps them (train.start_model says why) and the loop's rows reach the model
   through the bounded correction below.
3. A learned correction, bounded to ±RESIDUAL_BOUND logits and zero at the start: one CNN encoder
   (shared weights) maps input and golden to feature maps at three scales (1/4, 1/8, 1/16 of the
   internal size, which is the crop's own resolution up to 128 px); at every scale a learned head looks
   only at |f_in − f_gold| (what CHANGED, not what the part looks like), pooled with global max (a
   defect is a small local change) and mean (a whole-part change), all scales feeding a linear layer.
   Trained by SGD after the fit, within the bound.

Importing this module imports torch: only the local backend does.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

# v4: v3 (stride-2 stem at up to 128 px on registered pairs) plus the shape head; v3, v2 (64 px,
# full-resolution stem, unregistered) and v1 (single-scale late fusion) checkpoints do not load into it.
ARCH = "deft_local_siamese_shape_v4"
NUM_CLASSES = 2
# Channel multiplier per scale: width, 2·width, 4·width.
SCALE_MULTIPLIERS = (1, 2, 4)
# Pixel normalisation: uint8 → roughly zero-mean, unit-variance.
_MEAN = 0.5
_STD = 0.25
# One normalised unit in grey levels of a uint8 channel: the change-shape encoder thresholds integer
# differences with it (mining.embedders.shape).
GREY_LEVELS_PER_UNIT = 255.0 * _STD
# Comparator prior (see SiameseChangeNet): defect logit = gain · log(change + eps) + bias, where change
# is tolerant_difference in normalised units (1.0 = 64 grey levels). These are an UNTRAINED model's
# values (a 2x larger change ≈ 5.5 logits, more than the learned correction's bound); a train from
# scratch fits gain and bias with the shape head (train.fit_comparator).
PRIOR_GAIN = 8.0
PRIOR_BIAS = 0.0
RESIDUAL_BOUND = 3.0
PRIOR_EPS = 1e-3
# Shape head (see change_shape): thresholds on the out-of-tolerance map (normalised units; 1.0 = 64 grey
# levels), erosion radii (px) that tell a thin edge line (mis-registration, a slight rotation, etch
# variation) from a solid blob, and pooling windows for the local amount of change.
SHAPE_THRESHOLDS = (0.5, 1.0, 2.0)
SHAPE_RADII = (1, 2)
SHAPE_WINDOWS = (3, 5, 7)
# Edge tolerance zones: the golden's copper edges (morphological gradient above EDGE_CONTRAST normalised
# units) widened by each radius; changed pixels (above CHANGE_LEVEL) are counted inside and outside them.
EDGE_CONTRAST = 1.0
CHANGE_LEVEL = 1.0
EDGE_RADII = (1, 2, 3)
SHAPE_FEATURES = len(SHAPE_WINDOWS) + len(SHAPE_THRESHOLDS) * (1 + 2 * len(SHAPE_RADII)) + 2 * len(EDGE_RADII)
# Fixed feature scales (a window mean of the map tops out at ≈ 4 normalised units; log1p of a pixel count
# at ≈ 10 for 128²): the descriptors lie in about [0, 1], which the change-shape mining encoder relies on.
SHAPE_SCALE_MEAN = 4.0
SHAPE_SCALE_AREA = 5.0


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


def out_of_tolerance(pairs: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): how far each pixel lies outside the range of the other side's 3x3 neighbourhood,
    both ways round, max over channels, in normalised pixel units (see tolerant_difference)."""
    test, golden = pairs[:, 0], pairs[:, 1]

    def outside(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        high = nn.functional.max_pool2d(ref, 3, stride=1, padding=1)
        low = -nn.functional.max_pool2d(-ref, 3, stride=1, padding=1)
        return (x - high).clamp_min(0) + (low - x).clamp_min(0)

    return torch.maximum(outside(test, golden), outside(golden, test)).amax(dim=1, keepdim=True)


def change_shape(changed: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
    """(B, SHAPE_FEATURES) fixed descriptors of the out-of-tolerance map's SHAPE, for the learned shape head.

    The comparator's max saturates: on high-contrast parts a thin line along a copper edge (residual
    mis-registration, a slight rotation, etch-width variation) and a small open reach the same peak. What
    tells them apart is shape, which classic AOI reads with morphology: per threshold, the changed area,
    and the area left after an erosion (a (2r+1)² block of change fits: a solid blob, not a 1–2 px line)
    and after the opening (erosion then dilation: the size of those solid parts); the peak of the map's
    local mean at a few window sizes; and, as AOI's edge tolerance zones do, how much of the change lies
    within r px of one of the golden's copper edges (where a shifted, rotated or over-etched edge
    changes pixels) and how much away from every edge (a pin-hole in copper, an island of copper in
    the gap, an open through a whole trace). Which of these matter, and how, is learned from data — a
    base set without mis-registered parts cannot teach it, the rows the loop mines can.

    changed: (B, 1, H, W) out_of_tolerance; golden: (B, C, H, W) normalised golden side."""
    functional = nn.functional
    features = [
        functional.avg_pool2d(changed, k, stride=1, padding=k // 2).amax(dim=(1, 2, 3)) / SHAPE_SCALE_MEAN
        for k in SHAPE_WINDOWS
    ]
    for threshold in SHAPE_THRESHOLDS:
        mask = (changed > threshold).to(changed.dtype)
        features.append(torch.log1p(mask.sum(dim=(1, 2, 3))) / SHAPE_SCALE_AREA)
        for radius in SHAPE_RADII:
            size = 2 * radius + 1
            eroded = -functional.max_pool2d(-mask, size, stride=1, padding=radius)
            opened = functional.max_pool2d(eroded, size, stride=1, padding=radius)
            features.append(torch.log1p(eroded.sum(dim=(1, 2, 3))) / SHAPE_SCALE_AREA)
            features.append(torch.log1p(opened.sum(dim=(1, 2, 3))) / SHAPE_SCALE_AREA)
    grey = golden.mean(dim=1, keepdim=True)
    gradient = (functional.max_pool2d(grey, 3, stride=1, padding=1)
                + functional.max_pool2d(-grey, 3, stride=1, padding=1))
    edges = (gradient > EDGE_CONTRAST).to(changed.dtype)
    mask = (changed > CHANGE_LEVEL).to(changed.dtype)
    for radius in EDGE_RADII:
        zone = functional.max_pool2d(edges, 2 * radius + 1, stride=1, padding=radius)
        features.append(torch.log1p((mask * (1 - zone)).sum(dim=(1, 2, 3))) / SHAPE_SCALE_AREA)
        features.append(torch.log1p((mask * zone).sum(dim=(1, 2, 3))) / SHAPE_SCALE_AREA)
    return torch.stack(features, dim=1)


def tolerant_difference(pairs: torch.Tensor) -> torch.Tensor:
    """A fixed (not learned) change measure per pair: (B,) = the global max of the smoothed
    out-of-tolerance map, in normalised pixel units.

    Classic AOI comparison: a pixel of one side counts as changed only by how far it lies outside the
    range of the OTHER side's 3x3 neighbourhood, both ways round (extra and missing copper), so the
    ±1 px left after integer registration and edge anti-aliasing cost nothing, while a pin-hole or a
    mouse-bite does. A 3x3 mean then favours areas over single speckle pixels. Why a fixed measure
    next to the learned ones: a base training set may hold only a few defect types, and "the part
    changed here" is what carries over to the types it lacks."""
    return smoothed_peak(out_of_tolerance(pairs))


def smoothed_peak(changed: torch.Tensor) -> torch.Tensor:
    """(B,): the global max of the out-of-tolerance map's 3x3 mean (favours areas over single pixels)."""
    return nn.functional.avg_pool2d(changed, 3, stride=1, padding=1).amax(dim=(1, 2, 3))


def log_peak(changed: torch.Tensor) -> torch.Tensor:
    """(B,): the comparator's input, log(smoothed_peak + PRIOR_EPS) of an out-of-tolerance map."""
    return torch.log(smoothed_peak(changed) + PRIOR_EPS)


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
        # learns corrections to it: the learned parts start at zero, so what a small base training
        # set teaches is a residual on top of "the part changed", not a replacement for it.
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self.prior = nn.Parameter(torch.tensor([PRIOR_GAIN, PRIOR_BIAS]))
        # The shape head: a linear read of change_shape, unbounded and zero at the start (no bias: the
        # prior's bias is the offset). Fitted, never trained by SGD (train.fit_comparator).
        self.shape_head = nn.Linear(SHAPE_FEATURES, 1, bias=False)
        nn.init.zeros_(self.shape_head.weight)

    def log_change(self, pairs: torch.Tensor) -> torch.Tensor:
        return log_peak(out_of_tolerance(pairs))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs: float (B, 2, C, H, W), side 0 = input, 1 = golden → logits (B, 2)."""
        prior, shape, correction = self.terms(pairs)
        defect = prior + shape + correction
        return torch.stack([torch.zeros_like(defect), defect], dim=1)

    def terms(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The defect logit's three terms, each (B,): comparator prior, shape head, CNN correction."""
        changed = out_of_tolerance(pairs)
        prior = self.prior[0] * log_peak(changed) + self.prior[1]
        shape = self.shape_head(change_shape(changed, pairs[:, 1]))[:, 0]
        return prior, shape, self.correction(pairs)

    def correction(self, pairs: torch.Tensor) -> torch.Tensor:
        """(B,): the CNN's bounded correction alone (what train.fit_comparator holds as an offset)."""
        batch = pairs.shape[0]
        # One encoder pass over input and golden together: same weights, half the kernel launches.
        features = pairs.flatten(0, 1)
        pooled = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            features = stage(features)
            sides = features.unflatten(0, (batch, 2))
            pooled.append(pooled_difference(sides[:, 0], sides[:, 1], head))
        learned = self.classifier(torch.cat(pooled, dim=1))
        # Bounded correction: the learned part moves a pair's defect logit by at most ±RESIDUAL_BOUND,
        # so it can re-rank near-ties of the comparator but not bury a large change it has never seen.
        return RESIDUAL_BOUND * torch.tanh((learned[:, 1] - learned[:, 0]) / RESIDUAL_BOUND)


def to_input(batch_uint8: Any, device: torch.device) -> torch.Tensor:
    """uint8 numpy (B, 2, C, H, W) → normalised float tensor on `device`."""
    tensor = torch.from_numpy(batch_uint8).to(device, non_blocking=True)
    return (tensor.float() / 255.0 - _MEAN) / _STD


def build_model(config: ModelConfig) -> SiameseChangeNet:
    return SiameseChangeNet(config)
