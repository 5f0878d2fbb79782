"""The near-duplicate encoder: what the input AND the golden look like, not what changed between them.

The mining encoder (builtin-pairdiff) describes the CHANGE of a pair, so it is the wrong tool for "is this the
same crop": measured on deeppcb-dev, re-encoding a KPI crop at JPEG quality 60 moved its pairdiff vector to
cosine 0.38 of the original for one pair in 40, while unrelated pairs reached 0.993 (a clean pair's "no
change" looks like every other clean pair's). Pixels are the right tool: each side is decoded grayscale at
32×32 (JPEG draft mode), centred and L2-normalised, and the two sides are concatenated, each scaled by 1/√2,
so the whole vector is unit length and the halves can be compared separately (pair-aware: a near duplicate
must match on the input AND on the golden, see `analysis.leakage.pair_near_duplicates`).

On deeppcb-dev (32 px): the same crop re-encoded at JPEG quality 30 / 60 keeps min(input, golden) cosine
≥ 0.9987 / ≥ 0.9996; the most similar DISTINCT pool/KPI pair reaches 0.9956. A single-colour side (a blank
crop, no identity) becomes a zero half, whose cosine with anything is 0, mirroring the content check that
ignores featureless images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from deft_aoi.mining.embedders.base import Fingerprint, embed_chunks_threaded

if TYPE_CHECKING:
    import numpy as np

NAME = "pixel-pair"
VERSION = "1"
SIZE = 32
# Below this standard deviation (grey levels in [0, 1]) a side counts as featureless: JPEG noise on a blank
# crop must not look like a unique pattern.
FLAT_STD = 1.0 / 255.0
_CHUNK = 256


def side_vectors(gray: np.ndarray) -> np.ndarray:
    """(n, s, s) grayscale in [0, 1] → (n, s·s) centred unit rows; featureless rows are zero (pure)."""
    import numpy as np

    x = gray.reshape(len(gray), -1).astype(np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    flat = (std < FLAT_STD) | (norms == 0)
    return np.where(flat, 0.0, x / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def split_halves(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (input, golden) unit halves of pixel-pair vectors (views scaled back by √2)."""
    import numpy as np

    half = vectors.shape[1] // 2
    scale = np.float32(np.sqrt(2.0))
    return vectors[:, :half] * scale, vectors[:, half:] * scale


class PixelPairEmbedder:
    """Embedder protocol (fingerprint, device, embed) so it shares the embedding cache with mining."""

    def __init__(self, size: int = SIZE, *, workers: int | None = None) -> None:
        self.size = size
        self.workers = workers or min(8, os.cpu_count() or 1)

    @cached_property
    def fingerprint(self) -> Fingerprint:
        preprocessing = f"gray,{self.size}px,draft+box,centred,l2,flat<{FLAT_STD:.5f},concat/sqrt2"
        return Fingerprint(
            name=NAME,
            version=VERSION,
            weights_hash=hashlib.sha256(preprocessing.encode("utf-8")).hexdigest()[:16],
            preprocessing=preprocessing,
            dim=2 * self.size * self.size,
        )

    @property
    def device(self) -> str:
        return "cpu"

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        return embed_chunks_threaded(inputs, goldens, dim=self.fingerprint.dim, chunk=_CHUNK, workers=self.workers,
                                     embed_chunk=self._embed_chunk)

    def _embed_chunk(self, pairs: list[tuple[str, str | None]]) -> np.ndarray:
        import numpy as np

        from deft_aoi.mining.embedders.builtin import load_gray

        blank = np.zeros((self.size, self.size), dtype=np.float32)
        x = side_vectors(np.stack([load_gray(i, self.size) for i, _ in pairs]))
        g = side_vectors(np.stack([load_gray(gp, self.size) if gp else blank for _, gp in pairs]))
        return (np.concatenate([x, g], axis=1) / np.float32(np.sqrt(2.0))).astype(np.float32)
