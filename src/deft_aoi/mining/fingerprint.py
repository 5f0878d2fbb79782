"""Embedding parquets: an `embedding` list<float32> column plus the encoder fingerprint in the parquet's
schema metadata, so a file always says which encoder produced it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.base import Fingerprint

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

META_KEY = b"deft.encoder_fingerprint"
EMBEDDING_COLUMN = "embedding"


def embedding_array(values: np.ndarray, *, dtype: str = "float32") -> pa.Array:
    """(n, d) → arrow fixed-size list of float32 (or float16), built without a Python loop."""
    import numpy as np
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=dtype)
    d = values.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), d)


def column_to_matrix(column: pa.ChunkedArray | pa.Array, *, file: str | Path = "<parquet>") -> np.ndarray:
    """An arrow list/fixed-size-list column of equal-length float vectors → (n, d) float32."""
    import numpy as np
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"'{EMBEDDING_COLUMN}' is empty in {column.null_count} row(s)", file=file, row=first + 2)
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
        flat = column.flatten()
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = column.value_lengths().to_numpy()
        d = int(lengths[0])
        if (lengths != d).any():
            bad = int(np.flatnonzero(lengths != d)[0])
            raise InputError(
                f"'{EMBEDDING_COLUMN}' vectors differ in length ({d} vs {int(lengths[bad])})", file=file, row=bad + 2
            )
        flat = column.flatten()
    else:
        raise InputError(f"'{EMBEDDING_COLUMN}' must be a list of floats, found {column.type}", file=file)
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, d)


def write_embedding_parquet(df: pd.DataFrame, embeddings: np.ndarray, fingerprint: Fingerprint, path: Path) -> None:
    """Write `df`'s columns + `embedding`, fingerprint in the schema metadata, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deft_aoi.io_utils import atomic_open

    table = pa.Table.from_pandas(df.drop(columns=[EMBEDDING_COLUMN], errors="ignore").reset_index(drop=True),
                                 preserve_index=False)
    table = table.append_column(EMBEDDING_COLUMN, embedding_array(embeddings))
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = fingerprint.to_json().encode("utf-8")
    table = table.replace_schema_metadata(meta)
    with atomic_open(path, "wb", encoding=None) as fh:
        pq.write_table(table, fh)


def read_fingerprint(schema_meta: dict[bytes, bytes] | None, dim: int, *, file: str | Path) -> Fingerprint:
    """The fingerprint stored in a parquet's metadata; `Fingerprint.unknown(dim)` when there is none."""
    raw = (schema_meta or {}).get(META_KEY)
    if raw is None:
        return Fingerprint.unknown(dim)
    try:
        fp = Fingerprint.from_json(raw)
    except ValueError as exc:
        raise InputError(f"unreadable encoder fingerprint in parquet metadata: {exc}", file=file) from exc
    if dim and fp.dim != dim:
        raise InputError(f"embedding dim {dim} does not match its fingerprint's dim {fp.dim}", file=file)
    return fp
