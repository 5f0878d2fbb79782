"""Rasterise a Scene into an RGB float image (vectorised numpy; each shape only touches its bounding box).

Edges are anti-aliased by a one-pixel ramp on the signed distance, so sub-pixel shifts and rotations
(process variation, component shift, tombstoning) change the image smoothly like a real camera.
"""

from __future__ import annotations

import math

import numpy as np

from deft_aoi.demo.scene import CANVAS, STATIC_PARTS, Scene, Shape

_COORD = np.arange(CANVAS, dtype=np.float32) + 0.5  # pixel centres


def _bbox(shape: Shape) -> tuple[int, int, int, int]:
    if shape.kind == "line":
        pad = shape.w / 2 + 1.5
        x0, x1 = min(shape.cx, shape.x1) - pad, max(shape.cx, shape.x1) + pad
        y0, y1 = min(shape.cy, shape.y1) - pad, max(shape.cy, shape.y1) + pad
    else:
        r = 0.5 * math.hypot(shape.w, shape.h) + 1.5
        x0, x1, y0, y1 = shape.cx - r, shape.cx + r, shape.cy - r, shape.cy + r

    def clamp(v: float) -> int:
        return min(max(int(v), 0), CANVAS)

    return clamp(math.floor(y0)), clamp(math.ceil(y1)), clamp(math.floor(x0)), clamp(math.ceil(x1))


def _ramp(x: np.ndarray) -> np.ndarray:
    """Anti-aliased inside-ness from a signed distance (px, positive inside): 0 outside, 1 inside."""
    return np.minimum(np.maximum(x + 0.5, 0.0), 1.0)


def _coverage(shape: Shape, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(coverage in [0, 1], normalised radius² for shading, or None when the shape is flat)."""
    if shape.kind == "line":
        dx, dy = shape.x1 - shape.cx, shape.y1 - shape.cy
        length2 = max(dx * dx + dy * dy, 1e-6)
        t = np.minimum(np.maximum(((xx - shape.cx) * dx + (yy - shape.cy) * dy) / length2, 0.0), 1.0)
        dist = np.hypot(xx - (shape.cx + t * dx), yy - (shape.cy + t * dy))
        return _ramp(shape.w / 2 - dist), None
    a = math.radians(shape.angle)
    ca, sa = math.cos(a), math.sin(a)
    ox, oy = xx - shape.cx, yy - shape.cy
    # Axis-aligned shapes keep u as a row and v as a column; the products below broadcast to 2-D.
    u, v = (ox * ca + oy * sa, oy * ca - ox * sa) if sa else (ox, oy)
    hw, hh = max(shape.w / 2, 1e-3), max(shape.h / 2, 1e-3)
    if shape.kind == "ellipse":
        d = np.sqrt((u / hw) ** 2 + (v / hh) ** 2)
        return _ramp((1.0 - d) * min(hw, hh)), (np.minimum(d * d, 1.0) if shape.shade else None)
    au, av = np.abs(u), np.abs(v)
    cov = _ramp(hw - au) * _ramp(hh - av)
    if shape.outline > 0:
        ring = shape.outline
        cov = cov - _ramp(hw - ring - au) * _ramp(hh - ring - av)
    if not shape.shade:
        return cov, None
    nu, nv = (au / hw) ** 2, (av / hh) ** 2
    # Rectangles shade along both axes so bodies darken towards all four edges.
    return cov, np.minimum(0.5 * np.maximum(nu, nv) + 0.5 * (nu + nv), 1.0)


def _smooth_upsampler(coarse: int) -> np.ndarray:
    """CANVAS × coarse matrix M so that M @ g @ M.T is a smooth CANVAS² field through a coarse grid g."""
    pos = (_COORD / CANVAS) * (coarse - 1)
    weights = np.exp(-(((pos[:, None] - np.arange(coarse)[None, :]) / 0.7) ** 2))
    upsampler: np.ndarray = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    return upsampler


_COARSE = 9
_UPSAMPLE = _smooth_upsampler(_COARSE)
_TEX_TINT = np.array([0.8, 1.2, 0.9], dtype=np.float32)


def board_texture(scene: Scene) -> np.ndarray:
    """Solder-mask background: low-frequency unevenness, glass-weave ripple and fine grain (CANVAS² × 3)."""
    rng = np.random.Generator(np.random.PCG64(scene.texture_seed))
    coarse = rng.standard_normal((_COARSE, _COARSE), dtype=np.float32)
    low = _UPSAMPLE @ coarse @ _UPSAMPLE.T
    low *= 5.0 / max(float(low.std()), 1e-3)
    phase = rng.uniform(0, 2 * math.pi, 2)
    weave = np.sin(_COORD[None, :] * 1.1 + phase[0]) * np.sin(_COORD[:, None] * 1.1 + phase[1])
    grain = rng.random((CANVAS, CANVAS), dtype=np.float32) - 0.5  # uniform: ~5x cheaper than normal draws
    tex = low + 2.0 * weave + 5.0 * grain
    base = np.asarray(scene.mask_color, dtype=np.float32)
    texture: np.ndarray = base[None, None, :] + tex[..., None] * _TEX_TINT
    return texture


def paint_shapes(background: np.ndarray, shapes: tuple[Shape, ...] | list[Shape]) -> np.ndarray:
    """A copy of `background` with `shapes` painted over it in order."""
    img = background.copy()
    for shape in shapes:
        y0, y1, x0, x1 = _bbox(shape)
        if y0 >= y1 or x0 >= x1:
            continue
        cov, r2 = _coverage(shape, _COORD[y0:y1, None], _COORD[None, x0:x1])
        color = np.asarray(shape.color, dtype=np.float32)[None, None, :]
        paint: np.ndarray
        if r2 is None:
            paint = color
        elif shape.shade > 0:
            # Specular dome: solder and metal are brightest at the top of their curve.
            paint = color * (1.0 + shape.shade * (1.0 - r2))[..., None]
        else:
            paint = color * (1.0 + shape.shade * r2 * r2)[..., None]
        region = img[y0:y1, x0:x1]
        region += (paint - region) * cov[..., None]
    return img


def render_board(scene: Scene) -> np.ndarray:
    """Texture plus the STATIC_PARTS (traces, pads, silkscreen): what no defect or nuisance changes."""
    return paint_shapes(board_texture(scene), scene.of(*STATIC_PARTS))


def render_scene(scene: Scene, board: np.ndarray | None = None) -> np.ndarray:
    """The scene as float32 RGB (CANVAS × CANVAS × 3, nominally 0..255, not yet clipped).

    `board` is `render_board(scene)` when the caller already has it: a golden and its test share the
    same board, and reusing it halves the work.
    """
    if board is None:
        board = render_board(scene)
    return paint_shapes(board, [s for s in scene.shapes if s.part not in STATIC_PARTS])
