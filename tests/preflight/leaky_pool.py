"""Build the issue-17 acceptance workspace: deeppcb-dev whose mining pool gets 30 leaking rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from PIL import Image

LIGHT = "SolderLight"
EXT = ".jpg"
PER_KIND = 10


def _image(ws: Path, row: pd.Series, col: str) -> Path:
    return ws / "kpi/images" / row[col] / f"{row['object_name']}_{LIGHT}{EXT}"


def _has_features(path: Path) -> bool:
    with Image.open(path) as img:
        lo, hi = img.convert("L").getextrema()
    return hi - lo > 40


def add_leaks(ws: Path) -> dict[str, pd.DataFrame]:
    """Append to the pool (a) PER_KIND exact key copies of KPI rows (paths as written, images copied under the
    pool dir), (b) PER_KIND KPI crops under new names (same bytes), (c) PER_KIND KPI crops re-encoded at JPEG
    quality 60 under new names. Returns the added pool rows per kind, as written in mining_pool.csv."""
    kpi = pd.read_csv(ws / "kpi/testing_set.csv", dtype=str, keep_default_na=False)
    usable = [i for i in range(len(kpi)) if _has_features(_image(ws, kpi.iloc[i], "input_path"))
              and _has_features(_image(ws, kpi.iloc[i], "golden_path"))]
    picked = kpi.iloc[usable[: 3 * PER_KIND * 3 : 3]].reset_index(drop=True)  # spread over boards and labels
    pool_dir = ws / "augmentation/mining_pool"
    added: dict[str, list[dict[str, str]]] = {"key": [], "content": [], "near_duplicate": []}
    for n, (_, row) in enumerate(picked.iterrows()):
        kind = ("key", "content", "near_duplicate")[n // PER_KIND]
        new = row.to_dict()
        if kind != "key":
            new["input_path"], new["golden_path"] = f"images/leak{n:02d}/test", f"images/leak{n:02d}/golden"
            new["object_name"], new["boardname"] = f"renamed{n:02d}", "leakboard"
        for col in ("input_path", "golden_path"):
            dest = pool_dir / new[col] / f"{new['object_name']}_{LIGHT}{EXT}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = _image(ws, row, col)
            if kind == "near_duplicate":
                with Image.open(src) as img:
                    img.save(dest, quality=60)
            else:
                shutil.copyfile(src, dest)
        added[kind].append(new)
    pool_csv = pool_dir / "mining_pool.csv"
    pool = pd.read_csv(pool_csv, dtype=str, keep_default_na=False)
    frames = {k: pd.DataFrame(v, columns=pool.columns) for k, v in added.items()}
    pd.concat([pool, *frames.values()], ignore_index=True).to_csv(pool_csv, index=False)
    return frames


def workspace_ids(rows: pd.DataFrame) -> set[tuple[str, str]]:
    """(input_path, object_name) of pool rows in the workspace coordinates of assembled training CSVs."""
    return {(f"augmentation/mining_pool/{r['input_path']}", r["object_name"]) for _, r in rows.iterrows()}
