"""The change-shape encoder: a pair seen the way the local model's shape head sees it.

Each pair is decoded at SIZE² RGB, its golden registered onto the input (runners.local.data.align_goldens),
and described by runners.local.model.change_shape of the out-of-tolerance map: changed area, the area left
after erosions (a solid blob vs a thin edge line) and the peak local amount of change. Centred on CENTRE
(the descriptors lie in about [0, 1]) and L2-normalised, so cosine compares the SHAPE of two changes.

Why mine in this space: the false alarms that set FAR at recall 100 % are PASS rows whose change the model
reads as a defect's; the pool rows that teach it otherwise are those that look alike to the model, not
those that look alike to a generic descriptor (bench/RESULTS.md, loop efficacy run 8). It needs torch (the
local extra), like the local backend.
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
        import torch

        from deft_aoi.runners.local.data import ALIGN_MAX_SHIFT_PX, align_goldens, decode_image
        from deft_aoi.runners.local.model import change_shape, out_of_tolerance, to_input

        size = (SIZE, SIZE)
        stacked = np.stack([
            np.stack([decode_image(i, size), decode_image(g, size) if g else decode_image(i, size)])
            for i, g in pairs
        ])
        align_goldens(stacked, ALIGN_MAX_SHIFT_PX)
        with torch.no_grad():
            batch = to_input(stacked, torch.device("cpu"))
            shape = change_shape(out_of_tolerance(batch), batch[:, 1]).numpy()
        centred = shape.astype(np.float32) - np.float32(CENTRE)
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        return (centred / np.where(norms == 0, 1.0, norms)).astype(np.float32)
