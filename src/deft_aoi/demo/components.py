"""Nominal (defect-free) component scenes: 2-terminal chips, SOD diodes, SOT-23 transistors, SOIC-8 ICs.

Each builder lays out pads, traces, silkscreen, the body, its terminals or gull-wing leads and solder
fillets around the canvas centre; the whole scene is then optionally turned 90°.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from deft_aoi.demo.scene import (
    CANVAS,
    CENTER,
    METAL,
    PAD_GOLD,
    RGB,
    SILK,
    SOLDER,
    TRACE_GREEN,
    Scene,
    Shape,
)


@dataclass(frozen=True)
class ComponentKind:
    """Catalogue entry: what the CSV says about a component type and how to draw it."""

    comp_type: str  # comp_type_1 in the CSV
    package: str  # comp_type_2
    part_types: tuple[str, ...]
    pins: int
    prefix: str  # reference-designator letter(s)
    two_terminal: bool


KINDS: dict[str, ComponentKind] = {
    "resistor": ComponentKind("resistor", "0603", ("RES_0603_10K", "RES_0603_4K7", "RES_0603_100R"), 2, "R", True),
    "capacitor": ComponentKind("capacitor", "0805", ("CAP_0805_100N", "CAP_0805_1U", "CAP_0805_10U"), 2, "C", True),
    "diode": ComponentKind("diode", "SOD-123", ("DIO_SOD123_1N4148", "DIO_SOD123_BAT54"), 2, "D", True),
    "transistor": ComponentKind("transistor", "SOT-23", ("NPN_SOT23_BC847", "PMOS_SOT23_AO3401"), 3, "Q", False),
    "ic": ComponentKind("ic", "SOIC-8", ("IC_SOIC8_LM358", "IC_SOIC8_24C02"), 8, "U", False),
}
TWO_TERMINAL = tuple(k for k, v in KINDS.items() if v.two_terminal)
MULTI_LEAD = tuple(k for k, v in KINDS.items() if not v.two_terminal)


def _jitter(rng: np.random.Generator, value: float, rel: float = 0.08) -> float:
    return float(value * (1.0 + rng.uniform(-rel, rel)))


def _tint(rng: np.random.Generator, color: RGB, amount: float = 8.0) -> RGB:
    d = rng.uniform(-amount, amount, 3)
    return (color[0] + float(d[0]), color[1] + float(d[1]), color[2] + float(d[2]))


def _rect(part: str, cx: float, cy: float, w: float, h: float, color: RGB, **kw: float | int) -> Shape:
    return Shape("rect", part, cx, cy, w, h, color, **kw)  # type: ignore[arg-type]


def _trace(x0: float, y0: float, x1: float, y1: float, width: float) -> Shape:
    return Shape("line", "trace", x0, y0, width, width, TRACE_GREEN, x1=x1, y1=y1)


def _silk_box(cx: float, cy: float, w: float, h: float) -> Shape:
    return _rect("silk", cx, cy, w, h, SILK, outline=1.2)


def _two_terminal(rng: np.random.Generator, kind: str) -> list[Shape]:
    c = CENTER
    length = _jitter(rng, 32.0 if kind != "resistor" else 28.0)
    width = _jitter(rng, 16.0 if kind == "capacitor" else 13.0)
    cap = _jitter(rng, 6.0) if kind != "diode" else 0.0
    pad_w, pad_h = _jitter(rng, 13.0), width + _jitter(rng, 6.0)
    pad_x = length / 2 - 2.0
    trace_w = _jitter(rng, 4.0)
    body_color = {"resistor": (30.0, 30.0, 33.0), "capacitor": (172.0, 132.0, 86.0), "diode": (40.0, 40.0, 44.0)}[kind]
    shapes: list[Shape] = []
    for side, sign in ((0, -1.0), (1, 1.0)):
        px = c + sign * pad_x
        shapes.append(_trace(px, c, px + sign * CANVAS, c, trace_w))
        shapes.append(_rect("pad", px, c, pad_w, pad_h, _tint(rng, PAD_GOLD), group=side))
    shapes.append(_silk_box(c, c, length + pad_w + 8.0, pad_h + 8.0))
    body_len = length - 2 * cap if cap else length - 8.0
    shapes.append(_rect("body", c, c, body_len, width, _tint(rng, body_color, 5.0), shade=-0.25))
    for side, sign in ((0, -1.0), (1, 1.0)):
        if kind == "diode":
            # SOD-123: flat leads leave the moulded body at both ends.
            lead_x = c + sign * (length / 2 - 3.0)
            shapes.append(_rect("terminal", lead_x, c, 8.0, width * 0.55, _tint(rng, METAL), shade=0.3, group=side))
            outer = lead_x + sign * 4.0
        else:
            cap_x = c + sign * (length / 2 - cap / 2)
            shapes.append(_rect("terminal", cap_x, c, cap, width, _tint(rng, METAL), shade=0.3, group=side))
            outer = cap_x + sign * cap / 2
        pad_outer = c + sign * (pad_x + pad_w / 2)
        fillet_w = abs(pad_outer - outer) + 1.0
        fillet_x = (pad_outer + outer) / 2
        shapes.append(_rect("fillet", fillet_x, c, fillet_w, pad_h * 0.85, _tint(rng, SOLDER, 5.0), shade=0.45,
                            group=side))
    if kind == "diode":
        band_x = c - length / 2 + 10.0
        shapes.append(_rect("mark", band_x, c, 3.0, width * 0.9, (150.0, 150.0, 150.0)))
    return shapes


def _gull_wing(rng: np.random.Generator, kind: str) -> list[Shape]:
    c = CENTER
    xs_top: tuple[float, ...]
    xs_bot: tuple[float, ...]
    if kind == "ic":
        body_w, body_h, pitch = _jitter(rng, 34.0, 0.04), _jitter(rng, 22.0, 0.05), 8.0
        xs_top, xs_bot = (-1.5, -0.5, 0.5, 1.5), (-1.5, -0.5, 0.5, 1.5)
    else:
        body_w, body_h, pitch = _jitter(rng, 22.0, 0.05), _jitter(rng, 13.0, 0.06), 9.5
        xs_top, xs_bot = (0.0,), (-1.0, 1.0)
    lead_w, lead_len = _jitter(rng, 4.0, 0.1), _jitter(rng, 7.0, 0.1)
    pad_w, pad_h = lead_w + 3.0, lead_len + 5.0
    trace_w = _jitter(rng, 3.0, 0.1)
    shapes: list[Shape] = []
    pins: list[tuple[int, float, float]] = []  # (group, x, sign) with sign -1 = top row
    group = 0
    for sign, xs in ((1.0, xs_bot), (-1.0, xs_top)):
        for k in xs:
            pins.append((group, c + k * pitch, sign))
            group += 1
    for g, x, sign in pins:
        lead_cy = c + sign * (body_h / 2 + lead_len / 2 - 1.0)
        pad_cy = lead_cy + sign * 2.0
        shapes.append(_trace(x, pad_cy, x, pad_cy + sign * CANVAS, trace_w))
        shapes.append(_rect("pad", x, pad_cy, pad_w, pad_h, _tint(rng, PAD_GOLD), group=g))
    shapes.append(_silk_box(c, c, body_w + 6.0, body_h + 2 * lead_len + 10.0))
    for g, x, sign in pins:
        lead_cy = c + sign * (body_h / 2 + lead_len / 2 - 1.0)
        shapes.append(_rect("lead", x, lead_cy, lead_w, lead_len, _tint(rng, METAL), shade=0.3, group=g))
        tip = lead_cy + sign * (lead_len / 2 - 1.0)
        shapes.append(_rect("fillet", x, tip, lead_w + 2.0, 4.5, _tint(rng, SOLDER, 5.0), shade=0.5, group=g))
    shapes.append(_rect("body", c, c, body_w, body_h, _tint(rng, (32.0, 32.0, 36.0), 4.0), shade=-0.2))
    # Pin-1 dot: moulded dimple near the first pin.
    shapes.append(Shape("ellipse", "mark", c - body_w / 2 + 4.5, c + body_h / 2 - 4.5, 3.0, 3.0, (70.0, 70.0, 76.0)))
    return shapes


def _turn(shape: Shape) -> Shape:
    """Reflect about the canvas diagonal: a horizontal part becomes a vertical one."""
    return replace(shape, cx=shape.cy, cy=shape.cx, w=shape.h if shape.kind != "line" else shape.w,
                   h=shape.w if shape.kind != "line" else shape.h, x1=shape.y1, y1=shape.x1, angle=-shape.angle)


BUILDERS: dict[str, Callable[[np.random.Generator, str], list[Shape]]] = {
    "resistor": _two_terminal,
    "capacitor": _two_terminal,
    "diode": _two_terminal,
    "transistor": _gull_wing,
    "ic": _gull_wing,
}


def build_scene(comp_type: str, rng: np.random.Generator) -> Scene:
    """A nominal scene for `comp_type` (a key of KINDS), orientation and dimensions drawn from `rng`."""
    shapes = BUILDERS[comp_type](rng, comp_type)
    orientation = "h"
    if rng.random() < 0.4:
        shapes = [_turn(s) for s in shapes]
        orientation = "v"
    mask = _tint(rng, (34.0, 92.0, 52.0), 6.0)
    return Scene(
        comp_type=comp_type,
        shapes=tuple(shapes),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        mask_color=mask,
        pins=KINDS[comp_type].pins,
        orientation=orientation,  # type: ignore[arg-type]
    )
