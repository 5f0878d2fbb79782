"""The `data_services` mining engine, beside the built-in one (`engine.py`) behind `api.mine`: TAO Data Services
embeds and mines in containers; the host applies the cosine cut-off and maps the mined filepaths back to pool
rows (CONTRACTS §7).

The container's mined parquet holds only `filepath`, so the cut-off (max cosine to any target ≥
min_similarity) is recomputed here from the two embedding parquets the same jobs wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError, StageFailed, UsageError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.embedders.base import Fingerprint
    from deft_aoi.mining.engine import MineRun
    from deft_aoi.mining.inputs import MiningTable
    from deft_aoi.mining.params import MineConfig
    from deft_aoi.mining.request import MiningResult
    from deft_aoi.runners.base import Runner
    from deft_aoi.workspace.layout import WorkspaceLayout

SCRATCH = "data_services"


@dataclass(frozen=True)
class DataServicesAccess:
    """What the engine needs from its caller to start containers: the runner, the workspace they mount, the
    Data Services image (versions.yaml), the secrets it may see (HF_TOKEN for SigLIP), job labels, the job
    timeout for a number of rows, and where to say the command lines."""

    runner: Runner
    workspace: WorkspaceLayout
    image: str
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout_for: Callable[[int], float | None] = lambda rows: None
    say: Callable[[str], None] = lambda line: None


@dataclass(frozen=True)
class Embeddings:
    filepaths: list[str]
    matrix: np.ndarray  # (n, d) float32, one row per filepath


def read_embeddings(path: Path) -> Embeddings:
    """A Data Services embedding parquet → its filepaths and (n, d) matrix."""
    import pyarrow.parquet as pq

    from deft_aoi.mining.fingerprint import column_to_matrix

    if not path.is_file():
        raise StageFailed(f"Data Services wrote no embeddings at {path}")
    table = pq.read_table(path)
    missing = [c for c in ("filepath", "embedding") if c not in table.column_names]
    if missing:
        raise InputError(f"embedding parquet lacks column(s) {', '.join(missing)}", file=path)
    matrix = column_to_matrix(table.column("embedding"), file=path)
    return Embeddings([str(p) for p in table.column("filepath").to_pylist()], matrix)


def host_cutoff(mined: Sequence[str], source: Embeddings, targets: Embeddings, min_similarity: float) -> pd.DataFrame:
    """Mined filepaths whose max cosine to any target is ≥ min_similarity (pure).

    Returns `filepath`, `similarity` (that max cosine), `matched_target` (the target filepath attaining it),
    in the order the container listed them. A mined path absent from the source embeddings is an error: the
    two parquets would then not describe the same run.
    """
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.knn import l2_normalise

    unique = list(dict.fromkeys(str(p) for p in mined))
    columns = {"filepath": pd.Series(dtype=str), "similarity": pd.Series(dtype=float),
               "matched_target": pd.Series(dtype=str)}
    if not unique or len(targets.filepaths) == 0:
        return pd.DataFrame(columns)
    index = {p: i for i, p in enumerate(source.filepaths)}
    absent = [p for p in unique if p not in index]
    if absent:
        raise StageFailed(f"{len(absent)} mined filepath(s) have no source embedding, e.g. {absent[0]}")
    src = l2_normalise(source.matrix[[index[p] for p in unique]])
    tgt = l2_normalise(targets.matrix)
    if src.shape[1] != tgt.shape[1]:
        raise StageFailed(f"source and target embeddings differ in dimension ({src.shape[1]} vs {tgt.shape[1]}): "
                          "they must come from the same encoder config")
    sims = src @ tgt.T
    best = np.argmax(sims, axis=1)
    score = sims[np.arange(len(unique)), best].astype(float)
    out = pd.DataFrame({"filepath": unique, "similarity": score,
                        "matched_target": [targets.filepaths[j] for j in best]})
    return out[out["similarity"] >= min_similarity].reset_index(drop=True)


def mine_with_data_services(targets: MiningTable, pool: MiningTable, params: MineConfig, *, out_dir: Path,
                            access: DataServicesAccess, ledger: set[str] | None = None,
                            paths_root: Path | None = None) -> MiningResult:
    """Embed targets and pool, mine neighbours in the container, cut off and de-duplicate on the host.

    `pool.frame` holds the pool rows with their absolute first-light `filepath`; `targets.frame` one row per
    target with its `filepath`. Writes `mined.parquet` into `out_dir` and every container input/output under
    `out_dir/data_services/`.
    """
    import pandas as pd

    from deft_aoi.io_utils import atomic_write_parquet
    from deft_aoi.mining.report import write_outputs
    from deft_aoi.mining.request import MiningResult
    from deft_aoi.runners.base import run_checked
    from deft_aoi.runners.tao import rules as tao_rules
    from deft_aoi.runners.tao.commands import DataServicesContext, embedding_job, nearest_neighbors_job
    from deft_aoi.workspace.stored_paths import store_parquet_files

    if pool.frame.empty:
        raise InputError("the source pool is empty: nothing to mine")
    scratch = out_dir / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    t_rows = targets.frame
    # One pool row per embedded image: two rows sharing a first-light image are the same sample to the container.
    rows_in = pool.frame.drop_duplicates("filepath", keep="first").reset_index(drop=True)
    targets_in, source_in = scratch / "targets.parquet", scratch / "source.parquet"
    atomic_write_parquet(t_rows.astype({"filepath": str}), targets_in)
    atomic_write_parquet(rows_in, source_in)
    metric_rule = tao_rules.knn_metric_rule(params.ds_model, params.ds_model_path, params.metric)
    if metric_rule.failed:
        raise UsageError(f"{metric_rule.message} [TAO rule: {metric_rule.rule}; {metric_rule.source}]")
    ds = DataServicesContext(workspace=access.workspace, image=access.image, env=dict(access.env),
                             labels=dict(access.labels), timeout_s=access.timeout_for(len(rows_in) + len(t_rows)))
    embedded: dict[str, Path] = {}
    for name, parquet in (("targets", targets_in), ("source", source_in)):
        out_parquet = scratch / f"{name}_embeddings.parquet"
        # ONE encoder config for both embeddings (CONTRACTS §7: a mismatch is the #1 cause of garbage).
        job = embedding_job(ds, results_dir=scratch / f"embed_{name}", input_parquet=parquet,
                            output_parquet=out_parquet, model=params.ds_model, model_path=params.ds_model_path,
                            model_config_path=params.ds_model_config_path)
        access.say(f"  {' '.join(job.argv)}")
        run_checked(access.runner, job)
        embedded[name] = out_parquet
    mined_parquet = scratch / "knn" / "mined.parquet"
    job = nearest_neighbors_job(ds, results_dir=scratch / "knn", source_parquet=embedded["source"],
                                target_parquet=embedded["targets"], output_parquet=mined_parquet,
                                topn=params.top_k_per_target, knn_metric=params.metric,
                                filter_by_label=params.filter_by_label, source_rows=len(rows_in))
    access.say(f"  {' '.join(job.argv)}")
    run_checked(access.runner, job)
    if not mined_parquet.is_file():
        raise StageFailed(f"tmm nearest_neighbors wrote no mined parquet at {mined_parquet}. Log: {job.log_file}")

    mined_paths = pd.read_parquet(mined_parquet, columns=["filepath"])["filepath"].astype(str).tolist()
    kept = host_cutoff(mined_paths, read_embeddings(embedded["source"]), read_embeddings(embedded["targets"]),
                       params.min_similarity)
    after_cutoff = len(kept)
    if ledger:
        kept = kept[~kept["filepath"].isin(ledger)].reset_index(drop=True)
    rows = kept.merge(rows_in, on="filepath", how="left", validate="one_to_one").reset_index(drop=True)
    counts = {"raw": len(dict.fromkeys(mined_paths)), "after_cutoff": after_cutoff, "after_history": len(rows),
              "targets": len(t_rows), "pool": len(rows_in)}
    # The same outputs as the built-in engine (report.write_outputs: Mining_Report.md, knn_summary.csv, …).
    run = _as_mine_run(targets, pool, t_rows, rows_in, rows, params, embedded, ledger)
    files = write_outputs(run, out_dir, paths_root)
    if paths_root is not None:
        # The containers needed absolute paths; read now, their tables are kept workspace-relative like the rest.
        store_parquet_files(scratch, paths_root)
    return MiningResult(mined=run.mined, counts=counts, cutoff=None, files=files, run=run)


def encoder_fingerprint(params: MineConfig, dim: int) -> Fingerprint:
    """The embedding space of a Data Services run: its model (or TAO checkpoint + spec) and dimension."""
    from deft_aoi.mining.embedders.base import Fingerprint
    from deft_aoi.runners.tao.commands import DS_MODEL_PATHS
    from deft_aoi.runners.tao.rules import is_tao_checkpoint

    path = params.ds_model_path or DS_MODEL_PATHS[params.ds_model]
    name = "data-services-tao-checkpoint" if is_tao_checkpoint(path) else f"data-services-{params.ds_model}"
    what = f"{path} + {params.ds_model_config_path}" if params.ds_model_config_path else path
    return Fingerprint(name=name, version="1", weights_hash=hashlib.sha256(what.encode()).hexdigest()[:16],
                       preprocessing=f"Data Services image_embeddings ({what})", dim=dim)


def _aligned(emb: Embeddings, filepaths: Sequence[str]) -> np.ndarray:
    """The container's rows in the order of `filepaths` (it keeps input order, but say so by name)."""
    index = {p: i for i, p in enumerate(emb.filepaths)}
    missing = [p for p in filepaths if p not in index]
    if missing:
        raise StageFailed(f"Data Services embedded no vector for {len(missing)} image(s), e.g. {missing[0]}")
    return emb.matrix[[index[p] for p in filepaths]]


