"""A pool's embedding matrix as one `.npy` file on disk, read back one shard at a time.

Used when the pool matrix should not live in memory (`--memory`): the search streams it through one
reused buffer with plain reads, not a memory map, because mapped pages count towards the process's
resident set and a 10 GiB scan through a map would look like 10 GiB of RSS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError

if TYPE_CHECKING:
    import numpy as np


class NpyBlocks:
    """`PoolBlocks` over a 2-D float16/float32 C-order `.npy` file: unit float32 rows, shard by shard."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(fh)
                self.offset = fh.tell()
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable pool matrix: {exc}", file=self.path) from exc
        if len(shape) != 2 or fortran or dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise InputError(f"pool matrix must be a 2-D C-order float16/float32 array, found {dtype} {shape}",
                             file=self.path)
        self.dtype = dtype
        self._shape = (int(shape[0]), int(shape[1]))

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as stored (a fresh array), for callers that want a few rows."""
        import numpy as np

        n, d = self._shape
        stop = min(stop, n)
        out = np.empty((max(stop - start, 0), d), dtype=self.dtype)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * d * self.dtype.itemsize)
            fh.readinto(out.data.cast("B"))
        return out

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        import numpy as np

        n, d = self._shape
        raw = np.empty((min(rows, n), d), dtype=self.dtype)
        f32 = raw if self.dtype == np.float32 else np.empty(raw.shape, dtype=np.float32)
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset)
            for start in range(0, n, rows):
                m = min(rows, n - start)
                view = raw[:m].data.cast("B")
                got = 0
                while got < len(view):
                    read = fh.readinto(view[got:])
                    if not read:
                        raise InputError(f"pool matrix truncated at row {start + got // (d * raw.itemsize)}",
                                         file=self.path)
                    got += read
                block = f32[:m]
                if block is not raw[:m]:
                    block[...] = raw[:m]
                norms = np.sqrt(np.einsum("ij,ij->i", block, block))
                if not np.all(np.abs(norms - 1) < 1e-3):
                    block /= np.maximum(norms, 1e-12)[:, None]
                yield start, block


class NpyWriter:
    """Writes rows of an (n, d) `.npy` file at any positions (pwrite), without holding the matrix."""

    def __init__(self, path: Path, n: int, dim: int, dtype: str = "float32") -> None:
        import numpy as np

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.dim = dim
        self.n = n
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(self._tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (n, dim)})
            self.offset = fh.tell()
            fh.truncate(self.offset + n * dim * self.dtype.itemsize)
        self._fd = os.open(self._tmp, os.O_WRONLY)

    def put(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write `values[i]` as row `rows[i]`; contiguous runs of rows go out in one call."""
        import numpy as np

        if len(rows) == 0:
            return
        order = np.argsort(rows, kind="stable")
        rows = np.asarray(rows)[order]
        values = np.ascontiguousarray(np.asarray(values)[order], dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        row_bytes = self.dim * self.dtype.itemsize
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            data = values[a:b].data.cast("B")
            pos = self.offset + int(rows[a]) * row_bytes
            while data:
                written = os.pwrite(self._fd, data, pos)
                data, pos = data[written:], pos + written

    def close(self) -> Path:
        """fsync and move into place atomically; returns the path."""
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)
