"""Pre-flight pool hygiene (issue 17) on a large workspace: leakage-check time, cold and warm.

Builds a workspace of POOL mining-pool rows and KPI KPI rows (+ VAL validation, 1,000 training rows), every
pair a distinct procedural 64×64 grayscale JPEG crop and golden, with 1 % of the KPI rows planted in the pool
(a third each: same key, same pixels under a new name, re-encoded at JPEG quality 60). Then times
`preflight.hygiene.check_hygiene` (what pre-flight runs) twice on the same workspace:

- cold: nothing cached: every image hashed, every pair embedded (pixel-pair), k-NN, matching;
- warm: the rerun: hashes and vectors come from the caches (nothing re-hashed or re-embedded).

Baselines measured in the same run: warm / cold, and the candidate search (8×8-pooled halves, top-16
through faiss, then an exact check) against an exact search over the full 2,048-d vectors on the first
SAMPLE pool rows (the two must find the same twins). Reading the CSVs is timed apart (pre-flight reads them
for its other checks).

Usage: python bench/pool_hygiene.py [--pool 100000] [--kpi 10000] [--val 2000] [--sample 5000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

LIGHT = "SolderLight"
HEADER = ("input_path,golden_path,label,object_name,project,boardname,comp_type_2,mpass_mfail,is_valid,comp_name,"
          "part_type,number_of_pins,description,comp_type_1")


def _crop(seed: int):  # type: ignore[no-untyped-def]
    """A distinct 64×64 'PCB' crop: random traces on 8-px cells plus sensor noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cells = (rng.random((8, 8)) > 0.5).astype(np.float32) * 170 + 40
    img = np.kron(cells, np.ones((8, 8), dtype=np.float32)) + rng.normal(0, 6, (64, 64))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_pair(root: Path, rel: str, name: str, seed: int) -> None:
    from PIL import Image

    for side, offset in (("test", 0), ("golden", 10**9)):
        d = root / rel / side
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_crop(seed + offset)).save(d / f"{name}_{LIGHT}.jpg", quality=90)


def _rows(prefix: str, n: int, seed0: int, root: Path, label_every: int = 3) -> list[str]:
    def one(i: int) -> str:
        rel = f"{prefix}{i // 100:05d}"
        _write_pair(root, rel, f"c{i % 100:02d}", seed0 + i)
        label = "open" if i % label_every == 0 else "PASS"
        return f"{rel}/test,{rel}/golden,{label},c{i % 100:02d},bench,board{i % 50},,,,,,,,"

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n), chunksize=256))


