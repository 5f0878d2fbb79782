"""Finding a run's files in tests the way the product does: through the run catalog (workspace/catalog.py)
and the stage records of the run's state, never by globbing a layout the catalog owns."""

from __future__ import annotations

from pathlib import Path


def artefacts(run: Path, key: str) -> dict[str, Path]:
    """Catalog artefact `key` of every iteration whose writing stage committed it, by iteration name, in loop
    order; only files that exist (an optional artefact a stage skipped is left out)."""
    from deft_aoi.loop.artefacts import find
    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import RunLayout

    layout = RunLayout(run)
    state = StateStore(layout).load()
    out: dict[str, Path] = {}
    for it in state.ordered_iterations():
        path = find(layout, state, key, it.name, walk_back=False)
        if path is not None and path.exists():
            out[it.name] = path
    return out
