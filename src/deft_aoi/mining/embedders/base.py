"""The one interface every embedder implements, and the fingerprint that identifies its output space.

Two embedding matrices are comparable only when they come from the same fingerprint: a different model,
weights file, preprocessing or dimension gives vectors whose cosine similarities mean nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from deft_aoi.errors import InputError

if TYPE_CHECKING:
    import numpy as np

UNKNOWN_ENCODER = "unknown"


class Fingerprint(BaseModel):
    """Identity of an embedding space: name, version, weights hash, preprocessing and dimension."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    weights_hash: str
    preprocessing: str
    dim: int

    @property
    def id(self) -> str:
        """A short stable id, used as the embedding cache's directory name."""
        digest = hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]
        return f"{self.name}-{digest}"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Fingerprint:
        return cls.model_validate_json(text)

    @classmethod
    def unknown(cls, dim: int) -> Fingerprint:
        """Stands for embeddings produced elsewhere (e.g. TAO Data Services) without our metadata."""
        return cls(name=UNKNOWN_ENCODER, version="", weights_hash="", preprocessing="", dim=dim)

    @property
    def is_unknown(self) -> bool:
        return self.name == UNKNOWN_ENCODER

    def describe(self) -> str:
        if self.is_unknown:
            return f"unknown encoder (no fingerprint metadata, dim {self.dim})"
        return f"{self.name} v{self.version} [{self.id}] dim {self.dim}, preprocessing {self.preprocessing}"


@runtime_checkable
class Embedder(Protocol):
    """Maps (input image, golden image) pairs to L2-normalised float32 rows."""

    @property
    def fingerprint(self) -> Fingerprint: ...

    @property
    def device(self) -> str: ...

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        """Embed one batch; `goldens[i]` may be None when the row has no golden partner."""
        ...


def require_same_fingerprint(a: Fingerprint, a_what: str, b: Fingerprint, b_what: str) -> None:
    """Hard error when two embedding sets come from different encoders: their similarities would be garbage."""
    if a == b:
        return
    raise InputError(
        f"encoder fingerprint mismatch: {a_what} = {a.describe()}; {b_what} = {b.describe()}",
        hint="embed targets and pool with the same --encoder (delete the stale embedding column or cache)",
    )


def embed_chunks_threaded(
    inputs: Sequence[str],
    goldens: Sequence[str | None],
    *,
    dim: int,
    chunk: int,
    workers: int,
    embed_chunk: Callable[[list[tuple[str, str | None]]], np.ndarray],
) -> np.ndarray:
    """The CPU embedders' batching: pairs cut into chunks embedded on threads (PIL decoding and numpy release
    the GIL, so threads overlap decode and maths on every core), rows kept in order."""
    import numpy as np

    if len(inputs) != len(goldens):
        raise ValueError("inputs and goldens must have the same length")
    if not inputs:
        return np.zeros((0, dim), dtype=np.float32)
    pairs = list(zip(inputs, goldens, strict=True))
    chunks = [pairs[k : k + chunk] for k in range(0, len(pairs), chunk)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(embed_chunk, chunks)))
