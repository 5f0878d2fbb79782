"""`apex.optimizers.FusedLAMB` stub (see __init__.py): importable, refuses to be used."""

from __future__ import annotations

from typing import Any


class FusedLAMB:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("apex FusedLAMB is a stub in deft's real-TAO CPU test image")
