"""Mining speed and memory, and embedding-cache behaviour.

A. k-NN: a pool of N × D unit float32 vectors (default 1M × 512), T targets (1k), top-k (5):
   end-to-end `mine_neighbours` time over raw `faiss.knn` time on the same arrays (target ≤ 1.3×), and
   peak RSS growth over the embedding-matrix size (target ≤ 1.5×). Each measurement runs in a fresh
   subprocess; RSS growth = ru_maxrss at the end − RSS before the pool matrix was allocated, so
   interpreter and library pages are not counted and nothing earlier inflates the peak.
B. Cache: a pool of M synthetic image pairs embedded by the built-in encoder through the cache; a rerun
   must embed 0; appending 1 % must embed exactly those.

Usage: python bench/mining_speed.py [--pool 1000000] [--dim 512] [--targets 1000] [--topn 5]
       [--cache-pairs 2000]      (use e.g. --pool 200000 for a quick run)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _make_unit(n: int, d: int, seed: int):  # type: ignore[no-untyped-def]
    """Unit rows generated in blocks straight into the final array (no full-size temporaries)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 65_536):
        block = out[s : s + 65_536]
        rng.standard_normal(out=block, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def child(mode: str, n: int, d: int, t: int, k: int) -> None:
    # faiss and pandas are imported before the baseline so their pages are not counted as growth.
    import faiss
    import numpy as np
    import pandas  # noqa: F401

    from deft_aoi.mining.knn import KnnParams, mine_neighbours

    queries = _make_unit(t, d, 1)
    base = _rss_bytes()
    pool = _make_unit(n, d, 2)
    start = time.perf_counter()
    if mode == "raw":
        sims, _ = faiss.knn(queries, pool, k, metric=faiss.METRIC_INNER_PRODUCT)
        kept = int((sims >= 0.0).sum())
    else:
        res = mine_neighbours(queries, pool, KnnParams(topn=k, min_similarity=0.0, filter_by_label=False))
        kept = res.counts["after_dedup"]
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "seconds": elapsed, "peak_growth": peak - base, "matrix": int(pool.nbytes),
                      "kept": kept, "checksum": float(np.float64(pool[:10].sum()))}))


def _run_child(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--pool", str(args.pool), "--dim", str(args.dim),
           "--targets", str(args.targets), "--topn", str(args.topn)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_knn(args: argparse.Namespace) -> None:
    raw = _run_child("raw", args)
    mine = _run_child("mine", args)
    gib = raw["matrix"] / 2**30
    print(f"[k-NN] pool {args.pool:,} × {args.dim} ({gib:.2f} GiB float32), {args.targets:,} targets, "
          f"top-{args.topn}")
    print(f"  raw faiss.knn        {raw['seconds']:.2f} s   peak RSS growth {raw['peak_growth'] / 2**30:.2f} GiB")
    print(f"  mine_neighbours      {mine['seconds']:.2f} s   peak RSS growth {mine['peak_growth'] / 2**30:.2f} GiB")
    print(f"  time ratio mine/raw  {mine['seconds'] / raw['seconds']:.3f}×  (target ≤ 1.3×)")
    print(f"  memory ratio peak/matrix  {mine['peak_growth'] / mine['matrix']:.3f}×  (target ≤ 1.5×)")


def synthetic_pairs(root: Path, n: int, *, size: int = 128, ext: str = ".jpg") -> tuple[list[str], list[str]]:
    """n (test, golden) image pairs under `root`: random binary goldens, the test with one extra trace."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    inputs, goldens = [], []
    for i in range(n):
        golden = np.where(rng.random((size, size)) < 0.5, 20, 235).astype(np.uint8)
        test = golden.copy()
        test[rng.integers(0, size - 8), :] = 20
        Image.fromarray(golden).save(root / f"{i}_g{ext}")
        Image.fromarray(test).save(root / f"{i}_t{ext}")
        inputs.append(str(root / f"{i}_t{ext}"))
        goldens.append(str(root / f"{i}_g{ext}"))
    return inputs, goldens


def bench_cache(args: argparse.Namespace) -> None:
    from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache
    from deft_aoi.mining.embedders.builtin import BuiltinEmbedder

    m = args.cache_pairs
    extra = max(1, m // 100)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs, goldens = synthetic_pairs(root, m + extra)
        emb = BuiltinEmbedder()
        cache = EmbeddingCache(root / "cache", emb.fingerprint, shard_size=512)
        runs = [("first run", m), ("rerun", m), (f"append {extra} (1 %)", m + extra)]
        print(f"[cache] built-in encoder, {m:,} pairs, device {emb.device}")
        for name, n in runs:
            start = time.perf_counter()
            _, stats = embed_with_cache(inputs[:n], goldens[:n], emb, cache)
            dt = time.perf_counter() - start
            rate = f"{2 * stats.embedded / dt:,.0f} images/s" if stats.embedded else "-"
            print(f"  {name:18s} rows {n:6,}  embedded {stats.embedded:6,} pairs  reused {stats.cached:6,}  "
                  f"{dt:6.2f} s  {rate}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--topn", type=int, default=5)
    ap.add_argument("--cache-pairs", type=int, default=2000)
    ap.add_argument("--skip-knn", action="store_true")
    ap.add_argument("--child", choices=["raw", "mine"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.pool, args.dim, args.targets, args.topn)
        return
    if not args.skip_knn:
        bench_knn(args)
    bench_cache(args)


if __name__ == "__main__":
    main()
