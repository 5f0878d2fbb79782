"""The `data_services` mining engine, beside the built-in one (`engine.py`) behind `api.mine`: TAO Data Services
embeds and mines in containers; the host applies the cosine cut-off and maps the mined filepaths back to pool
rows (CONTRACTS §7).

The container's mined parquet holds only `filepath`, so the cut-off (max cosine to any target ≥
min_similarity) is recomputed here from the two embedding parquets the same jobs wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError, StageFailed
from deft_aoi.workspace.catalog import name as catalog_name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

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
                            access: DataServicesAccess, ledger: set[str] | None = None) -> MiningResult:
    """Embed targets and pool, mine neighbours in the container, cut off and de-duplicate on the host.

    `pool.frame` holds the pool rows with their absolute first-light `filepath`; `targets.frame` one row per
    target with its `filepath`. Writes `mined.parquet` into `out_dir` and every container input/output under
    `out_dir/data_services/`.
    """
    import pandas as pd

    from deft_aoi.io_utils import atomic_write_parquet
    from deft_aoi.mining.request import MiningResult
    from deft_aoi.runners.base import run_checked
    from deft_aoi.runners.tao.commands import DataServicesContext, embedding_job, nearest_neighbors_job

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

    ds = DataServicesContext(workspace=access.workspace, image=access.image, env=dict(access.env),
                             labels=dict(access.labels), timeout_s=access.timeout_for(len(rows_in) + len(t_rows)))
    embedded: dict[str, Path] = {}
    for name, parquet in (("targets", targets_in), ("source", source_in)):
        out_parquet = scratch / f"{name}_embeddings.parquet"
        job = embedding_job(ds, results_dir=scratch / f"embed_{name}", input_parquet=parquet,
                            output_parquet=out_parquet)
        access.say(f"  {' '.join(job.argv)}")
        run_checked(access.runner, job)
        embedded[name] = out_parquet
    mined_parquet = scratch / "knn" / "mined.parquet"
    job = nearest_neighbors_job(ds, results_dir=scratch / "knn", source_parquet=embedded["source"],
                                target_parquet=embedded["targets"], output_parquet=mined_parquet,
                                topn=params.topn, filter_by_label=params.filter_by_label,
                                source_rows=len(rows_in))
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
    mined_out = out_dir / catalog_name("mine.mined")
    atomic_write_parquet(rows[["filepath", "label", "similarity", "matched_target"]], mined_out)
    counts = {"raw": len(dict.fromkeys(mined_paths)), "after_cutoff": after_cutoff, "after_history": len(rows),
              "targets": len(t_rows), "pool": len(rows_in)}
    return MiningResult(mined=rows, counts=counts, cutoff=None, files={"mined": mined_out})
