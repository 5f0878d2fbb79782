"""The vector description of one component crop: shapes in draw order on a textured board.

Defects and process variation edit a Scene (pure, immutable); `render.render_scene` rasterises it.
Coordinates are pixels on the render canvas, which is larger than the saved crop so that a
mis-registered test image can be cut from it without wrap-around or blank borders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

CROP = 64
MARGIN = 6
CANVAS = CROP + 2 * MARGIN
CENTER = CANVAS / 2.0

Kind = Literal["rect", "ellipse", "line"]
# `part` says what a shape is, so defects can find bodies, leads, fillets... without knowing the package.
Part = Literal["trace", "pad", "silk", "body", "terminal", "lead", "mark", "fillet", "paste", "extra"]
RGB = tuple[float, float, float]
# Drawn first and never edited by defects or process variation, so one render serves golden and test.
STATIC_PARTS: tuple[str, ...] = ("trace", "pad", "silk")

MASK_GREEN: RGB = (34.0, 92.0, 52.0)
TRACE_GREEN: RGB = (58.0, 128.0, 66.0)
PAD_GOLD: RGB = (196.0, 168.0, 96.0)
SOLDER: RGB = (190.0, 192.0, 198.0)
SILK: RGB = (222.0, 224.0, 214.0)
METAL: RGB = (168.0, 170.0, 176.0)


@dataclass(frozen=True)
class Shape:
    """A filled primitive. rect/ellipse: centre (cx, cy), size (w, h), rotation `angle` in degrees.
    line: from (cx, cy) to (x1, y1) with thickness `w`. `shade` > 0 adds a specular dome highlight
    (solder, metal), < 0 darkens towards the edges (moulded bodies). `group` ties a shape to one pin or
    terminal end so a defect can lift or bridge it."""

    kind: Kind
    part: Part
    cx: float
    cy: float
    w: float
    h: float
    color: RGB
    angle: float = 0.0
    shade: float = 0.0
    x1: float = 0.0
    y1: float = 0.0
    group: int = -1
    outline: float = 0.0  # > 0: only a ring of this width (silkscreen outlines)

    def moved(self, dx: float, dy: float) -> Shape:
        return replace(self, cx=self.cx + dx, cy=self.cy + dy, x1=self.x1 + dx, y1=self.y1 + dy)


@dataclass(frozen=True)
class Scene:
    """One component on its board patch. `texture_seed` fixes the board texture, so a test render and its
    golden share the same background exactly as two photos of the same board area would."""

    comp_type: str
    shapes: tuple[Shape, ...]
    texture_seed: int
    mask_color: RGB = MASK_GREEN
    pins: int = 2
    orientation: Literal["h", "v"] = "h"

    def with_shapes(self, shapes: tuple[Shape, ...] | list[Shape]) -> Scene:
        return replace(self, shapes=tuple(shapes))

    def of(self, *parts: str) -> tuple[Shape, ...]:
        return tuple(s for s in self.shapes if s.part in parts)
