"""Embedders behind one interface (`Embedder`), chosen by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deft_aoi.errors import UsageError
from deft_aoi.mining.embedders.base import Embedder, Fingerprint, require_same_fingerprint

ENCODERS: tuple[str, ...] = ("auto", "builtin", "siglip", "shape")
AUTO = "auto"

if TYPE_CHECKING:
    from deft_aoi.config import Encoder

__all__ = ["ENCODERS", "Embedder", "Fingerprint", "get_embedder", "require_same_fingerprint", "resolve_encoder"]


def resolve_encoder(name: Encoder, backend: str | None) -> Encoder:
    """`auto` → `shape` on the local backend (the space its model's shape head reads, where mining for the
    rows that model gets wrong works best: bench/RESULTS.md, loop efficacy run 8; torch is there anyway),
    `builtin` otherwise (no torch needed on a docker host, and a mine without a backend); others as named."""
    if name != AUTO:
        return name
    from deft_aoi.runners.factory import capabilities

    return "shape" if backend is not None and capabilities(backend).in_process else "builtin"


def get_embedder(name: str) -> Embedder:
    """The embedder called `name` (builtin | siglip | shape; `auto` as resolve_encoder has it without a
    backend); heavy imports happen here, not at package import."""
    if name == AUTO:
        name = resolve_encoder("auto", None)
    if name == "builtin":
        from deft_aoi.mining.embedders.builtin import BuiltinEmbedder

        return BuiltinEmbedder()
    if name == "siglip":
        from deft_aoi.mining.embedders.siglip import SiglipEmbedder

        return SiglipEmbedder()
    if name == "shape":
        from deft_aoi.mining.embedders.shape import ShapeEmbedder

        return ShapeEmbedder()
    raise UsageError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
