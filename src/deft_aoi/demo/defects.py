"""Defects as scene edits: each takes a nominal Scene and returns the defective one (pure functions).

missing (component absent, solder left on the pads), shift (body off its pads), bridge (solder joining
two neighbouring leads), tombstone (a chip standing on one end, the other pad bare), scratch (a thin line
through the solder mask), solder_ball (a stray solder sphere on the board).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from deft_aoi.demo.components import KINDS, MULTI_LEAD, TWO_TERMINAL
from deft_aoi.demo.scene import CENTER, CROP, METAL, SOLDER, Scene, Shape

DEFECT_TYPES: tuple[str, ...] = ("missing", "shift", "bridge", "tombstone", "scratch", "solder_ball")
COMPONENT_PARTS = ("body", "terminal", "lead", "mark")

# Which component types a defect can physically occur on.
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "missing": tuple(KINDS),
    "shift": tuple(KINDS),
    "bridge": MULTI_LEAD,
    "tombstone": TWO_TERMINAL,
    "scratch": tuple(KINDS),
    "solder_ball": tuple(KINDS),
}


def _rigid(shape: Shape, dx: float, dy: float, angle: float) -> Shape:
    """Move a component part as one rigid body: rotate about the canvas centre, then translate."""
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    rx, ry = shape.cx - CENTER, shape.cy - CENTER
    cx, cy = CENTER + rx * ca - ry * sa + dx, CENTER + rx * sa + ry * ca + dy
    return replace(shape, cx=cx, cy=cy, angle=shape.angle + angle)


def _solder_on_pad(pad: Shape) -> Shape:
    """Reflowed solder left on a bare pad: a bright dome a little smaller than the pad."""
    return replace(pad, part="paste", w=pad.w * 0.8, h=pad.h * 0.8, color=SOLDER, shade=0.35)


def missing(scene: Scene, rng: np.random.Generator) -> Scene:
    kept = [s for s in scene.shapes if s.part not in (*COMPONENT_PARTS, "fillet")]
    return scene.with_shapes(kept + [_solder_on_pad(p) for p in scene.of("pad")])


def shift(scene: Scene, rng: np.random.Generator) -> Scene:
    offset = rng.uniform(3.5, 6.0) * rng.choice([-1.0, 1.0])
    along = rng.random() < 0.5
    horizontal = (scene.orientation == "h") == along
    dx, dy = (offset, 0.0) if horizontal else (0.0, offset)
    angle = float(rng.uniform(-6.0, 6.0))
    moved = [_rigid(s, dx, dy, angle) if s.part in COMPONENT_PARTS else s for s in scene.shapes]
    return scene.with_shapes(moved)


def bridge(scene: Scene, rng: np.random.Generator) -> Scene:
    fillets = scene.of("fillet")
    # Pins of one row share the coordinate across the row; neighbours differ along it.
    across: Callable[[Shape], float] = (lambda s: s.cy) if scene.orientation == "h" else (lambda s: s.cx)
    along: Callable[[Shape], float] = (lambda s: s.cx) if scene.orientation == "h" else (lambda s: s.cy)
    rows: dict[int, list[Shape]] = {}
    for f in fillets:
        rows.setdefault(round(across(f)), []).append(f)
    candidates = [sorted(r, key=along) for r in rows.values() if len(r) >= 2]
    row = candidates[int(rng.integers(len(candidates)))]
    i = int(rng.integers(len(row) - 1))
    a, b = row[i], row[i + 1]
    span = abs(along(b) - along(a)) + min(a.w, a.h)
    thick = float(rng.uniform(3.5, 5.5))
    w, h = (span, thick) if scene.orientation == "h" else (thick, span)
    blob = Shape("rect", "extra", (a.cx + b.cx) / 2, (a.cy + b.cy) / 2, w, h, SOLDER, shade=0.5)
    return scene.with_shapes([*scene.shapes, blob])


def tombstone(scene: Scene, rng: np.random.Generator) -> Scene:
    lifted = int(rng.integers(2))
    pads = {p.group: p for p in scene.of("pad")}
    standing = pads[1 - lifted]
    body = scene.of("body")[0]
    width = body.h if scene.orientation == "h" else body.w
    inward = 1.0 if lifted == 1 else -1.0  # towards the lifted end
    thick = float(rng.uniform(6.0, 9.0))
    if scene.orientation == "h":
        cx, cy, w, h = standing.cx + inward * standing.w * 0.2, standing.cy, thick, width
    else:
        cx, cy, w, h = standing.cx, standing.cy + inward * standing.h * 0.2, width, thick
    # Seen from above, an upright chip shows only its end cap, slightly tilted.
    upright = Shape("rect", "terminal", cx, cy, w, h, METAL, angle=float(rng.uniform(-15, 15)), shade=0.35)
    kept = [
        s for s in scene.shapes
        if s.part not in COMPONENT_PARTS and not (s.part == "fillet" and s.group == lifted)
    ]
    return scene.with_shapes([*kept, _solder_on_pad(pads[lifted]), upright])


def _crop_point(rng: np.random.Generator, inset: float) -> tuple[float, float]:
    lo, hi = CENTER - CROP / 2 + inset, CENTER + CROP / 2 - inset
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def scratch(scene: Scene, rng: np.random.Generator) -> Scene:
    x0, y0 = _crop_point(rng, 8.0)
    length, theta = rng.uniform(18.0, 40.0), rng.uniform(0, math.pi)
    x1, y1 = x0 + length * math.cos(theta), y0 + length * math.sin(theta)
    color = (150.0 + rng.uniform(-15, 15), 165.0 + rng.uniform(-15, 15), 125.0)
    line = Shape("line", "extra", x0, y0, float(rng.uniform(1.0, 1.6)), 1.0, color, x1=x1, y1=y1)
    return scene.with_shapes([*scene.shapes, line])


def solder_ball(scene: Scene, rng: np.random.Generator) -> Scene:
    # A ring around the part keeps the ball on the mask, where a real one is a reliability risk.
    theta, radius = rng.uniform(0, 2 * math.pi), rng.uniform(19.0, 26.0)
    d = float(rng.uniform(3.0, 5.0))
    ball = Shape("ellipse", "extra", CENTER + radius * math.cos(theta), CENTER + radius * math.sin(theta), d, d,
                 SOLDER, shade=0.6)
    return scene.with_shapes([*scene.shapes, ball])


APPLY: dict[str, Callable[[Scene, np.random.Generator], Scene]] = {
    "missing": missing,
    "shift": shift,
    "bridge": bridge,
    "tombstone": tombstone,
    "scratch": scratch,
    "solder_ball": solder_ball,
}


def apply_defect(scene: Scene, defect: str, rng: np.random.Generator) -> Scene:
    if scene.comp_type not in COMPATIBLE[defect]:
        raise ValueError(f"defect {defect!r} cannot occur on a {scene.comp_type}")
    return APPLY[defect](scene, rng)


def process_variation(scene: Scene, rng: np.random.Generator) -> Scene:
    """A good part is never pixel-identical to its golden: placement jitter and fillet volume vary."""
    dx, dy = rng.normal(0.0, 0.35, 2)
    angle = float(rng.normal(0.0, 0.8))
    scale = float(rng.uniform(0.9, 1.1))
    out = []
    for s in scene.shapes:
        if s.part in COMPONENT_PARTS:
            s = _rigid(s, float(dx), float(dy), angle)
        elif s.part == "fillet":
            s = replace(s, w=s.w * scale, h=s.h * scale)
        out.append(s)
    return scene.with_shapes(out)
