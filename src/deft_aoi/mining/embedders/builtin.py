"""The built-in pair embedder: describes WHAT CHANGED between a test image and its golden, not the picture.

Pipeline per pair (numpy + PIL only, vectorised over a batch):
1. decode grayscale at `size`² (JPEG draft mode decodes straight at reduced scale, so decoding is cheap);
2. light 3×3 box blur: AOI speckle noise is single-pixel and would otherwise read as change;
3. integer-shift search aligns the golden to the input. Mis-registration is the main nuisance in AOI,
   so the shift itself is kept as a feature (a mis-registered pass is a "change" worth mining for);
4. a tolerant signed difference: `x − dilate(g)` (material added) and `erode(g) − x` (material removed);
   the 3×3 max/min absorbs sub-pixel edge jitter that survives the integer alignment;
5. features of the change — amount, polarity, shape moments of the change mask, orientation histograms,
   the golden's content inside/around the change (a hole inside copper vs a bite on an edge vs an
   isolated blob), a coarse location grid — plus a small descriptor of the input itself;
6. each block is normalised and weighted (the "raw" v1 vector);
7. (v2) every dimension is centred and scaled with FIXED constants (`builtin_calibration.py`, derived
   once from the procedural demo workspace, never from the data being mined), re-weighted per block, and
   the whole vector L2-normalised (cosine = dot product). The raw vector is mostly non-negative, so raw
   cosines all sit at ≈ 0.98 and a 0.9 cut-off meant nothing; standardised, the cosine scale spreads.

A "no change" dimension grows as the change vanishes, so clean pairs sit together and far from defects.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.base import Fingerprint, embed_chunks_threaded
from deft_aoi.mining.embedders.builtin_calibration import CALIBRATION_ID, FEATURE_MEAN, FEATURE_STD
from deft_aoi.mining.embedders.morphology import window_extreme

if TYPE_CHECKING:
    import numpy as np

NAME = "builtin-pairdiff"
VERSION = "2"
_CHUNK = 64


class BuiltinParams(BaseModel):
    """Every knob that changes the output space; all of them are hashed into the fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = 64
    max_shift: int = 3
    mask_threshold: float = 0.2
    change_scale: float = 0.004  # share of the crop that counts as "half changed" for the no-change dimension
    grid: int = 4
    ring_radii: tuple[int, ...] = (2, 5)
    input_grid: int = 8
    hist_bins: int = 8
    weights: tuple[tuple[str, float], ...] = (
        ("nochange", 1.6),
        ("registration", 0.9),
        ("polarity", 1.2),
        ("amount", 0.6),
        ("shape", 1.0),
        ("context", 1.2),
        ("orientation", 0.6),
        ("location", 0.35),
        ("input", 0.3),
    )
    # v2: per-block weight applied AFTER per-dimension standardisation (step 7).
    std_floor: float = 0.01  # a near-constant calibration dimension must not blow up into noise
    std_weights: tuple[tuple[str, float], ...] = (
        ("nochange", 1.6),
        ("registration", 0.9),
        ("polarity", 1.2),
        ("amount", 0.6),
        ("shape", 1.0),
        ("context", 1.2),
        ("orientation", 0.6),
        ("location", 0.35),
        ("input", 0.4),
    )
    calibration: str = CALIBRATION_ID


def _box3(a: np.ndarray) -> np.ndarray:
    """3×3 mean over the last two axes (edge-padded), via separable shifted sums: (top + middle) + bottom,
    then (left + centre) + right, each pass over the whole padded batch as one flat array (contiguous
    loops; see morphology.window_extreme); the sums that straddle a row end fall in the padding and are
    dropped. Same additions in the same order as a 2-D slice version, so the same float32 values."""
    import numpy as np

    n, h, w = a.shape
    p = np.empty((n, h + 2, w + 2), dtype=a.dtype)
    p[:, 1:-1, 1:-1] = a
    p[:, 0, 1:-1], p[:, -1, 1:-1] = a[:, 0], a[:, -1]
    p[:, :, 0], p[:, :, -1] = p[:, :, 1], p[:, :, -2]
    row = w + 2
    flat = p.reshape(n, -1)
    rows = flat[:, : h * row] + flat[:, row : (h + 1) * row]
    rows += flat[:, 2 * row : (h + 2) * row]
    line = rows.reshape(-1)
    sums = line[:-2] + line[1:-1]
    sums += line[2:]
    whole = np.empty_like(line)
    whole[:-2] = sums
    blurred: np.ndarray = whole.reshape(n, h, row)[:, :, :w] / 9.0
    return blurred


