"""Which rows teach a converged shape head most: a probe of selection, with the model taken out of the way.

    PYTHONPATH=src .venv/bin/python bench/selection_probe.py KEPT_RUN [--workspace PATH] [--budgets 100,200]

KEPT_RUN is one arm folder a `bench/loop_efficacy.py --keep` run left (`s<seed>_<arm>/`) whose iteration 1
mined with the builtin engine: its `iter1/mining_filter/` holds the weak targets (with the baseline's
scores) and the builtin embedder's vectors of targets and pool. The probe then replaces the local model's
training by a logistic regression (converged, L2 C = 1, the spec's class weight 10 on defects) on the
branch model's fixed change-shape descriptors (model.change_shape of the registered pair), trained on the
base training set plus the selected pool rows, and prints FAR@recall100 / FAR@recall99 on the KPI set for:

- target sets: every RCA target (50 weakest per label), only the threshold's targets (PASS rows scored at
  or above the lowest defect, and the 20 lowest defects), only those PASS rows;
- neighbour spaces: the builtin embedder's (cosine), or the descriptors themselves (standardised,
  Euclidean) — i.e. the model's own view of a change;
- budgets (rows added), picked round-robin over the targets, nearest first, each pool row once;
- and the same number of uniformly random pool rows (several draws).

Branch-only research tool for issue 15 (bench/RESULTS.md, loop efficacy run 8); not a product path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deft_aoi.runners.local import data
from deft_aoi.runners.local.model import change_shape, out_of_tolerance, to_input

DEFAULT_WORKSPACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeppcb-dev"
LIGHT = "SolderLight"
LOWEST_DEFECTS = 20


def load_set(csv: Path, base: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The CSV's rows and their change-shape descriptors (golden registered onto the input first)."""
    df = pd.read_csv(csv)
    pairs = []
    for row in df.itertuples():
        sides = [np.asarray(Image.open(base / f"{p}/{row.object_name}_{LIGHT}.jpg").convert("RGB"))
                 for p in (row.input_path, row.golden_path)]
        pairs.append(np.stack(sides).transpose(0, 3, 1, 2))
    stacked = np.stack(pairs)
    data.align_goldens(stacked, data.ALIGN_MAX_SHIFT_PX)
    with torch.no_grad():
        pairs = to_input(stacked, torch.device("cpu"))
        shape = change_shape(out_of_tolerance(pairs), pairs[:, 1])
    return df, shape.numpy().astype(np.float64)


def key(df: pd.DataFrame) -> pd.Series:
    """`<pair>/<object>`: one name for a row whatever prefix its path carries."""
    pair = df["input_path"].str.replace(r"^.*images/", "", regex=True).str.replace(r"/test$", "", regex=True)
    return pair + "/" + df["object_name"]


def far(scores: np.ndarray, is_defect: np.ndarray, recall: float = 1.0) -> float:
    defects = np.sort(scores[is_defect])
    threshold = defects[int(np.floor((1 - recall) * len(defects)))]
    return round(100 * float((scores[~is_defect] >= threshold).mean()), 1)


