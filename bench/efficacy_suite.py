"""The workspaces of the efficacy suite: grouped cross-validation folds over board groups, and demo workspaces.

A model or selection change is judged on boards nobody tuned on (issue 25), not on the workspace it was
tuned on. Two kinds of entry:

  fold k of N   a copy of a workspace whose KPI and validation rows come only from the board groups held
                out in fold k (`boardname`), and whose base training set and mining pool hold no row of those
                groups; the synthetic pool (no board) is kept whole. Groups are dealt to folds by KPI rows,
                largest first, each to the fold with the fewest KPI rows so far: folds of similar weight,
                the same for every run of the bench.
                The KPI set also takes the held-out groups' training and pool rows (`wide_kpi`, the
                default): rows of boards the fold never trains or mines on are unseen-board data like the
                KPI rows, and throwing them away left KPI sets of 11–150 rows whose FAR@recall100 moved in
                steps of 1.5–20 % and was 0.0 % at the baseline in 3 of 4 folds (bench/RESULTS.md runs 9–10:
                every pair a tie, no loop effect measurable). About 4x the rows: finer steps, and a KPI
                that is not met by chance. `wide_kpi=False` is the narrow design of runs 9–10.
  demo s        `deft demo-data --size small --seed s`: procedural boards, split by board already.

Pure functions decide (`assign_folds`, `fold_frames`); `write_fold` / `write_demo` do the I/O.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

GROUP_COLUMN = "boardname"
PATH_COLUMNS = ("input_path", "golden_path")
# Where a fold's KPI set finds the held-out pool rows' image folders: under the KPI images root (a path
# must stay under its images root, so the folders are copied there, not linked).
POOL_IN_KPI = "heldout_pool"


@dataclass(frozen=True)
class Entry:
    """One workspace of the suite: `label` names its folder and its rows in the tables."""

    label: str
    path: Path


def assign_folds(kpi_rows: dict[str, int], n_folds: int) -> list[list[str]]:
    """Board groups dealt to `n_folds` folds: largest KPI share first, each to the lightest fold (ties: the
    lower fold, then the group name), so the split is the same on every run."""
    if n_folds < 2:
        raise ValueError("grouped cross-validation needs at least 2 folds")
    if len(kpi_rows) < n_folds:
        raise ValueError(f"{len(kpi_rows)} board group(s) in the KPI set cannot make {n_folds} folds")
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    weight = [0] * n_folds
    for group, rows in sorted(kpi_rows.items(), key=lambda kv: (-kv[1], kv[0])):
        k = min(range(n_folds), key=lambda i: (weight[i], i))
        folds[k].append(group)
        weight[k] += rows
    return [sorted(f) for f in folds]


def fold_frames(frames: dict[str, pd.DataFrame], held_out: set[str], *,
                wide_kpi: bool = True) -> dict[str, pd.DataFrame]:
    """The four CSVs of one fold: `kpi` and `validation` keep the held-out groups' rows, `training` and
    `pool` every other row; with `wide_kpi` the held-out groups' training and pool rows join the KPI set
    (pool rows' image folders under POOL_IN_KPI, where write_fold puts them). Raises ValueError when a
    fold cannot train or be measured (a class missing)."""
    keep_held = {"kpi", "validation"}
    out: dict[str, pd.DataFrame] = {}
    moved: list[pd.DataFrame] = []
    for name, frame in frames.items():
        if GROUP_COLUMN not in frame.columns:
            raise ValueError(f"the {name} CSV has no {GROUP_COLUMN!r} column: grouped folds need board groups")
        held = frame[GROUP_COLUMN].astype(str).isin(held_out)
        out[name] = frame[held if name in keep_held else ~held].reset_index(drop=True)
        if wide_kpi and name == "training":
            moved.append(frame[held])
        elif wide_kpi and name == "pool":
            rows = frame[held].copy()
            for column in PATH_COLUMNS:
                rows[column] = POOL_IN_KPI + "/" + rows[column].astype(str)
            moved.append(rows)
    if moved:
        out["kpi"] = pd.concat([out["kpi"], *moved], ignore_index=True)
    for name in ("training", "validation", "kpi"):
        labels = out[name]["label"].astype(str)
        if not (labels == "PASS").any() or (labels == "PASS").all():
            raise ValueError(f"fold holding out {sorted(held_out)}: its {name} rows lack PASS or defect rows")
    return out


def _csvs(workspace: Path) -> dict[str, Path]:
    from deft_aoi.workspace.layout import WorkspaceLayout

    layout = WorkspaceLayout(workspace)
    return {"training": layout.train_csv, "validation": layout.validation_csv, "kpi": layout.kpi_csv,
            "pool": layout.mining_pool_csv}


def read_frames(workspace: Path) -> dict[str, pd.DataFrame]:
    # As text, so that every cell is written back exactly as it was read (board ids, empty optional columns).
    return {name: pd.read_csv(path, dtype=str, keep_default_na=False) for name, path in _csvs(workspace).items()}


def kpi_rows_by_group(workspace: Path) -> dict[str, int]:
    kpi = read_frames(workspace)["kpi"]
    if GROUP_COLUMN not in kpi.columns:
        raise ValueError(f"{_csvs(workspace)['kpi']} has no {GROUP_COLUMN!r} column")
    return {str(k): int(v) for k, v in kpi[GROUP_COLUMN].astype(str).value_counts().items()}


def write_fold(workspace: Path, dest: Path, held_out: list[str], *, wide_kpi: bool = True) -> Path:
    """A copy of `workspace` (without results/) at `dest` whose CSVs are fold_frames' for `held_out`; with
    `wide_kpi`, the held-out pool rows' image folders copied under the KPI images root."""
    from deft_aoi.workspace.layout import WorkspaceLayout

    source = read_frames(workspace)
    frames = fold_frames(source, set(held_out), wide_kpi=wide_kpi)
    shutil.copytree(workspace, dest, ignore=shutil.ignore_patterns("results", ".deft_cache"))
    if wide_kpi:
        layout = WorkspaceLayout(dest)
        pool = source["pool"]
        held = pool[pool[GROUP_COLUMN].astype(str).isin(held_out)]
        for folder in sorted(set(held["input_path"]) | set(held["golden_path"])):
            shutil.copytree(layout.mining_pool_dir / folder, layout.kpi_images / POOL_IN_KPI / folder,
                            dirs_exist_ok=True)
    for name, path in _csvs(dest).items():
        frames[name].to_csv(path, index=False)
    return dest


def write_demo(dest: Path, seed: int) -> Path:
    from deft_aoi.demo.generator import generate_workspace

    generate_workspace(dest, seed=seed, size="small")
    return dest


def suite_entries(workspace: Path, root: Path, *, folds: int, demo_seeds: list[int],
                  wide_kpi: bool = True) -> list[Entry]:
    """Write the suite's workspaces under `root`: `fold<k>` for each grouped fold (none when folds is 0),
    `demo<s>` for each demo seed; or the workspace itself as the one entry when neither is asked for."""
    entries: list[Entry] = []
    if folds:
        for k, held in enumerate(assign_folds(kpi_rows_by_group(workspace), folds)):
            label = f"fold{k}"
            fold = write_fold(workspace, root / "_workspaces" / label, held, wide_kpi=wide_kpi)
            entries.append(Entry(label, fold))
            kpi = read_frames(fold)["kpi"]
            wide = ", with the groups' training and pool rows" if wide_kpi else ""
            print(f"{label}: KPI ({len(kpi)} rows, {int((kpi['label'] == 'PASS').sum())} PASS{wide}) and "
                  f"validation from board group(s) {', '.join(held)}; training and pool from the others", flush=True)
    for seed in demo_seeds:
        label = f"demo{seed}"
        entries.append(Entry(label, write_demo(root / "_workspaces" / label, seed)))
    return entries or [Entry("", workspace)]
