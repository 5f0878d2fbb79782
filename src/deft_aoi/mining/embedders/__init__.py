"""Embedders behind one interface (`Embedder`), chosen by name."""

from __future__ import annotations

from deft_aoi.errors import UsageError
from deft_aoi.mining.embedders.base import Embedder, Fingerprint, require_same_fingerprint

ENCODERS: tuple[str, ...] = ("builtin", "siglip")

__all__ = ["ENCODERS", "Embedder", "Fingerprint", "get_embedder", "require_same_fingerprint"]


def get_embedder(name: str) -> Embedder:
    """The embedder called `name` (builtin | siglip); heavy imports happen here, not at package import."""
    if name == "builtin":
        from deft_aoi.mining.embedders.builtin import BuiltinEmbedder

        return BuiltinEmbedder()
    if name == "siglip":
        from deft_aoi.mining.embedders.siglip import SiglipEmbedder

        return SiglipEmbedder()
    raise UsageError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
