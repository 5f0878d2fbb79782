"""Source-pool embedding cache: parquet shards keyed by (pair content hash, encoder fingerprint).

Layout: `<cache_root>/<fingerprint.id>/fingerprint.json` + `shard_<ns>_<pid>.parquet` (columns `key`,
`embedding`). Each shard is written atomically once its rows are embedded, so a rerun embeds nothing,
an appended pool embeds only its new rows, and an interrupted run resumes after the last finished shard.
Keys hash file CONTENT (not paths): a moved workspace keeps its cache, a rewritten image is re-embedded.

`dtype="float16"` stores new shards (and returns the pool matrix) as float16: half the disk and memory;
cosine similarities move by ~1e-3 at most (see bench/RESULTS.md for the recall effect). Shards of either
dtype are read back alike, so switching the option never invalidates a cache.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

from deft_aoi.config import CacheDtype, choices
from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.base import Embedder, Fingerprint

if TYPE_CHECKING:
    import numpy as np

    from deft_aoi.mining.pool_file import NpyBlocks

DEFAULT_SHARD_SIZE = 4096
CACHE_DTYPES = choices(CacheDtype)  # the config owns the names
ProgressFn = Callable[[int, int], None]  # (rows embedded so far, rows to embed)
HitFn = Callable[["np.ndarray", "np.ndarray"], None]  # (positions among the looked-up keys, their rows)
# Embeds the (key, input, golden) rows the cache lacks and writes them as cache shards (e.g. on Ray).
MissingFn = Callable[[list[tuple[str, str, "str | None"]], ProgressFn | None], None]


def _file_digest(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).digest()
    except FileNotFoundError as exc:
        raise InputError("image not found", file=path) from exc
    except IsADirectoryError as exc:
        raise InputError("expected an image file, found a directory", file=path) from exc


def pair_keys(inputs: Sequence[str], goldens: Sequence[str | None], *, workers: int = 8) -> list[str]:
    """Content key of each (input, golden) pair: sha256 over both files' sha256 digests."""
    unique = list(dict.fromkeys([*inputs, *(g for g in goldens if g)]))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = dict(zip(unique, pool.map(_file_digest, unique, chunksize=256), strict=True))
    return [pair_key(digests[i], digests[g] if g else None) for i, g in zip(inputs, goldens, strict=True)]


def pair_key(input_digest: bytes, golden_digest: bytes | None) -> str:
    """Cache key of one pair from its files' raw sha256 digests (callers that hashed already reuse them)."""
    h = hashlib.sha256(input_digest)
    h.update(golden_digest if golden_digest is not None else b"-")
    return h.hexdigest()[:40]


@dataclass(frozen=True)
class CacheStats:
    requested: int  # rows asked for
    unique: int  # distinct pair contents among them
    cached: int  # distinct contents found in the cache
    embedded: int  # distinct contents embedded now