def round_robin(order: np.ndarray, budget: int) -> np.ndarray:
    """order: (targets, candidates) pool indices nearest first → `budget` distinct rows, one per target per
    round."""
    chosen: list[int] = []
    seen: set[int] = set()
    for rank in range(order.shape[1]):
        for row in order[:, rank]:
            if int(row) not in seen:
                seen.add(int(row))
                chosen.append(int(row))
            if len(chosen) == budget:
                return np.asarray(chosen)
    return np.asarray(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a kept bench arm folder (s<seed>_<arm>)")
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE)
    parser.add_argument("--budgets", default="100,200")
    parser.add_argument("--draws", type=int, default=6, help="random draws per budget")
    args = parser.parse_args()
    mining = sorted(args.run.glob("results/run_*/iter1/mining_filter"))
    if not mining:
        sys.exit(f"{args.run}: no results/run_*/iter1/mining_filter (keep a bench run with --keep)")
    ws = args.workspace
    train_df, x_train = load_set(ws / "train/base/training_set.csv", ws / "kpi/images")
    kpi_df, x_kpi = load_set(ws / "kpi/testing_set.csv", ws / "kpi/images")
    pool_df, x_pool = load_set(ws / "augmentation/mining_pool/mining_pool.csv", ws / "augmentation/mining_pool")
    y_train, y_kpi, y_pool = (d["label"].to_numpy() != "PASS" for d in (train_df, kpi_df, pool_df))

    def fit_far(rows: np.ndarray) -> tuple[float, float]:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight={0: 1, 1: 10}, max_iter=5000))
        model.fit(np.concatenate([x_train, x_pool[rows]]), np.concatenate([y_train, y_pool[rows]]))
        scores = model.decision_function(x_kpi)
        return far(scores, y_kpi), far(scores, y_kpi, 0.99)

    targets = pd.read_parquet(mining[0] / "target_embeddings.parquet")
    source = pd.read_parquet(mining[0] / "source_embeddings.parquet")
    source = source[source["source"] == "mining_pool"].reset_index(drop=True)
    pool_index = pd.Series(np.arange(len(pool_df)), index=key(pool_df))
    kpi_index = pd.Series(np.arange(len(kpi_df)), index=key(kpi_df))
    source_rows = pool_index[key(source)].to_numpy()
    source_emb = np.stack(source["embedding"].to_numpy())
    target_emb = np.stack(targets["embedding"].to_numpy())
    target_kpi = kpi_index[key(targets)].to_numpy()

    is_pass = (targets["label"] == "PASS").to_numpy()
    lowest = float(targets.loc[~is_pass, "siamese_score"].min())
    above = np.flatnonzero(is_pass & (targets["siamese_score"].to_numpy() >= lowest))
    low = targets.loc[~is_pass, "siamese_score"].nsmallest(LOWEST_DEFECTS).index.to_numpy()
    target_sets = {
        "every RCA target": np.arange(len(targets)),
        "threshold targets": np.concatenate([above, low]),
        "PASS above the lowest defect": above,
    }
    scaler = StandardScaler().fit(np.concatenate([x_train, x_pool]))
    z_pool = scaler.transform(x_pool[source_rows])
    z_targets = scaler.transform(x_kpi[target_kpi])
    base = fit_far(np.asarray([], dtype=np.int64))
    print(f"{args.run.name}: {len(targets)} RCA targets, {len(above)} PASS at or above the lowest defect")
    print(f"base training set only: FAR@recall100 {base[0]} %, FAR@recall99 {base[1]} %")
    print("| targets | neighbour space | rows added | PASS among them | FAR@recall100 | FAR@recall99 |")
    print("|---|---|---|---|---|---|")
    budgets = [int(b) for b in args.budgets.split(",")]
    for name, chosen in target_sets.items():
        orders = {
            "builtin embedder": np.argsort(-(target_emb[chosen] @ source_emb.T), axis=1),
            "change-shape descriptors": np.argsort(
                ((z_targets[chosen][:, None, :] - z_pool[None]) ** 2).sum(-1), axis=1),
        }
        for space, order in orders.items():
            for budget in budgets:
                rows = source_rows[round_robin(order, budget)]
                f100, f99 = fit_far(rows)
                print(f"| {name} ({len(chosen)}) | {space} | {len(rows)} | {int((~y_pool[rows]).sum())} | "
                      f"{f100} | {f99} |")
    for budget in budgets:
        draws = [fit_far(np.random.default_rng(d).choice(source_rows, budget, replace=False))
                 for d in range(args.draws)]
        print(f"| random ({args.draws} draws) | — | {budget} | — | "
              f"{', '.join(str(f[0]) for f in draws)} | {', '.join(str(f[1]) for f in draws)} |")


if __name__ == "__main__":
    main()