def build(ws: Path, n_pool: int, n_kpi: int, n_val: int) -> dict[str, int]:
    from PIL import Image

    images, pool_dir = ws / "kpi/images", ws / "augmentation/mining_pool"
    (ws / "train/base").mkdir(parents=True)
    (ws / "kpi").mkdir(parents=True)
    pool_dir.mkdir(parents=True)
    kpi = _rows("k", n_kpi, 10_000_000, images)
    val = _rows("v", n_val, 20_000_000, images)
    train = _rows("t", 1000, 30_000_000, images)
    pool = _rows("images/p", n_pool, 40_000_000, pool_dir)
    planted = {"key": 0, "content": 0, "near_duplicate": 0}
    for j, line in enumerate(kpi[:: 100]):
        kind = ("key", "content", "near_duplicate")[j % 3]
        in_dir, gold_dir, label, name = line.split(",")[:4]
        rel = in_dir.removesuffix("/test")
        new_rel, new_name = (rel, name) if kind == "key" else (f"images/leak{j:05d}", "twin")
        for side, src_dir in (("test", in_dir), ("golden", gold_dir)):
            dest = pool_dir / new_rel / side / f"{new_name}_{LIGHT}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = images / src_dir / f"{name}_{LIGHT}.jpg"
            if kind == "near_duplicate":
                with Image.open(src) as img:
                    img.save(dest, quality=60)
            else:
                shutil.copyfile(src, dest)
        board = line.split(",")[5] if kind == "key" else "leakboard"
        pool.append(f"{new_rel}/test,{new_rel}/golden,{label},{new_name},bench,{board},,,,,,,,")
        planted[kind] += 1
    for path, lines in ((ws / "kpi/testing_set.csv", kpi), (ws / "train/base/validation_set.csv", val),
                        (ws / "train/base/training_set.csv", train), (pool_dir / "mining_pool.csv", pool)):
        path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--kpi", type=int, default=10_000)
    parser.add_argument("--val", type=int, default=2_000)
    parser.add_argument("--sample", type=int, default=5_000)
    parser.add_argument("--keep", type=Path, default=None,
                        help="build the workspace here and keep it; a workspace kept earlier is reused")
    args = parser.parse_args()

    import numpy as np

    from deft_aoi.analysis.leakage import pair_near_duplicates
    from deft_aoi.mining.embedders.pixels import split_halves
    from deft_aoi.preflight.hygiene import _pair_vectors, _synthetic_set, check_hygiene
    from deft_aoi.workspace.changenet_csv import read_changenet_csv
    from deft_aoi.workspace.layout import WorkspaceLayout

    tmp = None if args.keep else tempfile.mkdtemp(prefix="deft_bench_hygiene_")
    ws = args.keep or Path(tmp)  # type: ignore[arg-type]
    try:
        start = time.perf_counter()
        if (ws / "planted.json").is_file():
            planted = json.loads((ws / "planted.json").read_text())
            print(f"reusing {ws} (planted {planted})")
        else:
            planted = build(ws, args.pool, args.kpi, args.val)
            (ws / "planted.json").write_text(json.dumps(planted))
            print(f"built {args.pool:,} pool + {args.kpi:,} KPI + {args.val:,} validation + 1,000 training pairs "
                  f"({2 * (args.pool + args.kpi + args.val + 1000):,} images) in {time.perf_counter() - start:.0f} s;"
                  f" planted {planted}")
        layout = WorkspaceLayout.at(ws)
        shutil.rmtree(layout.root / ".deft_cache", ignore_errors=True)  # the first pass is cold
        spec = SimpleNamespace(lights=[LIGHT], image_ext=".jpg")
        start = time.perf_counter()
        frames = {"training": read_changenet_csv(layout.train_csv),
                  "validation": read_changenet_csv(layout.validation_csv),
                  "kpi": read_changenet_csv(layout.kpi_csv), "mining_pool": read_changenet_csv(layout.mining_pool_csv)}
        print(f"reading the four CSVs: {time.perf_counter() - start:.1f} s (not part of the leakage checks)")
        runs = {}
        for name in ("cold", "warm"):
            start = time.perf_counter()
            result = check_hygiene(layout, spec, frames, threshold=0.998)  # type: ignore[arg-type]
            total = time.perf_counter() - start
            runs[name] = total
            counts = result.counts()["mining_pool"]
            print(f"{name}: {total:.1f} s  (" + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
                  + f"); hashed {result.hashed:,} files, embedded {result.embedded:,} pairs, "
                  f"{result.cached:,} from cache; found in pool {counts}")
            assert counts == planted, (counts, planted)
        print(f"warm / cold = {runs['warm'] / runs['cold']:.2f}")

        # Candidate search vs exact search over the full vectors, on the same arrays.
        from deft_aoi.preflight.hygiene import _csv_set, _hash_all

        assert _synthetic_set(layout, spec) is None  # type: ignore[arg-type]
        sets = [_csv_set(k, frames[k], p, d, layout, spec) for k, p, d in (  # type: ignore[arg-type]
            ("validation", layout.validation_csv, layout.kpi_images), ("kpi", layout.kpi_csv, layout.kpi_images),
            ("mining_pool", layout.mining_pool_csv, layout.mining_pool_dir))]
        paths = [p for s in sets for p in s.files["path"]]
        sha, _ = _hash_all(paths, layout)
        vectors, _, _, _ = _pair_vectors(sets, LIGHT, sha, layout)
        ref = np.concatenate(vectors[:2])
        n_planted = sum(planted.values())
        query = np.concatenate([vectors[2][: args.sample], vectors[2][-n_planted:]])
        start = time.perf_counter()
        fast = pair_near_duplicates(query, ref, 0.998)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        q_in, q_gold = split_halves(query)
        r_in, r_gold = split_halves(ref)
        best_pos, best_sim = [], []
        for s in range(0, len(query), 1024):
            sims = np.minimum(q_in[s : s + 1024] @ r_in.T, q_gold[s : s + 1024] @ r_gold.T)
            best_pos.append(sims.argmax(axis=1))
            best_sim.append(sims.max(axis=1))
        pos, sim = np.concatenate(best_pos), np.concatenate(best_sim)
        t_exact = time.perf_counter() - start
        exact = sorted(zip(np.nonzero(sim >= 0.998)[0].tolist(), pos[sim >= 0.998].tolist(), strict=True))
        assert exact == sorted(zip(fast["train_pos"].tolist(), fast["reference_pos"].tolist(), strict=True))
        print(f"near-duplicate search on {len(query):,} pool rows × {len(ref):,} references: candidates "
              f"{t_fast:.2f} s vs exact full-vector {t_exact:.2f} s = {t_exact / t_fast:.1f}× (same {len(exact)} "
              f"twins)")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