def _morph(a: np.ndarray, radius: int, op: str) -> np.ndarray:
    """Grayscale dilation (op="max") or erosion (op="min") with a square of side 2·radius+1, edge-padded
    (the same as clipping the window to the image)."""
    return window_extreme(a, radius, op)


def align_golden(x: np.ndarray, g: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best integer shift of each golden onto its input by mean absolute difference on the central crop.

    Returns (input crop, aligned golden crop, shifts (n, 2) as (dy, dx), cost ratio best/zero-shift).
    """
    import numpy as np

    n, s, _ = x.shape
    r = max_shift
    c = s - 2 * r
    xc = x[:, r : r + c, r : r + c]
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    costs = np.empty((n, len(offsets)), dtype=np.float32)
    # Each |xc − shifted golden| is the same contiguous (n, c, c) array the mean always reduced (so the same
    # float32 costs), but built from contiguous operands: per dx one copy of the golden's column band, each
    # dy a run of whole rows of it. Two strided crops per shift ran numpy's inner loop once per row.
    test = np.ascontiguousarray(xc)
    diff = np.empty_like(test)
    for dx in range(-r, r + 1):
        band = np.ascontiguousarray(g[:, :, r + dx : r + dx + c])
        for dy in range(-r, r + 1):
            np.subtract(test, band[:, r + dy : r + dy + c], out=diff)
            np.abs(diff, out=diff)
            costs[:, offsets.index((dy, dx))] = diff.mean(axis=(1, 2))
    # Ties (flat crops) resolve to the smallest shift: prefer "registered" unless the data says otherwise.
    penalty = np.array([abs(dy) + abs(dx) for dy, dx in offsets], dtype=np.float32) * 1e-6
    best = np.argmin(costs + penalty, axis=1)
    aligned = np.empty_like(xc)
    for j in np.unique(best):
        dy, dx = offsets[j]
        sel = best == j
        aligned[sel] = g[sel, r + dy : r + dy + c, r + dx : r + dx + c]
    shifts = np.array([offsets[j] for j in best], dtype=np.float32).reshape(n, 2)
    zero = costs[:, offsets.index((0, 0))]
    ratio = costs[np.arange(n), best] / np.maximum(zero, 1e-6)
    return xc, aligned, shifts, ratio


def _unit(v: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    import numpy as np

    unit: np.ndarray = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), floor)
    return unit


def _orientation_energy(a: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Gradient energy along 4 directions (0°, 45°, 90°, 135°): a 4-bin unsigned orientation histogram
    without arctan, which would cost more than the rest of the embedder together."""
    import numpy as np

    gy = a[:, 2:, 1:-1] - a[:, :-2, 1:-1]
    gx = a[:, 1:-1, 2:] - a[:, 1:-1, :-2]
    w = weight[:, 1:-1, 1:-1]
    diag = 0.70710677
    return np.stack(
        [
            (np.abs(gx) * w).sum(axis=(1, 2)),
            (np.abs(gx + gy) * diag * w).sum(axis=(1, 2)),
            (np.abs(gy) * w).sum(axis=(1, 2)),
            (np.abs(gx - gy) * diag * w).sum(axis=(1, 2)),
        ],
        axis=1,
    ).astype(np.float32)


def _shape_moments(w: np.ndarray) -> np.ndarray:
    """Rotation-invariant shape of a weighted change map: spread, elongation, compactness, 2θ-orientation."""
    import numpy as np

    _, h, wd = w.shape
    yy, xx = np.mgrid[0:h, 0:wd].astype(np.float32)
    m0 = w.sum(axis=(1, 2)) + 1e-6
    cy = (w * yy).sum(axis=(1, 2)) / m0
    cx = (w * xx).sum(axis=(1, 2)) / m0
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    syy = (w * dy * dy).sum(axis=(1, 2)) / m0
    sxx = (w * dx * dx).sum(axis=(1, 2)) / m0
    sxy = (w * dx * dy).sum(axis=(1, 2)) / m0
    tr = syy + sxx
    det_term = np.sqrt(np.maximum((sxx - syy) ** 2 / 4 + sxy**2, 0))
    l1 = tr / 2 + det_term
    l2 = np.maximum(tr / 2 - det_term, 0)
    major = np.sqrt(l1) / h
    minor = np.sqrt(l2) / h
    elong = 1 - np.sqrt(l2 / np.maximum(l1, 1e-6))
    area = (w > 0).sum(axis=(1, 2)) / float(h * wd)
    # Compactness: how much of the ellipse of inertia the mass fills (blob ≈ high, scattered ≈ low).
    ellipse = np.pi * 4 * np.sqrt(l1 * l2) / float(h * wd) + 1e-6
    compact = np.minimum(area / ellipse, 2.0)
    theta2 = np.arctan2(2 * sxy, sxx - syy)
    aniso = elong
    return np.stack(
        [major * 4, minor * 4, elong, compact / 2, np.sqrt(area) * 4, aniso * np.cos(theta2), aniso * np.sin(theta2)],
        axis=1,
    ).astype(np.float32)


def pair_features(x: np.ndarray, g: np.ndarray, p: BuiltinParams, *, chunk: int = 128) -> np.ndarray:
    """Pure maths: (n, S, S) input and golden in [0, 1] → (n, dim) L2-normalised float32 embeddings."""
    import numpy as np

    if x.shape[0] <= chunk:
        return _pair_features(x, g, p)
    # Small chunks keep the ~30 intermediate arrays in CPU cache; one huge batch is memory-bound.
    return np.concatenate([_pair_features(x[i : i + chunk], g[i : i + chunk], p) for i in range(0, len(x), chunk)])


def _pair_features(x: np.ndarray, g: np.ndarray, p: BuiltinParams) -> np.ndarray:
    import numpy as np

    n = x.shape[0]
    x = _box3(x.astype(np.float32))
    g = _box3(g.astype(np.float32))
    xc, ga, shifts, ratio = align_golden(x, g, p.max_shift)
    c = xc.shape[1]

    added = np.maximum(xc - _morph(ga, 1, "max"), 0)  # brighter than any nearby golden pixel
    removed = np.maximum(_morph(ga, 1, "min") - xc, 0)  # darker than any nearby golden pixel
    # Zero a 1-px frame: the crop edge is where alignment has least support.
    for a in (added, removed):
        a[:, :1, :] = 0
        a[:, -1:, :] = 0
        a[:, :, :1] = 0
        a[:, :, -1:] = 0
    change = added + removed
    mask = change > p.mask_threshold
    area = mask.mean(axis=(1, 2))
    changed = (area / (area + p.change_scale)).astype(np.float32)  # 0 = nothing changed, → 1 = clear change

    blocks: dict[str, np.ndarray] = {}
    blocks["nochange"] = (1 - changed)[:, None]

    mag = np.abs(shifts).sum(axis=1)
    reg = np.stack([mag == 0, mag == 1, mag == 2, mag >= 3], axis=1).astype(np.float32)
    reg = np.concatenate([reg, (1 - np.clip(ratio, 0, 1))[:, None]], axis=1)
    blocks["registration"] = _unit(reg)

    a_mass = (added * mask).sum(axis=(1, 2))
    r_mass = (removed * mask).sum(axis=(1, 2))
    blocks["polarity"] = _unit(np.stack([a_mass, r_mass], axis=1)) * changed[:, None]

    amount = np.stack(
        [np.sqrt(area) * 4, np.sqrt(change.mean(axis=(1, 2))) * 4, change.max(axis=(1, 2))], axis=1
    )
    blocks["amount"] = _unit(amount) * changed[:, None]

    w_add = added * mask
    w_rem = removed * mask
    shape = np.concatenate([_shape_moments(change * mask), _shape_moments(w_add), _shape_moments(w_rem)], axis=1)
    blocks["shape"] = _unit(shape) * changed[:, None]

    # Context: what the golden held under and around the change (copper fraction in rings), per polarity.
    ctx = []
    for w in (mask, w_add > 0, w_rem > 0):
        inside = w.sum(axis=(1, 2)) + 1e-6
        ctx.append(np.where(w, ga, 0).sum(axis=(1, 2)) / inside)
        prev, grown_by = w, 0
        for radius in p.ring_radii:
            grown = _morph(prev, radius - grown_by, "max")  # boolean, incremental: cheap
            ring = grown & ~prev
            count = ring.sum(axis=(1, 2)) + 1e-6
            ctx.append(np.where(ring, ga, 0).sum(axis=(1, 2)) / count)
            ctx.append(np.where(ring, xc, 0).sum(axis=(1, 2)) / count)
            prev, grown_by = grown, radius
    context = np.stack(ctx, axis=1)
    blocks["context"] = _unit(context - 0.5) * changed[:, None]

    near = _morph(mask, 3, "max")
    orient = np.concatenate([_orientation_energy(change, mask), _orientation_energy(ga, near)], axis=1)
    blocks["orientation"] = _unit(orient) * changed[:, None]

    k = p.grid
    cell = c // k
    grid = change[:, : cell * k, : cell * k].reshape(n, k, cell, k, cell).mean(axis=(2, 4)).reshape(n, k * k)
    blocks["location"] = _unit(grid) * changed[:, None]

    m = p.input_grid
    cell = c // m
    small = xc[:, : cell * m, : cell * m].reshape(n, m, cell, m, cell).mean(axis=(2, 4)).reshape(n, m * m)
    small = small - small.mean(axis=1, keepdims=True)
    # Bin indices once; a bin's share as count / pixels, the value bool.mean gave (an exact float64 sum).
    level = np.floor(xc * p.hist_bins)
    hist = np.stack([np.count_nonzero(level == b, axis=(1, 2)) / (c * c) for b in range(p.hist_bins)], axis=1)
    blocks["input"] = _unit(np.concatenate([_unit(small), _unit(hist)], axis=1))

    weights = dict(p.weights)
    parts = [blocks[name] * weights[name] for name, _ in p.weights]
    raw = _unit(np.concatenate(parts, axis=1).astype(np.float32))
    return standardise(raw, [blocks[name].shape[1] for name, _ in p.weights], p)


def standardise(raw: np.ndarray, block_dims: Sequence[int], p: BuiltinParams) -> np.ndarray:
    """Step 7: fixed per-dimension centre/scale, per-block weight, L2 norm (pure; constants in code)."""
    import numpy as np

    mean = np.asarray(FEATURE_MEAN, dtype=np.float32)
    std = np.maximum(np.asarray(FEATURE_STD, dtype=np.float32), p.std_floor)
    if raw.shape[1] != len(mean):
        raise ValueError(f"calibration holds {len(mean)} dims, features have {raw.shape[1]}: params changed "
                         "without recalibrating")
    std_w = dict(p.std_weights)
    scale = np.concatenate([np.full(d, std_w[name], dtype=np.float32)
                            for (name, _), d in zip(p.weights, block_dims, strict=True)])
    return _unit(((raw - mean) / std * scale).astype(np.float32))


def feature_dim(p: BuiltinParams) -> int:
    import numpy as np

    z = np.zeros((1, p.size, p.size), dtype=np.float32)
    return int(pair_features(z, z, p).shape[1])


def load_gray(path: str, size: int) -> np.ndarray:
    """Decode one image as grayscale float32 [0, 1] at size×size."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from deft_aoi.imaging import open_image, to_8bit

    try:
        with open_image(path) as im:
            im.draft("L", (size, size))  # JPEG: decode at the nearest DCT scale ≥ size (much faster)
            im = to_8bit(im).convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BOX)
            return np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise InputError("image not found", file=path) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot decode image: {exc}", file=path) from exc


class BuiltinEmbedder:
    """Default encoder: no download, CPU only."""

    def __init__(self, params: BuiltinParams | None = None, *, workers: int | None = None) -> None:
        self.params = params or BuiltinParams()
        self.workers = workers or min(8, os.cpu_count() or 1)

    @cached_property
    def fingerprint(self) -> Fingerprint:
        blob = self.params.model_dump_json().encode("utf-8")
        return Fingerprint(
            name=NAME,
            version=VERSION,
            weights_hash=hashlib.sha256(blob).hexdigest()[:16],
            preprocessing=f"gray,{self.params.size}px,box3,shift±{self.params.max_shift},std:{self.params.calibration}",
            dim=feature_dim(self.params),
        )

    @property
    def device(self) -> str:
        return "cpu"

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        return embed_chunks_threaded(inputs, goldens, dim=self.fingerprint.dim, chunk=_CHUNK, workers=self.workers,
                                     embed_chunk=self._embed_chunk)

    def _embed_chunk(self, pairs: list[tuple[str, str | None]]) -> np.ndarray:
        import numpy as np

        size = self.params.size
        x = np.stack([load_gray(i, size) for i, _ in pairs])
        # A row without a golden compares against itself: only the input descriptor then carries signal.
        g = np.stack([load_gray(gp or i, size) for i, gp in pairs])
        return self.embed_arrays(x, g)

    def embed_arrays(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Embed already-decoded (n, size, size) arrays in [0, 1]."""
        return pair_features(x, g, self.params)