class EmbeddingCache:
    """The shards of ONE encoder fingerprint. Different encoders never share a directory."""

    def __init__(self, root: Path, fingerprint: Fingerprint, *, shard_size: int = DEFAULT_SHARD_SIZE,
                 dtype: str = "float32") -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
        self.fingerprint = fingerprint
        self.dir = Path(root) / fingerprint.id
        self.shard_size = shard_size
        self.dtype = dtype

    def shards(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        # Hidden names are atomic_open's temp files from an interrupted write: never finished shards.
        return sorted(p for p in self.dir.glob("shard_*.parquet") if not p.name.startswith("."))

    def _ensure_dir(self) -> None:
        from deft_aoi.io_utils import atomic_write_text

        marker = self.dir / "fingerprint.json"
        if not marker.exists():
            atomic_write_text(marker, self.fingerprint.to_json() + "\n")

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(matrix (n, dim) in the cache's dtype with cached rows filled, found mask (n,)) for UNIQUE keys."""
        import numpy as np

        out = np.zeros((len(keys), self.fingerprint.dim), dtype=self.dtype)

        def put(pos: np.ndarray, emb: np.ndarray) -> None:
            out[pos] = emb

        return out, self.scan(keys, put)

    def scan(self, keys: Sequence[str], on_hit: HitFn) -> np.ndarray:
        """Hand every cached row of the UNIQUE `keys` to `on_hit`, one shard at a time; the found mask."""
        import numpy as np
        import pandas as pd
        import pyarrow.parquet as pq

        from deft_aoi.mining.fingerprint import column_to_matrix

        dim = self.fingerprint.dim
        found = np.zeros(len(keys), dtype=bool)
        if not keys:
            return found
        index = pd.Index(keys)
        if not index.is_unique:
            raise ValueError("lookup needs unique keys")
        for shard in self.shards():
            try:
                table = pq.read_table(shard, columns=["key"])
            except (OSError, ValueError) as exc:
                raise InputError(f"unreadable embedding-cache shard: {exc}", file=shard,
                                 hint="delete the shard; its rows are re-embedded on the next run") from exc
            pos = index.get_indexer(table.column("key").to_numpy(zero_copy_only=False))
            hit = (pos >= 0) & ~found[np.maximum(pos, 0)]  # a key written twice (two racing runs) counts once
            if not hit.any():
                continue
            emb = column_to_matrix(pq.read_table(shard, columns=["embedding"]).column("embedding"), file=shard)
            if emb.shape[1] != dim:
                raise InputError(f"cache shard holds dim {emb.shape[1]}, fingerprint says {dim}", file=shard)
            on_hit(pos[hit], emb[hit])
            found[pos[hit]] = True
        return found

    def write_shard(self, keys: Sequence[str], embeddings: np.ndarray) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from deft_aoi.io_utils import atomic_open
        from deft_aoi.mining.fingerprint import embedding_array

        self._ensure_dir()
        table = pa.table({"key": pa.array(list(keys), pa.string()),
                          "embedding": embedding_array(embeddings, dtype=self.dtype)})
        path = self.dir / f"shard_{time.time_ns():020d}_{os.getpid()}.parquet"
        with atomic_open(path, "wb", encoding=None) as fh:
            pq.write_table(table, fh)
        return path


def _rows_of(codes: np.ndarray) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Maps (unique positions, their rows) to (pool rows, rows repeated): a content listed twice in the
    pool fills both of its rows."""
    import numpy as np

    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=int(codes.max()) + 1 if len(codes) else 0)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def expand(pos: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reps = counts[pos]
        starts = np.repeat(offsets[pos], reps)
        within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
        return order[starts + within], np.repeat(emb, reps, axis=0)

    return expand


# Without `spill` the matrix is always held in memory: callers that pass none get a plain array.
@overload
def embed_with_cache(
    inputs: Sequence[str], goldens: Sequence[str | None], embedder: Embedder, cache: EmbeddingCache, *,
    keys: Sequence[str] | None = None, on_progress: ProgressFn | None = None, spill: None = None,
    embed_missing: MissingFn | None = None,
) -> tuple[np.ndarray, CacheStats]: ...


@overload
def embed_with_cache(
    inputs: Sequence[str], goldens: Sequence[str | None], embedder: Embedder, cache: EmbeddingCache, *,
    keys: Sequence[str] | None = None, on_progress: ProgressFn | None = None, spill: Path | None = None,
    embed_missing: MissingFn | None = None,
) -> tuple[np.ndarray | NpyBlocks, CacheStats]: ...


def embed_with_cache(
    inputs: Sequence[str],
    goldens: Sequence[str | None],
    embedder: Embedder,
    cache: EmbeddingCache,
    *,
    keys: Sequence[str] | None = None,
    on_progress: ProgressFn | None = None,
    spill: Path | None = None,
    embed_missing: MissingFn | None = None,
) -> tuple[np.ndarray | NpyBlocks, CacheStats]:
    """Embeddings of every row, embedding only contents the cache does not hold, one shard at a time.

    `spill`: write the pool's matrix (row order, cache dtype) to this `.npy` instead of holding it, and
    return it as `NpyBlocks`; an existing `spill` is complete by construction (moved into place only when
    whole) and is returned as is. `embed_missing`: embed the missing rows elsewhere (e.g. Ray actors that
    write the cache shards themselves); they are then read back from the cache."""
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.embedders.base import require_same_fingerprint
    from deft_aoi.mining.pool_file import NpyBlocks, NpyWriter

    require_same_fingerprint(embedder.fingerprint, "embedder", cache.fingerprint, f"cache {cache.dir}")
    keys = list(keys) if keys is not None else pair_keys(inputs, goldens)
    codes, uniques = pd.factorize(pd.Index(keys))
    uniq_keys = list(uniques)
    if spill is not None and Path(spill).is_file():
        return NpyBlocks(spill), CacheStats(requested=len(keys), unique=len(uniq_keys), cached=len(uniq_keys),
                                            embedded=0)
    _, first = np.unique(codes, return_index=True)  # a representative row per distinct content
    writer = NpyWriter(spill, len(keys), cache.fingerprint.dim, cache.dtype) if spill is not None else None
    matrix = None if writer else np.zeros((len(uniq_keys), cache.fingerprint.dim), dtype=cache.dtype)
    expand = _rows_of(codes) if writer else None

    def put(pos: np.ndarray, emb: np.ndarray) -> None:
        if writer is not None and expand is not None:
            writer.put(*expand(pos, emb))
        elif matrix is not None:
            matrix[pos] = emb

    try:
        found = cache.scan(uniq_keys, put)
        todo = np.flatnonzero(~found)
        if embed_missing is not None and len(todo):
            embed_missing([(uniq_keys[j], inputs[first[j]], goldens[first[j]]) for j in todo], on_progress)
            sub = cache.scan([uniq_keys[j] for j in todo], lambda p, e: put(todo[p], e))
            if not sub.all():
                raise RuntimeError(f"{int((~sub).sum())} row(s) still missing from the cache after embedding")
        else:
            _embed_locally(todo, first, uniq_keys, inputs, goldens, embedder, cache, put, on_progress)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    stats = CacheStats(requested=len(keys), unique=len(uniq_keys), cached=int(found.sum()), embedded=len(todo))
    if writer is not None:
        return NpyBlocks(writer.close()), stats
    assert matrix is not None
    out = matrix if len(uniq_keys) == len(keys) else matrix[codes]
    return out, stats


def _embed_locally(
    todo: np.ndarray,
    first: np.ndarray,
    uniq_keys: list[str],
    inputs: Sequence[str],
    goldens: Sequence[str | None],
    embedder: Embedder,
    cache: EmbeddingCache,
    put: HitFn,
    on_progress: ProgressFn | None,
) -> None:
    done = 0
    if on_progress:
        on_progress(0, len(todo))
    for start in range(0, len(todo), cache.shard_size):
        part = todo[start : start + cache.shard_size]
        rows = first[part]
        emb = embedder.embed([inputs[r] for r in rows], [goldens[r] for r in rows])
        cache.write_shard([uniq_keys[j] for j in part], emb)
        put(part, emb)
        done += len(part)
        if on_progress:
            on_progress(done, len(todo))
