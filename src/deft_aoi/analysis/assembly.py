"""Monotonic training-set assembly (CONTRACTS §3.5), pure.

Iteration 1 = base training rows + mined rows; iteration N = the previous combined CSV + mined rows.
Every earlier row is kept; a mined row already present (same LEAKAGE_KEY) is counted as a duplicate and
not added twice. Both inputs must already be in workspace coordinates (one images root).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from deft_aoi.analysis.leakage import member_mask, row_keys
from deft_aoi.errors import HardStop, InputError
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, conform

PreviousSource = Literal["base_train", "previous_iter_train"]
# set_aside_by: the iteration whose gate left the row out of this fine-tune ("" = trained on; analysis/guard.py)
PROVENANCE_COLUMNS: tuple[str, ...] = ("row", "input_path", "object_name", "label", "source", "pool_origin",
                                       "set_aside_by")
_POOL_ORIGIN = {"mining_pool": "real", "real": "real", "synthetic": "synthetic"}


@dataclass
class Assembly:
    combined: pd.DataFrame
    provenance: pd.DataFrame
    n_previous: int
    n_new_unique: int
    n_duplicates: int


def _check_coordinates(df: pd.DataFrame, what: str) -> None:
    """Workspace-relative paths only: an absolute or parent-escaping path means a frame was not rebased."""
    for col in ("input_path", "golden_path"):
        values = df[col].astype(str)
        bad = values.str.startswith(("/", "~")) | values.str.startswith("..")
        if bad.any():
            first = int(bad.to_numpy().nonzero()[0][0])
            raise InputError(
                f"{what} '{col}' = '{values.iloc[first]}' is not workspace-relative (rebase_paths first)",
                file=f"<{what}>",
                row=first + 2,
            )


def _pool_origin(mined: pd.DataFrame) -> pd.Series:
    if "source" not in mined.columns:
        # Without a tag the rows came straight from the real production pool.
        return pd.Series("real", index=mined.index)
    raw = mined["source"].fillna("").astype(str).str.strip()
    origin = raw.map(_POOL_ORIGIN)
    unknown = origin.isna()
    if unknown.any():
        first = int(unknown.to_numpy().nonzero()[0][0])
        raise InputError(f"mined row has unknown source {raw.iloc[first]!r} (expected mining_pool or synthetic)",
                         file="<mined>", row=first + 2)
    return origin


def assemble(previous: pd.DataFrame, previous_source: PreviousSource, mined: pd.DataFrame) -> Assembly:
    """previous + unique new mined rows, with a per-row provenance table; HardStop("silent_drop") guard."""
    if previous_source not in ("base_train", "previous_iter_train"):
        raise InputError(f"previous_source must be base_train or previous_iter_train, not {previous_source!r}")
    prev = conform(previous, file="<previous training rows>")
    new = conform(mined, file="<mined rows>")
    _check_coordinates(prev, "previous training rows")
    _check_coordinates(new, "mined rows")
    origin = _pool_origin(new)

    new_k = row_keys(new)
    is_dup = pd.Series(member_mask(new_k, row_keys(prev)), index=new.index) | new_k.duplicated()
    added = new.loc[~is_dup.to_numpy()]

    columns = list(CHANGENET_COLUMNS)
    combined = pd.concat([prev[columns], added[columns]], ignore_index=True)
    provenance = pd.DataFrame({
        "row": range(2, len(combined) + 2),
        "input_path": combined["input_path"],
        "object_name": combined["object_name"],
        "label": combined["label"],
        "source": [previous_source] * len(prev) + ["mining_pool"] * len(added),
        "pool_origin": [""] * len(prev) + origin.loc[added.index].tolist(),
        "set_aside_by": "",
    })
    result = Assembly(combined=combined, provenance=provenance, n_previous=len(prev),
                      n_new_unique=len(added), n_duplicates=int(is_dup.sum()))
    check_no_silent_drop(prev, new, combined)
    return result


def check_no_silent_drop(previous: pd.DataFrame, mined: pd.DataFrame, combined: pd.DataFrame) -> None:
    """Every previous row (with multiplicity) and every mined key must survive into `combined`."""
    comb_keys = row_keys(combined)
    if len(previous):
        prev_keys = row_keys(previous)
        comb_counts = Counter(comb_keys.to_numpy(dtype=object))
        prev_counts = Counter(prev_keys.to_numpy(dtype=object))
        short = [key for key, n in prev_counts.items() if comb_counts.get(key, 0) < n]
        if short:
            lost = sum(prev_counts[k] - comb_counts.get(k, 0) for k in short)
            example = previous.loc[(prev_keys == short[0]).to_numpy()].iloc[0]
            raise HardStop("silent_drop", f"assembly lost {lost} earlier training row(s), e.g. "
                                          f"input_path={example['input_path']} object_name={example['object_name']}")
    if len(mined):
        mined_keys = row_keys(mined)
        absent = ~member_mask(mined_keys, comb_keys)
        if absent.any():
            first = mined.loc[absent].iloc[0]
            n_lost = int(mined_keys[absent].nunique())
            raise HardStop("silent_drop", f"assembly lost {n_lost} mined row(s), e.g. "
                                          f"input_path={first['input_path']} object_name={first['object_name']}")


def write_assembly(a: Assembly, dataset_dir: Path, iteration: int) -> tuple[Path, Path]:
    """`train_combined_iter{N}.csv` and `train_combined_iter{N}_provenance.csv`, atomically."""
    from deft_aoi.io_utils import atomic_write_csv
    from deft_aoi.workspace.catalog import name
    from deft_aoi.workspace.changenet_csv import write_changenet_csv

    if a.n_previous + a.n_new_unique != len(a.combined) or len(a.provenance) != len(a.combined):
        raise HardStop("silent_drop", f"assembly counts disagree: {a.n_previous} previous + {a.n_new_unique} new "
                                      f"≠ {len(a.combined)} rows ({len(a.provenance)} provenance rows)")
    dataset_dir = Path(dataset_dir)
    csv_path = dataset_dir / name("assemble.train_csv", index=iteration)
    prov_path = dataset_dir / name("assemble.provenance", index=iteration)
    write_changenet_csv(a.combined, csv_path)
    atomic_write_csv(a.provenance[list(PROVENANCE_COLUMNS)], prov_path)
    return csv_path, prov_path


def set_aside_by(combined: pd.DataFrame, excluded: dict[str, pd.DataFrame]) -> pd.Series:
    """Per row of the assembled CSV: the iteration whose gate set it aside (`excluded`: iteration → the rows
    its gate recorded, in order; analysis/guard.py), "" for a row the fine-tune keeps. Rows match on
    LEAKAGE_KEY; the provenance column `set_aside_by`."""
    out = pd.Series("", index=combined.index, dtype=object)
    if combined.empty:
        return out
    keys = row_keys(combined)
    for iteration, rows in excluded.items():
        if rows.empty:
            continue
        hit = member_mask(keys, row_keys(rows)) & (out == "").to_numpy()
        out[hit] = iteration
    return out
