"""How pre-flight streams the mining pool: chunk size from the mining memory budget, work on the mining executor.

The pool CSV is read `chunk_rows` rows at a time (`workspace.changenet_csv.iter_changenet_csv`) and every
chunk is validated, hashed, embedded and matched before the next is read, so memory is bounded by one chunk
plus the (small) reference sets whatever the pool's size. A chunk's resident cost is dominated by its
pixel-pair vectors (2 × 32 × 32 float32 = 8 KiB per row) and their decode/pooling temporaries:
BYTES_PER_ROW covers both with the frame and path strings (measured: ≈ 17 KiB/row of RSS growth per
chunk row in bench/pool_hygiene.py runs), so `--mining-memory 1G` gives ≈ 32k-row chunks.

Hashing and decoding run on the mining executor (`--mining-executor`): `inprocess` threads, or Ray tasks
(RAY_ADDRESS or a local Ray, as mining's `ray_exec`), each chunk split into one part per Ray CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from deft_aoi.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

BYTES_PER_ROW = 32 * 1024  # ≈ 2× the measured 17 KiB: headroom for pandas copies during the matching
MIN_CHUNK_ROWS = 1024
MAX_CHUNK_ROWS = 131_072  # beyond this a chunk only adds latency before the first result, no throughput
DEFAULT_BUDGET_SHARE = 16  # the default budget: this share of physical memory…
DEFAULT_BUDGET_CAP = 2 * 2**30  # …at most 2 GiB, at least 256 MiB
DEFAULT_BUDGET_FLOOR = 256 * 2**20

T = TypeVar("T")
R = TypeVar("R")


def default_memory_budget() -> int:
    """Pre-flight's memory budget when `--mining-memory` is not given: 1/16 of physical memory, in [256M, 2G]
    (a 24 GB box: 1.5 GiB), so it coexists with other jobs on a shared machine."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(DEFAULT_BUDGET_CAP, max(DEFAULT_BUDGET_FLOOR, total // DEFAULT_BUDGET_SHARE)))


def chunk_rows_for_budget(memory_bytes: int | None) -> int:
    """Pool rows per chunk that fit the budget (the default budget when None)."""
    budget = memory_bytes if memory_bytes is not None else default_memory_budget()
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, budget // BYTES_PER_ROW)))


class ChunkExecutor:
    """Runs a function over the parts of one chunk: in this process (threads inside the function), or as Ray
    tasks spread over the cluster. `parts` says how many pieces a chunk is cut into."""

    def __init__(self, kind: str = "inprocess", *, workers: int | None = None) -> None:
        if kind not in ("inprocess", "ray"):
            raise UsageError(f"unknown mining executor {kind!r}", hint="use inprocess or ray")
        self.kind = kind
        self._ray: Any = None
        self._started_here = False
        self.parts = 1
        if kind == "ray":
            from deft_aoi.mining.ray_exec import _import_ray, _init_ray

            ray = _import_ray()
            self._started_here = not ray.is_initialized()
            if self._started_here:
                _init_ray(ray, workers)
            self._ray = ray
            self.parts = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[T], R], parts: list[T]) -> list[R]:
        if self._ray is None or len(parts) <= 1:
            return [fn(p) for p in parts]
        remote = self._ray.remote(fn)
        return list(self._ray.get([remote.remote(p) for p in parts]))

    def close(self) -> None:
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray = None

    def __enter__(self) -> ChunkExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_pairs(executor: ChunkExecutor, inputs: list[str], goldens: list[str],
                decoded: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Pixel-pair vectors of the pairs (rows in order). Pairs whose two images are in `decoded` (SIZE×SIZE
    uint8, decoded while hashing: `manifest.read_image`) are encoded from those pixels, here; the rest are
    decoded on the executor."""
    import numpy as np

    from deft_aoi.mining.embedders.pixels import PixelPairEmbedder, side_vectors

    dim = PixelPairEmbedder().fingerprint.dim
    out = np.zeros((len(inputs), dim), np.float32)
    known = decoded or {}
    have = np.fromiter((i in known and g in known for i, g in zip(inputs, goldens, strict=True)), bool,
                       count=len(inputs))
    if have.any():
        rows = np.flatnonzero(have)
        # The encoder's arithmetic (`PixelPairEmbedder._embed_chunk`) on the same pixels: identical vectors.
        x = side_vectors(np.stack([known[inputs[j]] for j in rows]).astype(np.float32) / 255.0)
        g = side_vectors(np.stack([known[goldens[j]] for j in rows]).astype(np.float32) / 255.0)
        out[rows] = (np.concatenate([x, g], axis=1) / np.float32(np.sqrt(2.0))).astype(np.float32)
    rest = np.flatnonzero(~have)
    if len(rest):
        r_in, r_gold = [inputs[j] for j in rest], [goldens[j] for j in rest]
        size = -(-len(rest) // max(executor.parts, 1))
        parts = [(r_in[s : s + size], r_gold[s : s + size]) for s in range(0, len(rest), size)]
        out[rest] = np.concatenate(executor.map(_embed_part, parts))
    return out


def _embed_part(part: tuple[list[str], list[str]]) -> np.ndarray:
    from deft_aoi.mining.embedders.pixels import PixelPairEmbedder

    inputs, goldens = part
    # 8 threads like the hashing: PIL decoding releases the GIL and file reads wait on I/O.
    return PixelPairEmbedder(workers=8).embed(inputs, list(goldens))
