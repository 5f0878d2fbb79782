"""Encoder throughput against the raw decode of the same images, in one run (issue 29).

On the same image pairs (deeppcb-dev's test/golden crops by default, or a generated demo workspace), each
arm embeds every pair through the same threaded chunking the encoders use (base.embed_chunks_threaded):

  decode       decode both images of a pair to RGB uint8 arrays with PIL, nothing else: the floor any
               encoder of these images pays
  shape        the change-shape encoder (`--encoder shape`)
  shape-torch  the same encoder with its features from the local model's torch code (the code it ran
               before the numpy features; `--no-torch` skips it)
  builtin      the built-in pair-difference encoder (`--encoder builtin`)

Arms run in turns (decode, shape, builtin, decode, …) over `--rounds` rounds, so drift of a shared
machine's load falls on every arm alike; a round's ratios are taken within the round and the median over
rounds is quoted. Both wall time and this process's CPU time are printed: on a loaded box wall time
measures the neighbours, CPU time mostly the work. The target is each encoder within 1.5× of decode.

Usage: python bench/encoder_speed.py [--pairs 20000] [--rounds 3] [--workers N] [--demo DIR] [--no-torch]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deft_aoi.mining.embedders.base import embed_chunks_threaded
from deft_aoi.mining.embedders.builtin import BuiltinEmbedder
from deft_aoi.mining.embedders.shape import SIZE, ShapeEmbedder, embed_features

DEEPPCB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeppcb-dev"
CHUNK = 64


def find_pairs(root: Path) -> list[tuple[str, str]]:
    """Every `<dir>/test/<name>` image with a `<dir>/golden/<name>` partner under root (deeppcb-dev and the
    demo workspace both store crops that way)."""
    pairs = []
    for test in sorted(glob.glob(str(root / "**" / "test" / "*.*"), recursive=True)):
        golden = test.replace("/test/", "/golden/")
        if os.path.isfile(golden):
            pairs.append((test, golden))
    return pairs


def decode_chunk(pairs: list[tuple[str, str | None]]) -> np.ndarray:
    from PIL import Image

    for test, golden in pairs:
        for path in (test, golden or test):
            with Image.open(path) as image:
                np.asarray(image.convert("RGB"))
    return np.zeros((len(pairs), 1), dtype=np.float32)


def torch_shape_chunk(pairs: list[tuple[str, str | None]]) -> np.ndarray:
    """The change-shape encoder as it was: the same decode and registration, features by the model's torch code."""
    import torch

    from deft_aoi.runners.local.data import ALIGN_MAX_SHIFT_PX, align_goldens, decode_image
    from deft_aoi.runners.local.model import change_shape, out_of_tolerance, to_input

    size = (SIZE, SIZE)
    stacked = np.stack([np.stack([decode_image(i, size), decode_image(g or i, size)]) for i, g in pairs])
    align_goldens(stacked, ALIGN_MAX_SHIFT_PX)
    with torch.no_grad():
        batch = to_input(stacked, torch.device("cpu"))
        shape = change_shape(out_of_tolerance(batch), batch[:, 1]).numpy()
    return embed_features(shape)


def timed(run: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs per arm and round (images repeat)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--demo", type=Path, help="a demo workspace (deft demo-data) instead of deeppcb-dev")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch-features arm")
    args = parser.parse_args(argv)

    root = args.demo or DEEPPCB
    found = find_pairs(root)
    if not found:
        raise SystemExit(f"no test/golden image pairs under {root}")
    chosen = [found[k % len(found)] for k in range(args.pairs)]
    inputs = [t for t, _ in chosen]
    goldens: list[str | None] = [g for _, g in chosen]
    shape, builtin = ShapeEmbedder(workers=args.workers), BuiltinEmbedder(workers=args.workers)

    def threaded(chunk: Callable[[list[tuple[str, str | None]]], np.ndarray]) -> Callable[[], object]:
        return lambda: embed_chunks_threaded(inputs, goldens, dim=1, chunk=CHUNK, workers=args.workers,
                                             embed_chunk=chunk)

    arms: dict[str, Callable[[], object]] = {
        "decode": threaded(decode_chunk),
        "shape": lambda: shape.embed(inputs, goldens),
        "builtin": lambda: builtin.embed(inputs, goldens),
    }
    if not args.no_torch:
        arms["shape-torch"] = threaded(torch_shape_chunk)
    # Warm-up: imports (torch), the page cache and the encoders' cached fingerprints, on a few pairs.
    warm = max(1, min(len(found), 256))
    embed_chunks_threaded(inputs[:warm], goldens[:warm], dim=1, chunk=CHUNK, workers=args.workers,
                          embed_chunk=decode_chunk)
    shape.embed(inputs[:warm], goldens[:warm])
    builtin.embed(inputs[:warm], goldens[:warm])
    if not args.no_torch:
        embed_chunks_threaded(inputs[:CHUNK], goldens[:CHUNK], dim=1, chunk=CHUNK, workers=1,
                              embed_chunk=torch_shape_chunk)

    print(f"{len(found)} distinct pairs under {root}, {args.pairs} per arm, {args.rounds} rounds, "
          f"{args.workers} threads, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    walls: dict[str, list[float]] = {name: [] for name in arms}
    cpus: dict[str, list[float]] = {name: [] for name in arms}
    for round_no in range(args.rounds):
        for name, run in arms.items():
            wall, cpu = timed(run)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"round {round_no + 1} {name:12s} {args.pairs / wall:8.0f} pairs/s wall "
                  f"({wall:6.1f} s), {args.pairs / cpu:8.0f} pairs per CPU-s", flush=True)

    print(f"\nmedian over {args.rounds} rounds (ratio = arm time / decode time in the same round; target ≤ 1.5×)")
    print(f"{'arm':12s} {'pairs/s wall':>13s} {'ratio wall':>11s} {'pairs/CPU-s':>12s} {'ratio CPU':>10s}")
    for name in arms:
        ratio_wall = statistics.median(w / d for w, d in zip(walls[name], walls["decode"], strict=True))
        ratio_cpu = statistics.median(c / d for c, d in zip(cpus[name], cpus["decode"], strict=True))
        print(f"{name:12s} {args.pairs / statistics.median(walls[name]):13.0f} {ratio_wall:10.2f}× "
              f"{args.pairs / statistics.median(cpus[name]):12.0f} {ratio_cpu:9.2f}×")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
