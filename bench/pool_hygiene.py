"""Pre-flight at scale (issues 17, 29): `deft preflight` on a large workspace, cold and warm, against the cost of
hashing and decoding the same images alone, measured in the same run.

Builds a workspace of POOL distinct mining-pool pairs (listed REPEAT times in mining_pool.csv, as the issue's
10^6-row measurement repeated the dev pool), KPI KPI rows, VAL validation rows and 1,000 training rows, every
pair a distinct procedural 64×64 grayscale JPEG crop and golden, with 1 % of the KPI rows planted in the pool
(a third each: same key, same pixels under a new name, re-encoded at JPEG quality 60), plus deeppcb-dev's spec
and synthetic pairs so pre-flight is READY. Then, each in its own process (wall time and peak RSS from wait4):

- baseline: every distinct image file the CSVs reference read and sha256-hashed once, and decoded once (PIL,
  full decode), on 8 threads: the I/O floor of any pre-flight that must look at every image;
- cold: `deft preflight --json --mining-memory MEMORY` with no caches (.deft_cache removed);
- warm: the same command again (manifest, per-chunk vector and result caches in place).

Prints the ratios cold / baseline and warm / cold and checks the planted leaks are all found.

Usage: python bench/pool_hygiene.py [--pool 100000] [--repeat 1] [--kpi 8000] [--val 2000] [--memory 1G]
                                    [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEEPPCB = Path(__file__).resolve().parents[1].parent / "shared/data/deeppcb-dev"

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


def build(ws: Path, n_pool: int, n_kpi: int, n_val: int, repeat: int) -> dict[str, int]:
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
        text = "\n".join(lines) + "\n"
        with open(path, "w") as fh:
            fh.write(HEADER + "\n")
            for _ in range(repeat if path.name == "mining_pool.csv" else 1):
                fh.write(text)
    for part in ("specs", "augmentation/anomalygen"):  # the real spec and synthetic pairs: a READY workspace
        shutil.copytree(DEEPPCB / part, ws / part)
    for p in ws.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return {k: v * repeat for k, v in planted.items()}


def _images(ws: Path) -> list[str]:
    """Every distinct image file the workspace's CSVs reference (read in chunks: the pool may be huge)."""
    import pandas as pd

    paths: set[str] = set()
    for csv, root in ((ws / "kpi/testing_set.csv", ws / "kpi/images"), (ws / "train/base/validation_set.csv",
                      ws / "kpi/images"), (ws / "train/base/training_set.csv", ws / "kpi/images"),
                      (ws / "augmentation/mining_pool/mining_pool.csv", ws / "augmentation/mining_pool")):
        for df in pd.read_csv(csv, dtype=str, keep_default_na=False, chunksize=200_000):
            for col in ("input_path", "golden_path"):
                paths.update((f"{root}/" + df[col] + "/" + df["object_name"] + f"_{LIGHT}.jpg").tolist())
    return sorted(paths)


def baseline(ws: Path) -> None:
    """Hash and decode every referenced image once (the child process of the baseline phase)."""
    import hashlib

    from PIL import Image

    def one(path: str) -> None:
        with open(path, "rb") as fh:
            hashlib.sha256(fh.read()).digest()
        with Image.open(path) as img:
            img.load()

    paths = _images(ws)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, paths, chunksize=256))
    print(json.dumps({"images": len(paths), "work_s": time.perf_counter() - start}))


def _child(args: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """(wall s, peak RSS MiB, stdout, CPU s) of one child process. On a shared, loaded machine the CPU
    seconds (user + system, all threads) are the steadier measure of the work: wall time also counts the
    time the neighbours held the cores."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, out, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kpi", type=int, default=8_000)
    parser.add_argument("--val", type=int, default=2_000)
    parser.add_argument("--memory", default="1G", help="--mining-memory of the pre-flight runs")
    parser.add_argument("--keep", type=Path, default=None,
                        help="build the workspace here and keep it; a workspace kept earlier is reused")
    parser.add_argument("--phase", choices=["baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "baseline":
        baseline(args.keep)
        return

    tmp = None if args.keep else tempfile.mkdtemp(prefix="deft_bench_hygiene_")
    ws = args.keep or Path(tmp)  # type: ignore[arg-type]
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "NO_COLOR": "1"}
    try:
        start = time.perf_counter()
        if (ws / "planted.json").is_file():
            planted = json.loads((ws / "planted.json").read_text())
            print(f"reusing {ws} (planted {planted})")
        else:
            planted = build(ws, args.pool, args.kpi, args.val, args.repeat)
            (ws / "planted.json").write_text(json.dumps(planted))
            print(f"built {args.pool:,} distinct pool pairs × {args.repeat} = {args.pool * args.repeat:,} pool rows, "
                  f"{args.kpi:,} KPI + {args.val:,} validation + 1,000 training pairs "
                  f"({2 * (args.pool + args.kpi + args.val + 1000):,} images) in {time.perf_counter() - start:.0f} s;"
                  f" planted {planted}")
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        base_wall, rss, out, base_cpu = _child([sys.executable, __file__, "--phase", "baseline", "--keep", str(ws)],
                                               env)
        base = json.loads(out)
        print(f"baseline: hash + decode {base['images']:,} distinct images: {base_wall:.1f} s wall "
              f"({base['work_s']:.1f} s of work), {base_cpu:.1f} s CPU, peak RSS {rss:.0f} MiB")
        runs: dict[str, tuple[float, float, float]] = {}
        shutil.rmtree(ws / ".deft_cache", ignore_errors=True)  # the first pass is cold
        for name in ("cold", "warm"):
            wall, rss, out, cpu = _child([sys.executable, "-m", "deft_aoi.cli", "preflight", "-w", str(ws),
                                          "--json", "--mining-memory", args.memory], env)
            doc = json.loads(out)
            hyg = doc["pool_hygiene"]
            runs[name] = (wall, rss, cpu)
            counts = hyg["counts"]["mining_pool"]
            print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB, ready={doc['ready']}; hygiene "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in hyg["timings_s"].items())
                  + f"; hashed {hyg['hashed_now']:,} files, embedded {hyg['embedded_now']:,} pairs, "
                  f"{hyg['from_cache']:,} from cache; found in pool {counts}")
            assert counts == planted, (counts, planted)
        cold, warm = runs["cold"][0], runs["warm"][0]
        print(f"cold / baseline = {cold / base_wall:.2f} wall, {runs['cold'][2] / base_cpu:.2f} CPU; "
              f"warm / cold = {warm / cold:.2f} wall, {runs['warm'][2] / runs['cold'][2]:.2f} CPU; "
              f"peak RSS cold {runs['cold'][1]:.0f} MiB, warm {runs['warm'][1]:.0f} MiB; "
              f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
