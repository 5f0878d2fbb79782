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
from deft_aoi.mining.embedders.morphology import window_extreme as _window

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


def _box_maxima(changed: np.ndarray, windows: Sequence[int]) -> list[np.ndarray]:
    """Per image, the largest sum of `changed` (uint8 (B, H, W)) over any k×k window (zero padding counted, as
    avg_pool2d's default), for each k in windows (odd, ascending): separable sums of a zero-padded copy, in
    uint16 (a 7x7 sum of grey levels fits), on the whole batch as one flat array (see _window).

    Padding is `reach` rows and columns on every side, so no window centred on the image reaches another
    image's pixels; windows centred in the padding cover a subset of a border window's pixels, so with
    non-negative values they never exceed the image's own maximum and the max can run over everything."""
    import numpy as np

    batch, height, width = changed.shape
    reach = max(windows) // 2
    row = width + 2 * reach
    padded = np.zeros((batch, height + 2 * reach, row), dtype=np.uint16)
    padded[:, reach : reach + height, reach : reach + width] = changed
    flat = padded.reshape(-1)
    size = len(flat)
    rows = np.zeros_like(flat)
    across = rows[reach : size - reach]
    across += flat[reach : size - reach]
    row_sums: dict[int, np.ndarray] = {}
    for d in range(1, reach + 1):
        across += flat[reach - d : size - reach - d]
        across += flat[reach + d : size - reach + d]
        if 2 * d + 1 in windows:
            row_sums[2 * d + 1] = rows.copy()
    maxima = []
    margin = reach * row
    for k in windows:
        source = row_sums[k] if k > 1 else flat
        sums = source[margin : size - margin].copy()
        for d in range(1, k // 2 + 1):
            sums += source[margin - d * row : size - margin - d * row]
            sums += source[margin + d * row : size - margin + d * row]
        whole = np.zeros(size, dtype=np.uint16)
        whole[margin : size - margin] = sums
        maxima.append(whole.reshape(batch, -1).max(axis=1))
    return maxima


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
    map, the masks, erosions, openings and edge zones are all exact small-integer work; torch's float
    max_pool2d of each of ~20 maps (up to 7x7, not separable) cost ≈ 20× the image decode. Two exact
    shortcuts: flat morphology commutes with thresholding (eroding `map ≥ t` = `erode(map) ≥ t`), so the
    erosions and openings run once on the grey map instead of once per threshold; window sums are separable.
    Tested against the model's code in tests/mining/test_shape.py."""
    import numpy as np

    from deft_aoi.mining.embedders.shape_kernels import count_at_least as count_kernel
    from deft_aoi.runners.local import model

    if len(pairs) > _CACHE_PAIRS:
        return np.concatenate([shape_features(pairs[k : k + _CACHE_PAIRS])
                               for k in range(0, len(pairs), _CACHE_PAIRS)])
    units = model.GREY_LEVELS_PER_UNIT
    batch, _, channels, height, width = pairs.shape
    test, golden = _channels_last(pairs[:, 0]), _channels_last(pairs[:, 1])

    def outside(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        # How far x lies above the max / below the min of ref's 3x3 neighbourhood (at most one is non-zero);
        # uint8 never underflows here because max(x, high) ≥ high and low ≥ min(low, x).
        high, low = _window(ref, 1, "max", channels), _window(ref, 1, "min", channels)
        above: np.ndarray = np.maximum(x, high)
        above -= high
        below = np.minimum(low, x)
        np.subtract(low, below, out=below)
        above += below
        return above

    # Grey-level out-of-tolerance map, max over both directions and then the channels: (B, H, W) uint8.
    both = np.maximum(outside(test, golden), outside(golden, test)).reshape(-1, channels)
    changed = both[:, 0].copy()
    for c in range(1, channels):
        np.maximum(changed, both[:, c], out=changed)
    changed = changed.reshape(batch, height, width)

    features = np.empty((batch, model.SHAPE_FEATURES), dtype=np.float64)
    column = 0
    for k, peak in zip(model.SHAPE_WINDOWS, _box_maxima(changed, model.SHAPE_WINDOWS), strict=True):
        features[:, column] = peak / (k * k * units) / model.SHAPE_SCALE_MEAN
        column += 1

    def count_at_least(maps: np.ndarray, at_least: list[int]) -> np.ndarray:
        # Per image, the pixels of a uint8 or bool (B, H, W) map ≥ each level: (B, len(at_least)) int64.
        out = np.empty((len(maps), len(at_least)), dtype=np.int64)
        count_kernel(maps.reshape(len(maps), -1).view(np.uint8), np.asarray(at_least, dtype=np.uint8), out)
        return out

    def log_area(counts: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.log1p(counts.astype(np.float64)) / model.SHAPE_SCALE_AREA
        return result

    # The grey maps whose thresholds are the masks of every threshold: the map, then per radius its erosion
    # (erosions compose) and the opening of that erosion.
    maps, eroded, done = [changed], changed, 0
    for radius in model.SHAPE_RADII:
        eroded, done = _window(eroded, radius - done, "min"), radius
        maps += [eroded, _window(eroded, radius, "max")]
    levels = [_level(threshold, units) for threshold in model.SHAPE_THRESHOLDS]
    counts = np.stack([count_at_least(grey_map, levels) for grey_map in maps], axis=2)  # (B, level, map)
    for k in range(len(levels)):
        for m in range(len(maps)):
            features[:, column] = log_area(counts[:, k, m])
            column += 1

    # The golden's copper edges: the 3x3 range of its channel mean above EDGE_CONTRAST, in channel sums.
    pixels = golden.reshape(-1, channels)
    grey = pixels[:, 0].astype(np.uint16)
    for c in range(1, channels):
        grey += pixels[:, c]
    grey = grey.reshape(batch, height, width)
    edges = (_window(grey, 1, "max") - _window(grey, 1, "min")) >= _level(model.EDGE_CONTRAST, channels * units)
    mask = changed >= _level(model.CHANGE_LEVEL, units)
    total = count_at_least(mask, [1])[:, 0]
    zone, done = edges, 0
    for radius in model.EDGE_RADII:
        zone, done = _window(zone, radius - done, "max"), radius
        near = count_at_least(mask & zone, [1])[:, 0]
        features[:, column] = log_area(total - near)
        features[:, column + 1] = log_area(near)
        column += 2
    if column != model.SHAPE_FEATURES:
        raise AssertionError(f"change_shape has {model.SHAPE_FEATURES} features, this code {column}")
    return features.astype(np.float32)
