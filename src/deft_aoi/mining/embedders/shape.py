"""The change-shape encoder: a pair seen the way the local model's shape head sees it.

Each pair is decoded at SIZE² RGB, its golden registered onto the input (runners.local.data.align_goldens),
and described by runners.local.model.change_shape of the out-of-tolerance map: changed area, the area left
after erosions (a solid blob vs a thin edge line) and the peak local amount of change. Centred on CENTRE
(the descriptors lie in about [0, 1]) and L2-normalised, so cosine compares the SHAPE of two changes.

Why mine in this space: the false alarms that set FAR at recall 100 % are PASS rows whose change the model
reads as a defect's; the pool rows that teach it otherwise are those that look alike to the model, not
those that look alike to a generic descriptor (bench/RESULTS.md, loop efficacy run 8). It needs torch (the
local extra), like the local backend, for the model's constants and numba; the features themselves are
computed here in numpy and one compiled counting loop (`shape_features`), equal to the model's torch code
to 1e-6 and many times faster. Pairs are decoded channels last, as PIL gives them, and never transposed.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from deft_aoi.mining.embedders.base import Fingerprint, embed_chunks_threaded

if TYPE_CHECKING:
    import numpy as np

NAME = "change-shape"
VERSION = "1"
SIZE = 128
CENTRE = 0.5
_CHUNK = 64


class ShapeEmbedder:
    """Embedder protocol (fingerprint, device, embed); CPU only."""

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers or min(4, os.cpu_count() or 1)

    @cached_property
    def fingerprint(self) -> Fingerprint:
        from deft_aoi.runners.local import model

        preprocessing = (f"rgb,{SIZE}px,align±{self._shift()},change_shape[{model.ARCH}],"
                         f"-{CENTRE},l2")
        return Fingerprint(
            name=NAME,
            version=VERSION,
            weights_hash=hashlib.sha256(preprocessing.encode("utf-8")).hexdigest()[:16],
            preprocessing=preprocessing,
            dim=model.SHAPE_FEATURES,
        )

    @staticmethod
    def _shift() -> int:
        from deft_aoi.runners.local.data import ALIGN_MAX_SHIFT_PX

        return ALIGN_MAX_SHIFT_PX

    @property
    def device(self) -> str:
        return "cpu"

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        return embed_chunks_threaded(inputs, goldens, dim=self.fingerprint.dim, chunk=_CHUNK,
                                     workers=self.workers, embed_chunk=self._embed_chunk)

    def _embed_chunk(self, pairs: list[tuple[str, str | None]]) -> np.ndarray:
        import numpy as np

        from deft_aoi.runners.local.data import ALIGN_MAX_SHIFT_PX, align_goldens, decode_channels_last

        size = (SIZE, SIZE)
        # Decoded as PIL gives them, channels last, each side contiguous: registration and shape_features
        # take the (B, 2, C, H, W) view of it, so no image is ever transposed (see shape_features).
        sides = np.empty((2, len(pairs), SIZE, SIZE, 3), dtype=np.uint8)
        for k, (test, golden) in enumerate(pairs):
            sides[0, k] = decode_channels_last(test, size)[0]
            sides[1, k] = decode_channels_last(golden or test, size)[0]
        stacked = sides.transpose(1, 0, 4, 2, 3)
        align_goldens(stacked, ALIGN_MAX_SHIFT_PX)
        return embed_features(shape_features(stacked))


def embed_features(shape: np.ndarray) -> np.ndarray:
    """(B, SHAPE_FEATURES) descriptors → the encoder's rows: centred on CENTRE, L2-normalised float32."""
    import numpy as np

    centred = shape.astype(np.float32) - np.float32(CENTRE)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def _level(threshold: float, units: float) -> int:
    """The smallest integer difference d with d / units > threshold: the model's float test on normalised
    pixels, as an integer test on grey levels.

    Exact because a normalised difference is within ~1e-6 of d / units while a threshold that does not fall
    on a multiple of 1 / units lies at least 1e-3 / units from every one. A threshold within 1e-3 grey
    levels of an integer is refused: there float rounding would decide, and the two tests could differ."""
    scaled = threshold * units
    if abs(scaled - round(scaled)) < 1e-3:
        raise ValueError(f"threshold {threshold} lies on an integer difference ({scaled:g}): the integer "
                         "change-shape test would not match the model's float one")
    return math.floor(scaled) + 1


def _channels_last(side: np.ndarray) -> np.ndarray:
    """(B, C, H, W) → contiguous (B, H, W·C); free when `side` is a view of a channels-last buffer."""
    import numpy as np

    batch, channels, height, width = side.shape
    return np.ascontiguousarray(side.transpose(0, 2, 3, 1)).reshape(batch, height, width * channels)


def shape_features(pairs: np.ndarray) -> np.ndarray:
    """uint8 (B, 2, C, H, W) registered pairs (side 0 = input; any strides, fastest as a view of a
    (2, B, H, W, C) buffer) → float32 (B, SHAPE_FEATURES), equal to
    model.change_shape(model.out_of_tolerance(x), x[:, 1]) with x = model.to_input(pairs), to 1e-6.

    Why not the model's torch code: on uint8 maps with integer thresholds (see _level) the out-of-tolerance
    map, the masks, erosions, openings and edge zones are all exact small-integer work, which one compiled
    pass per pair does (shape_kernels.shape_counts: torch's float max_pool2d of each of ~20 maps cost ≈ 20×
    the image decode). Only the last step is float: window peaks to means, counts to log areas, as the
    model scales them. Tested against the model's code in tests/mining/test_shape.py."""
    import numpy as np

    from deft_aoi.mining.embedders.shape_kernels import integer_features
    from deft_aoi.runners.local import model

    units = model.GREY_LEVELS_PER_UNIT
    channels = pairs.shape[2]
    peaks, counts, edge_counts = integer_features(
        _channels_last(pairs[:, 0]), _channels_last(pairs[:, 1]), channels, model.SHAPE_WINDOWS,
        model.SHAPE_RADII, [_level(threshold, units) for threshold in model.SHAPE_THRESHOLDS], model.EDGE_RADII,
        _level(model.EDGE_CONTRAST, channels * units), _level(model.CHANGE_LEVEL, units))

    def log_area(count: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.log1p(count.astype(np.float64)) / model.SHAPE_SCALE_AREA
        return result

    columns = [peaks[:, w] / (k * k * units) / model.SHAPE_SCALE_MEAN for w, k in enumerate(model.SHAPE_WINDOWS)]
    columns += [log_area(counts[:, k, m]) for k in range(counts.shape[1]) for m in range(counts.shape[2])]
    for r in range(len(model.EDGE_RADII)):
        near = edge_counts[:, 1 + r]
        columns += [log_area(edge_counts[:, 0] - near), log_area(near)]
    if len(columns) != model.SHAPE_FEATURES:
        raise AssertionError(f"change_shape has {model.SHAPE_FEATURES} features, this code {len(columns)}")
    return np.stack(columns, axis=1).astype(np.float32)
