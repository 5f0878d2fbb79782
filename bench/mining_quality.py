"""Mining quality of the built-in pair embedder on the real deeppcb-dev workspace.

1. Defect-type precision@5: KPI NO_PASS rows are targets, the mining pool is searched; a neighbour is a
   hit when it has the target's defect type. Compared with a random pick from the pool (and from the
   pool's defects only, the stricter baseline).
2. Mis-registration: the CSVs do not say which crops are mis-registered, so it is ESTIMATED from the
   golden/test alignment at full resolution (best integer shift of 2-5 px that cuts the mean absolute
   difference by ≥ 40 %). For mis-registered PASS targets: share of their 5 neighbours that are
   mis-registered too, against the pool's base rate.

Usage: python bench/mining_quality.py [--workspace PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from deft_aoi.mining.embedders.builtin import BuiltinEmbedder, align_golden, load_gray
from deft_aoi.mining.knn import topk_cosine
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.workspace.changenet_csv import read_changenet_csv

DEFAULT_WS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeppcb-dev"


def pair_paths(df, images_dir: Path, light: str, ext: str) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    inputs = [str(images_dir / p / f"{o}_{light}{ext}") for p, o in zip(df.input_path, df.object_name, strict=True)]
    goldens = [str(images_dir / p / f"{o}_{light}{ext}") for p, o in zip(df.golden_path, df.object_name, strict=True)]
    return inputs, goldens


def misregistered(inputs: list[str], goldens: list[str], size: int = 128, max_shift: int = 6) -> np.ndarray:
    """Estimated mis-registration (see module doc), at full resolution, independent of the embedder's 64 px."""
    x = np.stack([load_gray(p, size) for p in inputs])
    g = np.stack([load_gray(p, size) for p in goldens])
    _, _, shifts, ratio = align_golden(x, g, max_shift)
    # 1-px offsets are common on registered crops (JPEG, crop rounding); a hit at the search edge is a
    # flat crop with no evidence. The README describes mis-registration as 2-4 px.
    worst = np.abs(shifts).max(axis=1)
    return (worst >= 2) & (worst < max_shift) & (ratio < 0.6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=DEFAULT_WS)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    ws: Path = args.workspace
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    light, ext = spec.lights[0], spec.image_ext
    kpi = read_changenet_csv(ws / "kpi" / "testing_set.csv")
    pool = read_changenet_csv(ws / "augmentation" / "mining_pool" / "mining_pool.csv")
    t_in, t_gd = pair_paths(kpi, ws / "kpi" / "images", light, ext)
    p_in, p_gd = pair_paths(pool, ws / "augmentation" / "mining_pool", light, ext)

    emb = BuiltinEmbedder()
    start = time.perf_counter()
    p_emb = emb.embed(p_in, p_gd)
    rate = len(p_in) / (time.perf_counter() - start)
    t_emb = emb.embed(t_in, t_gd)
    tl, pl = kpi["label"].to_numpy(), pool["label"].to_numpy()
    rng = np.random.default_rng(0)
    k = args.k
    print(f"encoder: {emb.fingerprint.describe()}  ({rate:,.0f} pairs/s = {2 * rate:,.0f} images/s, CPU)")

    defect = tl != "PASS"
    _, idx = topk_cosine(t_emb[defect], p_emb, k)
    hits = pl[idx] == tl[defect][:, None]
    p_at_k = hits.mean()
    rand = np.mean([(pl[rng.integers(0, len(pl), idx.shape)] == tl[defect][:, None]).mean() for _ in range(20)])
    p_def = pl[pl != "PASS"]
    rand_def = np.mean([(p_def[rng.integers(0, len(p_def), idx.shape)] == tl[defect][:, None]).mean()
                        for _ in range(20)])
    print(f"\n[defect type] {int(defect.sum())} NO_PASS targets vs {len(pl)} pool rows, precision@{k}:")
    print(f"  builtin {p_at_k:.3f}   random pick {rand:.3f} (×{p_at_k / rand:.1f})   "
          f"random defect {rand_def:.3f} (×{p_at_k / rand_def:.1f})")
    for lab in sorted(set(tl[defect])):
        m = tl[defect] == lab
        print(f"    {lab:10s} n={int(m.sum()):3d}  p@{k} {hits[m].mean():.3f}")

    sims, _ = topk_cosine(t_emb, p_emb, k)
    print(f"\n[cut-off] share of the {k} raw neighbours with cosine >= 0.9 (contract min_similarity): "
          f"all {(sims >= 0.9).mean():.3f}, NO_PASS targets {(sims[defect] >= 0.9).mean():.3f}, "
          f"PASS targets {(sims[~defect] >= 0.9).mean():.3f}; median top-{k} cosine {np.median(sims):.3f}")

    t_mis = misregistered(t_in, t_gd)
    p_mis = misregistered(p_in, p_gd)
    sel = (tl == "PASS") & t_mis
    print(f"\n[mis-registration] ESTIMATED from golden/test alignment (the CSVs carry no such column): "
          f"{int(t_mis[tl == 'PASS'].sum())}/{int((tl == 'PASS').sum())} KPI PASS and "
          f"{int(p_mis.sum())}/{len(p_mis)} pool rows look mis-registered")
    if sel.any():
        _, idx = topk_cosine(t_emb[sel], p_emb, k)
        share = p_mis[idx].mean()
        base = p_mis.mean()
        pass_base = p_mis[pl == "PASS"].mean()
        _, idx_ok = topk_cosine(t_emb[(tl == "PASS") & ~t_mis], p_emb, k)
        print(f"  mis-registered PASS targets ({int(sel.sum())}): {share:.3f} of their {k} neighbours are "
              f"mis-registered too; pool base rate {base:.3f}, PASS pool base rate {pass_base:.3f}; "
              f"well-registered PASS targets' neighbours: {p_mis[idx_ok].mean():.3f}")
        print(f"  neighbours of mis-registered PASS targets that are PASS: {(pl[idx] == 'PASS').mean():.3f}")


if __name__ == "__main__":
    main()
