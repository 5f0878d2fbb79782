"""One call for mining, whatever engine: `mine(request, engine=...)`. `deft mine` and the loop's mine stage (through
`loop_adapter.mine_iteration`) both come here.

- `builtin` (`engine.py`): embed in this process (cached), k-NN (exact or ANN), then the selection strategy
  (`strategy.py`) when the parameters ask for more than the plain k-NN; writes every output of `report.py`.
- `data_services` (`data_services.py`): TAO Data Services embeds and mines in containers; the host applies the
  cut-off. Needs `DataServicesAccess` (a runner that starts containers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from deft_aoi.errors import InputError, UsageError
from deft_aoi.mining.request import MineRequest, MiningResult

if TYPE_CHECKING:
    from deft_aoi.mining.data_services import DataServicesAccess
    from deft_aoi.mining.engine import MineRun
    from deft_aoi.mining.params import MineConfig
    from deft_aoi.mining.strategy import Selection

__all__ = ["ENGINES", "Engine", "MineRequest", "MiningResult", "apply_strategy", "mine"]

Engine = Literal["builtin", "data_services"]
ENGINES: tuple[str, ...] = ("builtin", "data_services")


def mine(request: MineRequest, *, engine: Engine = "builtin",
         data_services: DataServicesAccess | None = None) -> MiningResult:
    """Mine `request.pool` for `request.targets` with `engine`; every output goes into `request.out_dir`."""
    if engine == "data_services":
        from deft_aoi.mining.data_services import mine_with_data_services

        if data_services is None:
            raise UsageError("--mining-engine data_services needs containers (--backend docker or fake)")
        if request.params.reselects:
            raise UsageError("--strategy, --pool-share and --max-pass-ratio apply to --mining-engine builtin; "
                             "Data Services mines with its own k-NN")
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
    selection = apply_strategy(run, request.params, request.ledger)
    files = write_outputs(run, request.out_dir, request.paths_root)
    counts = {k: int(v) for k, v in run.knn.counts.items()}
    counts.update(selection.counts)
    return MiningResult(mined=run.mined, counts=counts, cutoff=selection.cutoff, files=files, run=run)


def apply_strategy(run: MineRun, params: MineConfig, ledger: set[str] | None) -> Selection:
    """Re-select `run`'s mined rows under `params.strategy` and its guards (in place on `run`)."""
    import numpy as np

    from deft_aoi.mining.engine import assemble_mined
    from deft_aoi.mining.strategy import Selection, SelectionParams, select, selection_counts
    from deft_aoi.workspace.changenet_csv import is_defect_labels

    pool, targets = run.pool.frame, run.targets.frame
    pool_is_defect = (is_defect_labels(pool["label"]) if "label" in pool.columns
                      else np.zeros(len(pool), dtype=bool))
    if not params.reselects:
        # Today's contract behaviour: the engine's k-NN (whatever search it planned) is the selection.
        return Selection(knn=run.knn, cutoff=params.min_similarity, counts=selection_counts(
            run.knn.mined["pool"].to_numpy(), pool_is_defect, budget=len(run.knn.mined)))
    if "label" not in pool.columns:
        raise InputError("--strategy kpi|diverse, --pool-share and --max-pass-ratio need a 'label' column in the pool")
    if not isinstance(run.pool_emb, np.ndarray):
        raise InputError("--strategy kpi|diverse, --pool-share and --max-pass-ratio need the pool matrix in "
                         "memory; drop --mining-memory (the on-disk pool serves the knn strategy only)")
    in_history = pool["filepath"].isin(list(ledger)).to_numpy() if ledger else None
    selection = select(
        run.target_emb, run.pool_emb,
        SelectionParams(strategy=params.selection_strategy, topn=params.topn, min_similarity=params.min_similarity,
                        pool_share_pct=params.pool_share_pct, max_pass_ratio=params.max_pass_ratio),
        pool_is_defect=pool_is_defect,
        in_history=in_history,
        weakness=targets["weakness"].to_numpy() if "weakness" in targets.columns else None,
        knn=run.knn,  # computed at params.min_similarity: reused unless the cut-off is pool-calibrated
    )
    run.knn = selection.knn
    mined = assemble_mined(selection.knn, targets, pool)
    run.mined = mined[~mined["filepath"].duplicated()].reset_index(drop=True)
    run.warnings = [*run.warnings, *selection.notes]
    # The report states the step between the k-NN's rows and the mined ones (Mining_Report.md adds up).
    run.strategy, run.selection = params.selection_strategy, dict(selection.counts)
    return selection
