"""Image-level nuisance of a test capture: the causes of real AOI false calls on good parts.

misregistered: the test crop is cut 2–4 px away from where the golden was cut (fiducial/board warp error).
brightness: lighting gain drift. blur: slight defocus. All act on the test image only; every capture also
gets sensor noise. Pure functions on float arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deft_aoi.demo.scene import CROP, MARGIN

NUISANCE_TYPES: tuple[str, ...] = ("misregistered", "brightness", "blur")
TEST_NOISE_SIGMA = 2.5


@dataclass(frozen=True)
class Nuisance:
    dx: int = 0
    dy: int = 0
    gain: float = 1.0
    blur_sigma: float = 0.0


def draw_nuisance(tags: tuple[str, ...], rng: np.random.Generator) -> Nuisance:
    """Concrete parameters for the ground-truth tags of one row."""
    dx = dy = 0
    if "misregistered" in tags:
        # The larger axis moves 2-4 px; the other 0 px, or up to as much for a diagonal error.
        major = int(rng.integers(2, 5))
        minor = int(rng.integers(0, major + 1)) if rng.random() < 0.4 else 0
        sx, sy = (int(v) for v in rng.choice([-1, 1], 2))
        dx, dy = (sx * major, sy * minor) if rng.random() < 0.5 else (sx * minor, sy * major)
    gain = 1.0
    if "brightness" in tags:
        gain = float(rng.uniform(0.72, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3))
    sigma = float(rng.uniform(0.8, 1.3)) if "blur" in tags else 0.0
    return Nuisance(dx=dx, dy=dy, gain=gain, blur_sigma=sigma)


def crop(canvas: np.ndarray, dx: int = 0, dy: int = 0) -> np.ndarray:
    """The CROP×CROP window of the canvas, displaced by (dx, dy) pixels from the centred one."""
    if max(abs(dx), abs(dy)) > MARGIN:
        raise ValueError(f"offset ({dx}, {dy}) exceeds the render margin {MARGIN}")
    y, x = MARGIN + dy, MARGIN + dx
    return canvas[y : y + CROP, x : x + CROP]


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian with edge replication (shifted-slice sums: vectorised, no scipy)."""
    if sigma <= 0:
        return img
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(t * np.take(padded, np.arange(k, k + n), axis=axis) for k, t in enumerate(taps))
    return out.astype(np.float32)


def apply_nuisance(img: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Lighting gain then defocus (mis-registration is applied when cropping)."""
    out = img * np.float32(nuisance.gain) if nuisance.gain != 1.0 else img
    return gaussian_blur(out, nuisance.blur_sigma)


def sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = TEST_NOISE_SIGMA) -> np.ndarray:
    """Zero-mean noise of standard deviation `sigma`. Uniform rather than Gaussian: after 8-bit
    quantisation the two look alike, and uniform draws cost a fifth of normal ones."""
    scale = np.float32(sigma * math.sqrt(12.0))
    noisy: np.ndarray = img + scale * (rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
    return noisy


def to_uint8(img: np.ndarray) -> np.ndarray:
    pixels: np.ndarray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return pixels
