"""Mining beyond one machine's memory (issue 14): sharded exact k-NN, approximate indexes, float16, Ray.

knn   A synthetic pool of N × 512 unit float32 rows (default 5M = 9.5 GiB) written to a .npy under /tmp
      (deleted afterwards), T targets (200), top-5. Sharded exact search streaming the file under a
      --budget (2 GiB): peak RSS growth (ru_maxrss − RSS before the search) against the budget; time
      against the in-memory exact search (faiss.knn on the whole matrix) at the largest size that fits
      the free memory at that moment (--compare-rows, else 5M when > 14 GiB is available, else 2M).
      Each measurement runs in a fresh subprocess. Results must be identical (checked).
ann   N (1M) clustered rows in memory, T (1000) targets near pool rows: exact time, then IVF and HNSW
      build time, query time and recall@5 against exact; and the recall@5 of an exact search over a
      float16 copy of the pool (the `--cache-dtype float16` effect).
ray   P (20k) synthetic image pairs embedded by the built-in encoder: in-process vs Ray Data with 1 and 2
      actors (a local Ray with 2 CPUs), throughput ratio; Ray's start-up is included and also shown apart.

The pools are synthetic: rows around 1,000 random centres (noise 0.35 per dim before normalising), which
gives the clustered structure real embeddings have; uniform random vectors in 512-d have no neighbours
worth the name and are the worst case for IVF/HNSW.

Usage: python bench/mining_scale.py knn [--rows 5000000] [--budget 2G] [--targets 200] [--compare-rows N]
       python bench/mining_scale.py ann [--rows 1000000] [--targets 1000] [--nprobe 8 32] [--no-float16]
       python bench/mining_scale.py ray [--pairs 20000]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

DIM = 512
CENTRES = 1000


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so earlier set-up is not counted (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _centres(d: int):  # type: ignore[no-untyped-def]
    import numpy as np

    return np.random.default_rng(0).standard_normal((CENTRES, d), dtype=np.float32)


def clustered_block(start: int, n: int, d: int, centres):  # type: ignore[no-untyped-def]
    """Rows [start, start + n) of the synthetic pool (deterministic per block)."""
    import numpy as np

    rng = np.random.default_rng(1_000_003 + start)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def targets_near(pool_rows, t: int, seed: int = 7):  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(seed)
    q = pool_rows[rng.choice(len(pool_rows), t, replace=False)] + 0.05 * rng.standard_normal(
        (t, pool_rows.shape[1]), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def write_pool(path: Path, n: int, d: int) -> None:
    import numpy as np

    from deft_aoi.mining.pool_file import NpyWriter

    centres = _centres(d)
    w = NpyWriter(path, n, d)
    for s in range(0, n, 262_144):
        m = min(262_144, n - s)
        w.put(np.arange(s, s + m), clustered_block(s, m, d, centres))
    w.close()


# --- knn ----------------------------------------------------------------------------------------------------

def knn_child(mode: str, path: str, rows: int, t: int, budget: int, out: str) -> None:
    import faiss  # noqa: F401 - imported before the baseline so library pages are not counted
    import numpy as np
    import pandas  # noqa: F401

    from deft_aoi.mining.knn import exact_search, shard_rows_for_budget
    from deft_aoi.mining.pool_file import NpyBlocks

    blocks = NpyBlocks(Path(path))
    queries = targets_near(blocks.read_rows(0, 20_000), t)
    _reset_peak()
    base = _rss()
    start = time.perf_counter()
    if mode == "sharded":
        shard = shard_rows_for_budget(budget, DIM, t, 5)

        class Prefix:  # the first `rows` rows of the file
            shape = (rows, DIM)

            def blocks(self, r: int):  # type: ignore[no-untyped-def]
                for s, b in blocks.blocks(r):
                    if s >= rows:
                        return
                    yield s, b[: rows - s]

        (_, idx), = exact_search(queries, Prefix(), 5, shard_rows=shard)
        load_s = 0.0
    else:
        shard = 0
        pool = blocks.read_rows(0, rows)
        load_s = time.perf_counter() - start  # reported apart: "in memory" means already loaded
        start = time.perf_counter()
        (_, idx), = exact_search(queries, pool, 5)
    elapsed = time.perf_counter() - start
    np.save(out, idx)
    print(json.dumps({"mode": mode, "rows": rows, "seconds": elapsed, "load_s": load_s,
                      "growth": _peak() - base, "shard_rows": shard}))


def _child(*args: str) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_knn(args: argparse.Namespace) -> None:
    import numpy as np

    from deft_aoi.config import parse_memory

    budget = parse_memory(args.budget)
    tmp = Path(tempfile.mkdtemp(prefix="deft_bench_knn_", dir="/tmp"))
    try:
        path = tmp / "pool.npy"
        t0 = time.perf_counter()
        write_pool(path, args.rows, DIM)
        print(f"[knn] wrote {args.rows:,} × {DIM} float32 ({path.stat().st_size / 2**30:.2f} GiB) in "
              f"{time.perf_counter() - t0:.0f} s; {args.targets} targets, top-5, budget {budget / 2**30:.2f} GiB")
        full = _child("--knn-child", "sharded", str(path), str(args.rows), str(args.targets), str(budget),
                      str(tmp / "s_full.npy"))
        print(f"  sharded, {args.rows:,} rows from disk: {full['seconds']:.1f} s, shards of {full['shard_rows']:,} "
              f"rows, peak RSS growth {full['growth'] / 2**30:.2f} GiB = {full['growth'] / budget:.2f}× budget "
              "(target ≤ 1.10×)")
        avail = _available()
        cmp_rows = args.compare_rows or (args.rows if avail > 14 * 2**30 else min(args.rows, 2_000_000))
        print(f"  memory available now: {avail / 2**30:.1f} GiB → in-memory comparison at {cmp_rows:,} rows")
        mem = _child("--knn-child", "memory", str(path), str(cmp_rows), str(args.targets), str(budget),
                     str(tmp / "m.npy"))
        if cmp_rows == args.rows:
            sh = full
            same = np.array_equal(np.load(tmp / "s_full.npy"), np.load(tmp / "m.npy"))
        else:
            sh = _child("--knn-child", "sharded", str(path), str(cmp_rows), str(args.targets), str(budget),
                        str(tmp / "s.npy"))
            same = np.array_equal(np.load(tmp / "s.npy"), np.load(tmp / "m.npy"))
        print(f"  at {cmp_rows:,} rows: in-memory {mem['seconds']:.1f} s search (+ {mem['load_s']:.1f} s loading "
              f"the matrix; RSS growth {mem['growth'] / 2**30:.2f} "
              f"GiB), sharded {sh['seconds']:.1f} s (RSS growth {sh['growth'] / 2**30:.2f} GiB): time ratio "
              f"{sh['seconds'] / mem['seconds']:.3f}× (target ≤ 1.3×); identical neighbours: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# --- ann ----------------------------------------------------------------------------------------------------

def bench_ann(args: argparse.Namespace) -> None:
    import numpy as np

    from deft_aoi.mining.ann import AnnParams, FaissIndex, build_index
    from deft_aoi.mining.knn import ArrayBlocks, exact_search

    n, t, k = args.rows, args.targets, 5
    tmp = None
    if args.stream:
        # Pool on disk, never whole in memory: exact = the sharded streamed search under 2 GiB, the index
        # built block by block (float16 codes unless --float32-index).
        from deft_aoi.mining.knn import shard_rows_for_budget
        from deft_aoi.mining.pool_file import NpyBlocks

        tmp = Path(tempfile.mkdtemp(prefix="deft_bench_ann_", dir="/tmp"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # 4 bytes × 512 × n of /tmp, even on a crash
        t0 = time.perf_counter()
        write_pool(tmp / "pool.npy", n, DIM)
        pool = NpyBlocks(tmp / "pool.npy")
        queries = targets_near(pool.read_rows(0, 20_000), t)
        print(f"[ann --stream] wrote {n:,} × {DIM} float32 to /tmp in {time.perf_counter() - t0:.0f} s", flush=True)
        blocks = pool
        exact_kw = {"shard_rows": shard_rows_for_budget(2 * 2**30, DIM, t, k)}
    else:
        centres = _centres(DIM)
        pool = np.empty((n, DIM), dtype=np.float32)
        for s in range(0, n, 262_144):
            m = min(262_144, n - s)
            pool[s : s + m] = clustered_block(s, m, DIM, centres)
        queries = targets_near(pool, t)
        blocks = ArrayBlocks(pool)
        exact_kw = {}
    start = time.perf_counter()
    (e_sims, e_idx), = exact_search(queries, pool, k, **exact_kw)
    exact_s = time.perf_counter() - start
    how = "sharded exact search streamed from disk" if args.stream else "exact search"
    print(f"[ann] pool {n:,} × {DIM} clustered, {t} targets, top-{k}; {how} {exact_s:.2f} s", flush=True)

    def recall(a_sims, a_idx) -> float:  # type: ignore[no-untyped-def]
        hits = 0
        for row in range(t):
            ties = (a_sims[row] >= e_sims[row, -1] - 1e-6) & ~np.isin(a_idx[row], e_idx[row])
            hits += min(k, len(set(a_idx[row]) & set(e_idx[row])) + int(ties.sum()))
        return hits / (t * k)

    f16 = args.stream and not args.float32_index
    kinds = [AnnParams(kind="ivf", float16=f16)] + (
        [AnnParams(kind="hnsw", float16=f16)] if n <= args.hnsw_max_rows else [])
    for params in kinds:
        start = time.perf_counter()
        built = build_index(blocks, params)
        build_s = time.perf_counter() - start
        # IVF: one built index searched at each --nprobe (default first), so the trade-off is measured
        # in the same run against the same exact time.
        variants = [params] if params.kind != "ivf" else [params] + [
            replace(params, nprobe=p) for p in args.nprobe if p != params.resolved_nprobe(n)]
        for v in variants:
            index = FaissIndex(built, v)
            start = time.perf_counter()
            a_sims, a_idx = index.search(queries, k, None)
            query_s = time.perf_counter() - start
            codes = "float16 codes, " if v.float16 else ""
            extra = f"{codes}nlist {v.resolved_nlist(n)}, nprobe {v.resolved_nprobe(n)}" if v.kind == "ivf" else \
                f"{codes}M {v.hnsw_m}, efConstruction {v.ef_construction}, efSearch {v.ef_search}"
            print(f"  {v.kind:4s} ({extra}): build {build_s:.1f} s, query {query_s:.3f} s = "
                  f"{query_s / exact_s:.4f}× exact (target ≤ 0.1×), recall@{k} {recall(a_sims, a_idx):.4f} "
                  "(target ≥ 0.99)", flush=True)
        del built, index
    print(f"  peak RSS of this process: {_peak() / 2**30:.2f} GiB", flush=True)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if args.no_float16:
        return
    half = pool.astype(np.float16)
    del pool
    start = time.perf_counter()
    (h_sims, h_idx), = exact_search(queries, ArrayBlocks(half), k, shard_rows=262_144)
    print(f"  exact over a float16 pool ({half.nbytes / 2**30:.2f} GiB): {time.perf_counter() - start:.2f} s, "
          f"recall@{k} vs float32 {recall(h_sims, h_idx):.4f}, max |Δ similarity| "
          f"{float(np.abs(h_sims - e_sims).max()):.2e}")


# --- ray ----------------------------------------------------------------------------------------------------

def bench_ray(args: argparse.Namespace) -> None:
    import numpy as np
    import ray

    from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache
    from deft_aoi.mining.embedders.builtin import BuiltinEmbedder
    from deft_aoi.mining.ray_exec import RayEmbedding
    from mining_speed import synthetic_pairs  # bench/ is sys.path[0] when a bench script runs

    tmp = Path(tempfile.mkdtemp(prefix="deft_bench_ray_", dir="/tmp"))
    try:
        inputs, goldens = synthetic_pairs(tmp, args.pairs, size=64, ext=".png")
        emb = BuiltinEmbedder()
        print(f"[ray] {args.pairs:,} pairs (64 px PNG), built-in encoder, {os.cpu_count()} CPU(s)")
        start = time.perf_counter()
        ref, _ = embed_with_cache(inputs, goldens, emb, EmbeddingCache(tmp / "c0", emb.fingerprint))
        base_s = time.perf_counter() - start
        print(f"  in-process: {base_s:.1f} s = {args.pairs / base_s:,.0f} pairs/s")
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        init_s = time.perf_counter() - start
        print(f"  ray.init (local, 2 CPUs): {init_s:.1f} s")
        for workers in (1, 2):
            cache = EmbeddingCache(tmp / f"c{workers}", emb.fingerprint)
            start = time.perf_counter()
            got, stats = embed_with_cache(inputs, goldens, emb, cache,
                                          embed_missing=RayEmbedding("builtin", cache, workers=workers).embed_missing)
            dt = time.perf_counter() - start
            print(f"  ray, {workers} actor(s): {dt:.1f} s = {args.pairs / dt:,.0f} pairs/s, ratio to in-process "
                  f"{base_s / dt:.2f}× (+ init {base_s / (dt + init_s):.2f}×); identical: "
                  f"{bool(np.array_equal(got, ref))}; embedded {stats.embedded}")
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--knn-child":
        mode, path, rows, t, budget, out = sys.argv[2:8]
        knn_child(mode, path, int(rows), int(t), int(budget), out)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    k = sub.add_parser("knn")
    k.add_argument("--rows", type=int, default=5_000_000)
    k.add_argument("--budget", default="2G")
    k.add_argument("--targets", type=int, default=200)
    k.add_argument("--compare-rows", type=int, default=0)
    a = sub.add_parser("ann")
    a.add_argument("--rows", type=int, default=1_000_000)
    a.add_argument("--targets", type=int, default=1000)
    a.add_argument("--hnsw-max-rows", type=int, default=100_000,
                   help="HNSW builds at ~200 rows/s on this loaded 2-core box: skipped above this pool size")
    a.add_argument("--nprobe", type=int, nargs="*", default=[16, 32],
                   help="further IVF nprobe values searched on the same index, besides the default")
    a.add_argument("--no-float16", action="store_true", help="skip the exact-over-float16 measurement")
    a.add_argument("--stream", action="store_true",
                   help="pool on disk: exact = sharded streamed search, IVF over float16 codes built block by block")
    a.add_argument("--float32-index", action="store_true", help="with --stream: IVF-Flat instead of float16 codes")
    r = sub.add_parser("ray")
    r.add_argument("--pairs", type=int, default=20_000)
    args = ap.parse_args()
    {"knn": bench_knn, "ann": bench_ann, "ray": bench_ray}[args.what](args)


if __name__ == "__main__":
    main()
