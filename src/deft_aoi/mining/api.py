"""One call for mining, whatever engine: `mine(request, engine=...)`. `deft mine` and the loop's mine stage (through
`loop_adapter.mine_iteration`) both come here.

- `builtin` (`engine.py`): embed in this process (cached), then one pass: the selection's cut-off, the k-NN
  (exact or ANN) at it, the selection strategy (`strategy.py`) among its neighbours, the mined rows; writes
  every output of `report.py` (the rows once, with the views derived from them).
- `data_services` (`data_services.py`): TAO Data Services embeds and mines in containers; the host applies the
  cut-off. Needs `DataServicesAccess` (a runner that starts containers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from deft_aoi.config import check_engine_selection
from deft_aoi.errors import UsageError
from deft_aoi.mining.request import MineRequest, MiningResult

if TYPE_CHECKING:
    from deft_aoi.mining.data_services import DataServicesAccess

__all__ = ["ENGINES", "Engine", "MineRequest", "MiningResult", "mine"]

Engine = Literal["builtin", "data_services"]
ENGINES: tuple[str, ...] = ("builtin", "data_services")


def mine(request: MineRequest, *, engine: Engine = "builtin",
         data_services: DataServicesAccess | None = None) -> MiningResult:
    """Mine `request.pool` for `request.targets` with `engine`; every output goes into `request.out_dir`."""
    if engine == "data_services":
        from deft_aoi.mining.data_services import mine_with_data_services

        if data_services is None:
            raise UsageError("--mining-engine data_services needs containers (--backend docker or fake)")
        params = request.params
        check_engine_selection(engine, params.strategy, params.pool_share_pct, params.max_pass_ratio)
        return mine_with_data_services(request.targets, request.pool, request.params, out_dir=request.out_dir,
                                       access=data_services, ledger=request.ledger, paths_root=request.paths_root)
    if engine != "builtin":
        raise UsageError(f"unknown mining engine {engine!r}; choose {' or '.join(ENGINES)}")
    if request.params.metric != "cosine":
        raise UsageError(f"--metric {request.params.metric} needs --mining-engine data_services; the builtin "
                         "engine mines by cosine")
    return _mine_builtin(request)


def _mine_builtin(request: MineRequest) -> MiningResult:
    from deft_aoi.mining.engine import run_mining
    from deft_aoi.mining.report import write_outputs

    run = run_mining(request.targets, request.pool, request.params, cache_root=request.cache_root,
                     ledger=request.ledger, embedder=request.embedder)
    files = write_outputs(run, request.out_dir, request.paths_root)
    counts = {k: int(v) for k, v in run.knn.counts.items()}
    counts.update(run.selection)
    return MiningResult(mined=run.mined, counts=counts, cutoff=run.cutoff, files=files, run=run)