def _as_mine_run(targets: MiningTable, pool: MiningTable, t_rows: pd.DataFrame, rows_in: pd.DataFrame,
                 rows: pd.DataFrame, params: MineConfig, embedded: Mapping[str, Path],
                 ledger: set[str] | None) -> MineRun:
    """A MineRun for the shared report: the per-target k-NN bookkeeping (cosine on the container's vectors,
    the report's cut-off space), with the rows the container mined as the selection step after it."""
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.engine import MineRun
    from deft_aoi.mining.inputs import MiningTable as Table
    from deft_aoi.mining.knn import KnnParams, l2_normalise, mine_neighbours
    from deft_aoi.mining.strategy import selection_counts
    from deft_aoi.workspace.changenet_csv import is_defect_labels

    t_emb = l2_normalise(_aligned(read_embeddings(embedded["targets"]), t_rows["filepath"].astype(str).tolist()))
    p_emb = l2_normalise(_aligned(read_embeddings(embedded["source"]), rows_in["filepath"].astype(str).tolist()))
    labelled = "label" in t_rows.columns and "label" in rows_in.columns
    history = rows_in["filepath"].isin(list(ledger)).to_numpy() if ledger else None
    knn = mine_neighbours(t_emb, p_emb, KnnParams(topn=params.top_k_per_target, min_similarity=params.min_similarity,
                                                  filter_by_label=params.filter_by_label and labelled),
                          target_labels=t_rows["label"].to_numpy() if labelled else None,
                          pool_labels=rows_in["label"].to_numpy() if labelled else None, pool_in_history=history)
    budget = len(knn.mined)
    pos = {p: i for i, p in enumerate(rows_in["filepath"].astype(str))}
    tpos = {p: i for i, p in enumerate(t_rows["filepath"].astype(str))}
    picked = np.array([pos[p] for p in rows["filepath"].astype(str)], dtype=np.int64)
    knn.mined = pd.DataFrame({"pool": picked, "similarity": rows["similarity"].to_numpy(dtype=float),
                              "matched_target": [tpos[str(t)] for t in rows["matched_target"]],
                              "n_targets": np.ones(len(rows), dtype=np.int64)})
    knn.per_target["kept_count"] = (knn.mined.groupby("matched_target").size()
                                    .reindex(knn.per_target["target"], fill_value=0).to_numpy().astype(np.int64))
    knn.counts["after_dedup"] = len(rows)
    is_defect = (is_defect_labels(rows_in["label"]) if "label" in rows_in.columns
                 else np.zeros(len(rows_in), dtype=bool))
    mined = rows.copy()
    if "label" in t_rows.columns:
        mined["matched_target_label"] = t_rows["label"].to_numpy()[knn.mined["matched_target"].to_numpy()]
    run = MineRun(config=params, targets=Table(t_rows, targets.source), pool=Table(
                      rows_in, pool.source, converted_from_csv=pool.converted_from_csv),
                  target_emb=t_emb, pool_emb=p_emb, fingerprint=encoder_fingerprint(params, t_emb.shape[1]),
                  knn=knn, mined=mined, label_filter_applied=params.filter_by_label and labelled,
                  ledger_size=len(ledger) if ledger else 0, warnings=list(knn.notes), device="Data Services",
                  info=list(knn.info), embedded_targets=len(t_rows))
    run.strategy = f"Data Services k-NN, {params.metric}"
    run.selection = selection_counts(picked, is_defect, budget=budget)
    return run
