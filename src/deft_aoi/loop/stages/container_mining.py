"""The mine stage's `data_services` engine: TAO Data Services embeds and mines in containers; the host applies
the cosine cut-off and maps the mined filepaths back to pool rows (CONTRACTS §7).

The container's mined parquet holds only `filepath`, so the cut-off (max cosine to any target ≥
min_similarity) is recomputed here from the two embedding parquets the same jobs wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError, StageFailed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.loop.engine import StageContext
    from deft_aoi.mining.loop_adapter import MiningOutcome
    from deft_aoi.runners.tao.commands import DataServicesContext

SCRATCH = "data_services"


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


def _context(ctx: StageContext, rows: int) -> DataServicesContext:
    """Image from versions.yaml; only the known secrets (HF_TOKEN for SigLIP) pass into the container."""
    from deft_aoi.runners.tao.commands import DataServicesContext
    from deft_aoi.runners.tao.versions import load_versions
    from deft_aoi.secrets import SECRET_NAMES, load_env_file

    s = ctx.services
    env = {k: v for k, v in load_env_file(s.workspace.env_file).items() if k in SECRET_NAMES}
    return DataServicesContext(workspace=s.workspace, image=load_versions(s.workspace).data_services, env=env,
                               labels=s.labels, timeout_s=s.config.job_timeout_s(rows))


def mine_with_data_services(ctx: StageContext, targets: pd.DataFrame, source_pool: pd.DataFrame,
                            ledger: set[str]) -> MiningOutcome:
    """Embed targets and pool, mine neighbours in the container, cut off and de-duplicate on the host.

    Writes `mined.parquet` and `mining_pool.csv` into `ctx.out` (as the builtin engine does) and every
    container input/output under `ctx.out/data_services/`.
    """
    from deft_aoi.io_utils import atomic_write_parquet
    from deft_aoi.mining.loop_adapter import MiningOutcome, pool_with_paths, sample_targets
    from deft_aoi.runners.base import run_checked
    from deft_aoi.runners.tao.commands import embedding_job, nearest_neighbors_job
    from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, conform, write_changenet_csv

    s = ctx.services
    lights = s.spec.lights
    if not lights:
        raise InputError("no lights given: cannot pick the image to embed")
    if source_pool.empty:
        raise InputError("the source pool is empty: nothing to mine")
    scratch = ctx.out / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    t_rows = sample_targets(targets, lights)
    pool = conform(source_pool, file="source pool")
    if "source" not in pool.columns:
        pool["source"] = "mining_pool"
    pool = pool_with_paths(pool, s.workspace.root, lights[0], s.spec.image_ext)
    # One pool row per embedded image: two rows sharing a first-light image are the same sample to the container.
    pool = pool.drop_duplicates("filepath", keep="first").reset_index(drop=True)
    targets_in, source_in = scratch / "targets.parquet", scratch / "source.parquet"
    atomic_write_parquet(t_rows.astype({"filepath": str}), targets_in)
    atomic_write_parquet(pool, source_in)

    ds = _context(ctx, rows=len(pool) + len(t_rows))
    embedded: dict[str, Path] = {}
    for name, parquet in (("targets", targets_in), ("source", source_in)):
        out_parquet = scratch / f"{name}_embeddings.parquet"
        job = embedding_job(ds, results_dir=scratch / f"embed_{name}", input_parquet=parquet,
                            output_parquet=out_parquet)
        s.say(f"  {' '.join(job.argv)}")
        run_checked(s.runner, job)
        embedded[name] = out_parquet
    mined_parquet = scratch / "knn" / "mined.parquet"
    job = nearest_neighbors_job(ds, results_dir=scratch / "knn", source_parquet=embedded["source"],
                                target_parquet=embedded["targets"], output_parquet=mined_parquet,
                                topn=s.config.top_k_per_target.value, filter_by_label=False)
    s.say(f"  {' '.join(job.argv)}")
    run_checked(s.runner, job)
    if not mined_parquet.is_file():
        raise StageFailed(f"tmm nearest_neighbors wrote no mined parquet at {mined_parquet}. Log: {job.log_file}")

    import pandas as pd

    mined_paths = pd.read_parquet(mined_parquet, columns=["filepath"])["filepath"].astype(str).tolist()
    kept = host_cutoff(mined_paths, read_embeddings(embedded["source"]), read_embeddings(embedded["targets"]),
                       s.config.min_similarity.value)
    after_cutoff = len(kept)
    kept = kept[~kept["filepath"].isin(ledger)].reset_index(drop=True)
    rows = kept.merge(pool, on="filepath", how="left", validate="one_to_one")
    rows = rows[[*CHANGENET_COLUMNS, "source", "similarity", "matched_target", "filepath"]].reset_index(drop=True)
    atomic_write_parquet(rows[["filepath", "label", "similarity", "matched_target"]], ctx.out / "mined.parquet")
    write_changenet_csv(rows[list(CHANGENET_COLUMNS)], ctx.out / "mining_pool.csv")
    counts = {"raw": len(dict.fromkeys(mined_paths)), "after_cutoff": after_cutoff, "after_history": len(rows),
              "targets": len(t_rows), "pool": len(pool)}
    return MiningOutcome(rows=rows, counts=counts)
