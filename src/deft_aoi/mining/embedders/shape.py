"""The change-shape encoder: a pair seen the way the local model's shape head sees it.

Each pair is decoded at SIZE² RGB, its golden registered onto the input (runners.local.data.align_goldens),
and described by runners.local.model.change_shape of the out-of-tolerance map: changed area, the area left
after erosions (a solid blob vs a thin edge line) and the peak local amount of change. Centred on CENTRE
(the descriptors lie in about [0, 1]) and L2-normalised, so cosine compares the SHAPE of two changes.

Why mine in this space: the false alarms that set FAR at recall 100 % are PASS rows whose change the model
reads as a defect's; the pool rows that teach it otherwise are those that look alike to the model, not
those that look alike to a generic descriptor (bench/RESULTS.md, loop efficacy run 8). It needs torch (the
local extra), like the local backend, for the model's constants; the features themselves are computed here
in numpy (`shape_features`), equal to the model's torch code to 1e-6 and many times faster.
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
# Pairs per shape_features pass: 16 keep its ~2 MB of maps in cache; 64 at once ran ≈ 20 % slower per pair.
_CACHE_PAIRS = 16


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

        from deft_aoi.runners.local.data import ALIGN_MAX_SHIFT_PX, align_goldens, decode_image

        size = (SIZE, SIZE)
        stacked = np.stack([
            np.stack([decode_image(i, size), decode_image(g, size) if g else decode_image(i, size)])
            for i, g in pairs
        ])
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


def _window(a: np.ndarray, radius: int, op: str) -> np.ndarray:
    """Max (op="max") or min over the (2·radius+1)² window clipped to the image (as max_pool2d pads with −inf),
    over the last two axes: separable, one 3-wide pass per radius step per axis (a 5x5 window clipped to a
    rectangle is a 3x3 one of a 3x3 one)."""
    import numpy as np

    fn = np.maximum if op == "max" else np.minimum
    out = a
    for axis in (-2, -1):
        for _ in range(radius):
            step = out.copy()
            # Shifted in-place maxima; the border keeps its own value, i.e. the window is clipped.
            lead = [slice(None)] * out.ndim
            lag = [slice(None)] * out.ndim
            lead[axis], lag[axis] = slice(1, None), slice(None, -1)
            fn(step[tuple(lead)], out[tuple(lag)], out=step[tuple(lead)])
            fn(step[tuple(lag)], out[tuple(lead)], out=step[tuple(lag)])
            out = step
    return out


def shape_features(pairs: np.ndarray) -> np.ndarray:
    """uint8 (B, 2, C, H, W) registered pairs (side 0 = input) → float32 (B, SHAPE_FEATURES), equal to
    model.change_shape(model.out_of_tolerance(x), x[:, 1]) with x = model.to_input(pairs), to 1e-6.

    Why not the model's torch code: on uint8 maps with integer thresholds (see _level) the out-of-tolerance
    map, the masks, erosions, openings and edge zones are all exact small-integer work, and the window means
    come from one integral image; torch's float max_pool2d of each of ~20 maps (up to 7x7, not separable)
    cost ≈ 20× the image decode. Tested against the model's code in tests/mining/test_shape_encoder.py."""
    import numpy as np

    from deft_aoi.runners.local import model

    if len(pairs) > _CACHE_PAIRS:
        return np.concatenate([shape_features(pairs[k : k + _CACHE_PAIRS])
                               for k in range(0, len(pairs), _CACHE_PAIRS)])
    units = model.GREY_LEVELS_PER_UNIT
    batch, _, channels, height, width = pairs.shape
    test, golden = pairs[:, 0], pairs[:, 1]

    def outside(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        # How far x lies above the max / below the min of ref's 3x3 neighbourhood; uint8 never underflows
        # here because max(x, high) ≥ high and low ≥ min(low, x).
        high = _window(ref, 1, "max")
        low = _window(ref, 1, "min")
        result: np.ndarray = (np.maximum(x, high) - high) + (low - np.minimum(low, x))
        return result

    # Grey-level out-of-tolerance map, max over both directions and the channels: (B, H, W) uint8.
    changed = np.maximum(outside(test, golden), outside(golden, test)).max(axis=1)

    features = np.empty((batch, model.SHAPE_FEATURES), dtype=np.float64)
    column = 0
    # Window means of the map at each size (zero padding counted, as avg_pool2d's default): one integral
    # image serves every window.
    reach = max(model.SHAPE_WINDOWS) // 2
    padded = np.zeros((batch, height + 2 * reach + 1, width + 2 * reach + 1), dtype=np.int32)
    padded[:, reach + 1 : reach + 1 + height, reach + 1 : reach + 1 + width] = changed
    integral = padded.cumsum(axis=1).cumsum(axis=2)
    for k in model.SHAPE_WINDOWS:
        r = k // 2
        hi_y, lo_y = slice(reach + 1 + r, reach + 1 + r + height), slice(reach - r, reach - r + height)
        hi_x, lo_x = slice(reach + 1 + r, reach + 1 + r + width), slice(reach - r, reach - r + width)
        sums = integral[:, hi_y, hi_x] - integral[:, lo_y, hi_x] - integral[:, hi_y, lo_x] + integral[:, lo_y, lo_x]
        features[:, column] = sums.max(axis=(1, 2)) / (k * k * units) / model.SHAPE_SCALE_MEAN
        column += 1

    def log_area(mask: np.ndarray) -> np.ndarray:
        # count_nonzero over a whole map is a SIMD popcount; with axis= it is a slow generic reduction (≈ 60×).
        counts = np.array([np.count_nonzero(one) for one in mask], dtype=np.float64)
        result: np.ndarray = np.log1p(counts) / model.SHAPE_SCALE_AREA
        return result

    for threshold in model.SHAPE_THRESHOLDS:
        mask = changed >= _level(threshold, units)
        features[:, column] = log_area(mask)
        column += 1
        eroded, done = mask, 0
        for radius in model.SHAPE_RADII:
            eroded, done = _window(eroded, radius - done, "min"), radius  # erosions compose
            features[:, column] = log_area(eroded)
            features[:, column + 1] = log_area(_window(eroded, radius, "max"))
            column += 2

    # The golden's copper edges: the 3x3 range of its channel mean above EDGE_CONTRAST, in channel sums.
    grey = golden.sum(axis=1, dtype=np.uint16)
    edges = (_window(grey, 1, "max") - _window(grey, 1, "min")) >= _level(model.EDGE_CONTRAST, channels * units)
    mask = changed >= _level(model.CHANGE_LEVEL, units)
    zone, done = edges, 0
    for radius in model.EDGE_RADII:
        zone, done = _window(zone, radius - done, "max"), radius
        features[:, column] = log_area(mask & ~zone)
        features[:, column + 1] = log_area(mask & zone)
        column += 2
    if column != model.SHAPE_FEATURES:
        raise AssertionError(f"change_shape has {model.SHAPE_FEATURES} features, this code {column}")
    return features.astype(np.float32)
