"""Source-pool embedding cache: parquet shards keyed by (pair content hash, encoder fingerprint).

Layout: `<cache_root>/<fingerprint.id>/fingerprint.json` + `shard_<ns>_<pid>.parquet` (columns `key`,
`embedding`). Each shard is written atomically once its rows are embedded, so a rerun embeds nothing,
an appended pool embeds only its new rows, and an interrupted run resumes after the last finished shard.
Keys hash file CONTENT (not paths): a moved workspace keeps its cache, a rewritten image is re-embedded.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.base import Embedder, Fingerprint

if TYPE_CHECKING:
    import numpy as np

DEFAULT_SHARD_SIZE = 4096
ProgressFn = Callable[[int, int], None]  # (rows embedded so far, rows to embed)


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

    def __init__(self, root: Path, fingerprint: Fingerprint, *, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.fingerprint = fingerprint
        self.dir = Path(root) / fingerprint.id
        self.shard_size = shard_size

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
        """(matrix (n, dim) with cached rows filled, found mask (n,)) for UNIQUE keys; one shard at a time."""
        import numpy as np
        import pandas as pd
        import pyarrow.parquet as pq

        from deft_aoi.mining.fingerprint import column_to_matrix

        dim = self.fingerprint.dim
        out = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        if not keys:
            return out, found
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
            hit = pos >= 0
            if not hit.any():
                continue
            emb = column_to_matrix(pq.read_table(shard, columns=["embedding"]).column("embedding"), file=shard)
            if emb.shape[1] != dim:
                raise InputError(f"cache shard holds dim {emb.shape[1]}, fingerprint says {dim}", file=shard)
            out[pos[hit]] = emb[hit]
            found[pos[hit]] = True
        return out, found

    def write_shard(self, keys: Sequence[str], embeddings: np.ndarray) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from deft_aoi.io_utils import atomic_open
        from deft_aoi.mining.fingerprint import embedding_array

        self._ensure_dir()
        table = pa.table({"key": pa.array(list(keys), pa.string()), "embedding": embedding_array(embeddings)})
        path = self.dir / f"shard_{time.time_ns():020d}_{os.getpid()}.parquet"
        with atomic_open(path, "wb", encoding=None) as fh:
            pq.write_table(table, fh)
        return path


def embed_with_cache(
    inputs: Sequence[str],
    goldens: Sequence[str | None],
    embedder: Embedder,
    cache: EmbeddingCache,
    *,
    keys: Sequence[str] | None = None,
    on_progress: ProgressFn | None = None,
) -> tuple[np.ndarray, CacheStats]:
    """Embeddings of every row, embedding only contents the cache does not hold, one shard at a time."""
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.embedders.base import require_same_fingerprint

    require_same_fingerprint(embedder.fingerprint, "embedder", cache.fingerprint, f"cache {cache.dir}")
    keys = list(keys) if keys is not None else pair_keys(inputs, goldens)
    codes, uniques = pd.factorize(pd.Index(keys))
    uniq_keys = list(uniques)
    _, first = np.unique(codes, return_index=True)  # a representative row per distinct content
    matrix, found = cache.lookup(uniq_keys)
    todo = np.flatnonzero(~found)
    done = 0
    if on_progress:
        on_progress(0, len(todo))
    for start in range(0, len(todo), cache.shard_size):
        part = todo[start : start + cache.shard_size]
        rows = first[part]
        emb = embedder.embed([inputs[r] for r in rows], [goldens[r] for r in rows])
        cache.write_shard([uniq_keys[j] for j in part], emb)
        matrix[part] = emb
        done += len(part)
        if on_progress:
            on_progress(done, len(todo))
    stats = CacheStats(requested=len(keys), unique=len(uniq_keys), cached=int(found.sum()), embedded=len(todo))
    out = matrix if len(uniq_keys) == len(keys) else matrix[codes]
    return out, stats
