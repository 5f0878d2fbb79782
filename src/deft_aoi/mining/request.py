"""What a mining call takes and gives back, whatever the engine (`api.mine`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.mining.embedders.base import Embedder
    from deft_aoi.mining.engine import MineRun
    from deft_aoi.mining.inputs import MiningTable
    from deft_aoi.mining.params import MineConfig


@dataclass
class MineRequest:
    """What to mine: targets and pool (each with `filepath`), the parameters, where the outputs go, and the pool
    filepaths mined earlier (`ledger`: never mined again)."""

    targets: MiningTable
    pool: MiningTable
    params: MineConfig
    out_dir: Path
    cache_root: Path | None = None  # the embedding cache (builtin)
    ledger: set[str] | None = None
    embedder: Embedder | None = None  # builtin: an embedder object instead of params.encoder's (tests, benches)
    # A run's workspace: the outputs store the paths under it relative to it (a moved or copied workspace
    # reads its own images). None (`deft mine` on files anywhere): paths are written as given.
    paths_root: Path | None = None


@dataclass
class MiningResult:
    """The mined pool rows (pool columns + `similarity`, `matched_target`), counts (raw, after_cutoff,
    after_history, after_dedup, targets, pool; + the strategy's selected_* counts), the cut-off the selection
    used (None: the engine's own), the files written, and for the builtin engine the whole run (search, cache
    statistics, warnings)."""

    mined: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    cutoff: float | None = None
    files: dict[str, Path] = field(default_factory=dict)
    run: MineRun | None = None

    @property
    def warnings(self) -> list[str]:
        return list(self.run.warnings) if self.run is not None else []
