"""Where the near-duplicate cut-off comes from, on real crops (deeppcb-dev), and why not the mining encoder.

For every KPI + validation pair, JPEG re-encodes at qualities 10/30/60 (input and golden) are twins that must be
found; every mining-pool pair is a distinct sample (the data set splits by source image pair) whose best score
against KPI/validation must stay below the cut-off. Printed for the pixel-pair encoder (pre-flight's; score =
min(input cosine, golden cosine)) and for the mining encoder builtin-pairdiff (score = pair cosine).

Usage: python bench/near_duplicate_threshold.py [--workspace ../shared/data/deeppcb-dev] [--every 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=REPO.parent / "shared" / "data" / "deeppcb-dev")
    parser.add_argument("--every", type=int, default=5, help="re-encode every N-th KPI/validation pair")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from deft_aoi.mining.embedders.builtin import BuiltinEmbedder
    from deft_aoi.mining.embedders.pixels import PixelPairEmbedder, split_halves
    from deft_aoi.runners.tao.changenet_spec import load_spec
    from deft_aoi.workspace.changenet_csv import image_paths, read_changenet_csv
    from deft_aoi.workspace.layout import WorkspaceLayout

    ws = WorkspaceLayout.at(args.workspace)
    spec = load_spec(ws.spec_file)

    def pairs(csv: Path, images: Path) -> tuple[list[str], list[str]]:
        table = image_paths(read_changenet_csv(csv), images, [spec.lights[0]], spec.image_ext)
        side = {s: table[table["side"] == s].sort_values("row")["path"].tolist() for s in ("input", "golden")}
        return side["input"], side["golden"]

    ki, kg = pairs(ws.kpi_csv, ws.kpi_images)
    vi, vg = pairs(ws.validation_csv, ws.kpi_images)
    pi, pg = pairs(ws.mining_pool_csv, ws.mining_pool_dir)
    ref_i, ref_g = ki + vi, kg + vg
    picked = list(range(0, len(ref_i), args.every))
    with tempfile.TemporaryDirectory() as tmp:
        reencoded: dict[int, tuple[list[str], list[str]]] = {}
        for q in (10, 30, 60):
            outs: tuple[list[str], list[str]] = ([], [])
            for n in picked:
                for src, out, side in ((ref_i[n], outs[0], "i"), (ref_g[n], outs[1], "g")):
                    dest = Path(tmp) / f"q{q}_{n}_{side}.jpg"
                    with Image.open(src) as img:
                        img.save(dest, quality=q)
                    out.append(str(dest))
            reencoded[q] = outs
        print(f"{len(picked)} KPI/validation pairs re-encoded; {len(pi)} distinct pool pairs vs {len(ref_i)} "
              "references")
        for name, embedder in (("pixel-pair (pre-flight)", PixelPairEmbedder()), ("builtin-pairdiff (mining)",
                                                                                   BuiltinEmbedder())):
            ref = embedder.embed(ref_i, ref_g)
            pool = embedder.embed(pi, pg)

            def score(a: np.ndarray, b: np.ndarray, pixel: bool) -> np.ndarray:
                if not pixel:
                    return a @ b.T
                (ai, ag), (bi, bg) = split_halves(a), split_halves(b)
                # As analysis.leakage.pair_near_duplicates: a side blank in both rows is equal, all blank is not.
                same_i = ~ai.any(axis=1)[:, None] & ~bi.any(axis=1)[None, :]
                same_g = ~ag.any(axis=1)[:, None] & ~bg.any(axis=1)[None, :]
                out = np.minimum(np.where(same_i, 1.0, ai @ bi.T), np.where(same_g, 1.0, ag @ bg.T))
                out[same_i & same_g] = 0.0
                return out

            pixel = isinstance(embedder, PixelPairEmbedder)
            live = np.array([np.abs(ref[n]).sum() > 0 for n in picked])  # blank crops have no identity
            print(f"\n{name}")
            for q, (ins, gos) in reencoded.items():
                twin = np.diag(score(embedder.embed(ins, gos), ref[picked], pixel))[live]
                print(f"  re-encoded at quality {q}: lowest twin score {twin.min():.5f}, "
                      f"5th percentile {np.quantile(twin, 0.05):.5f}")
            best = score(pool, ref, pixel).max(axis=1)
            print(f"  distinct pool pairs: highest score {best.max():.5f}; ≥ 0.99: {(best >= 0.99).sum()}, "
                  f"≥ 0.998: {(best >= 0.998).sum()}")


if __name__ == "__main__":
    main()
