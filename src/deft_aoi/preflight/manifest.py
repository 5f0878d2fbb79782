"""The image manifest of pre-flight: sha256 per image file, trusted while its size, mtime and inode are unchanged.

A rerun on an unchanged pool stats every distinct image once and reads none (`digest_file` and `read_image`,
which also decodes what it hashes, are the only readers). The
manifest is five numpy columns (a 64-bit hash of the absolute path, size, mtime_ns, inode, the raw 32-byte
digest) sorted by the path hash, in one `.npz` written atomically: 56 bytes per image, so a 10^6-row pool
(≈ 3·10^6 images) costs ≈ 170 MB in memory instead of the ≈ 1 GB a path-keyed dict of strings would. A path
hash collision cannot hand out a wrong digest unless size, mtime and inode collide too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from deft_aoi.imaging import MAX_PIXELS, to_8bit
from deft_aoi.io_utils import atomic_open, refuse_special_file, sha256_file

if TYPE_CHECKING:
    import numpy as np

_HASH_KEY = "deft-manifest-01"  # pandas' siphash key: 16 bytes, fixed so the path hashes are stable
_COLUMNS = ("key", "size", "mtime", "inode", "digest")
# Runs the hashing of a batch of paths somewhere (threads here, or the mining executor's Ray tasks).
HashMap = Callable[[Callable[[Any], list[Any]], list[Any]], list[list[Any]]]
T = TypeVar("T")


def digest_file(path: str) -> str | None:
    """sha256 of one image, None when unreadable. With `read_image`, the only places pre-flight reads image
    bytes to hash them (a test counts their calls to prove a warm run reads none)."""
    try:
        return sha256_file(Path(path))
    except (OSError, ValueError):
        return None


def read_image(path: str, size: int) -> tuple[str | None, np.ndarray | None]:
    """One read of an image file: its sha256 and its size×size grayscale decode (uint8), exactly as the
    pixel-pair encoder decodes it (`embedders.builtin.load_gray`: JPEG draft, 8-bit, L, box resize), so a
    cold pre-flight reads each pool image once, not once to hash and once to embed. Pixels are None when
    the bytes do not decode (the encoder then reads the file itself and reports why); (None, None) when
    unreadable."""
    import hashlib
    import io

    import numpy as np
    from PIL import Image

    try:
        refuse_special_file(Path(path))
        with open(path, "rb") as fh:
            data = fh.read()
    except (OSError, ValueError):
        return None, None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                return digest, None
            im.draft("L", (size, size))
            gray = to_8bit(im).convert("L")
            if gray.size != (size, size):
                gray = gray.resize((size, size), Image.Resampling.BOX)
            return digest, np.asarray(gray, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return digest, None


def _threaded(fn: Callable[[str], T], paths: list[str]) -> list[T]:
    """fn over paths on 8 threads in contiguous slices (one task per slice, not per file: a future per
    image costs more than hashing a small crop). Reads, hashlib and PIL decoding release the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    if len(paths) < 64:
        return [fn(p) for p in paths]
    step = -(-len(paths) // 32)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = pool.map(lambda s: [fn(p) for p in paths[s : s + step]], range(0, len(paths), step))
        return [r for part in parts for r in part]


def hash_batch(paths: list[str]) -> list[str | None]:
    """Hex digests of a batch of files, on threads."""
    return _threaded(digest_file, paths)


def hash_decode_batch(part: tuple[list[str], int]) -> list[tuple[str | None, np.ndarray | None]]:
    """(digest, grayscale) of a batch of files from one read each (`read_image`), on threads."""
    paths, size = part
    return _threaded(lambda p: read_image(p, size), paths)


def path_keys(paths: Sequence[str]) -> np.ndarray:
    import numpy as np
    import pandas as pd

    return pd.util.hash_array(np.asarray(paths, dtype=object), hash_key=_HASH_KEY)


def _stat_all(paths: list[str]) -> np.ndarray:
    """(n, 3) int64 of size, mtime_ns, inode; -1 rows for files that cannot be stat'ed."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def one(path: str) -> tuple[int, int, int]:
        try:
            st = os.stat(path)
        except OSError:
            return (-1, -1, -1)
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    if len(paths) < 2000:
        rows = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=8) as pool:
            rows = list(pool.map(one, paths, chunksize=512))
    return np.asarray(rows, dtype=np.int64).reshape(len(paths), 3)


class ImageManifest:
    """Digests by (path, size, mtime, inode), loaded from and saved to one file (None: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        import numpy as np

        self.path = path
        self._cols = {c: np.zeros(0, dtype=np.uint64 if c == "key" else np.int64) for c in _COLUMNS}
        # Raw digests as (n, 32) uint8: numpy's "S32" strings would drop a digest's trailing zero bytes.
        self._cols["digest"] = np.zeros((0, 32), dtype=np.uint8)
        self._new: list[dict[str, np.ndarray]] = []
        self.decoded: dict[str, np.ndarray] = {}
        self._checked = np.zeros(0, dtype=np.uint64)  # path keys verified by stat in this run (sorted)
        self._dirty = False
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    loaded = {c: data[c] for c in _COLUMNS}
                if len({len(v) for v in loaded.values()}) == 1 and loaded["digest"].shape[1:] == (32,):
                    self._cols = loaded
            except (OSError, ValueError, KeyError):
                pass  # a manifest is disposable: a corrupt one is rebuilt, not an error

    def __len__(self) -> int:
        return len(self._cols["key"])

    def digests(self, paths: Sequence[str], hash_map: HashMap | None = None, *, batches: int = 1,
                pixels: int = 0) -> tuple[dict[str, str | None], int]:
        """{path: hex sha256 or None (unreadable)} for the distinct `paths`, and how many were read now.
        `hash_map` runs the hashing of the paths not in the manifest (default: in this process, on threads),
        split into `batches` parts. With `pixels`, every file read now is also decoded at pixels×pixels
        grayscale from the same read (`read_image`), left in `self.decoded` ({path: uint8 image}, this call's
        reads only) for the caller's encoder."""
        import numpy as np

        self.decoded = {}
        unique = list(dict.fromkeys(paths))
        if not unique:
            return {}, 0
        keys = path_keys(unique)
        known = self._cols["key"]
        pos = np.searchsorted(known, keys)
        pos_c = np.minimum(pos, max(len(known) - 1, 0))
        # A path stat'ed (and found or hashed) earlier in this run is not stat'ed again: a pool listing the
        # same images in many chunks costs one stat per distinct file.
        seen = np.isin(keys, self._checked)
        stats = np.empty((len(unique), 3), dtype=np.int64)
        stats[seen] = np.stack([self._cols[c][pos_c[seen]] for c in ("size", "mtime", "inode")], axis=1)
        stats[~seen] = _stat_all([unique[j] for j in np.flatnonzero(~seen)])
        hit = np.zeros(len(unique), dtype=bool)
        if len(known):
            hit = ((known[pos_c] == keys) & (self._cols["size"][pos_c] == stats[:, 0])
                   & (self._cols["mtime"][pos_c] == stats[:, 1]) & (self._cols["inode"][pos_c] == stats[:, 2]))
        hit &= stats[:, 0] >= 0
        out: dict[str, str | None] = {}
        found = self._cols["digest"][pos_c[hit]]
        for j, raw in zip(np.flatnonzero(hit), found, strict=True):
            out[unique[j]] = raw.tobytes().hex()
        todo = [j for j in np.flatnonzero(~hit) if stats[j, 0] >= 0]
        checked = [keys[hit]]
        for j in np.flatnonzero(stats[:, 0] < 0):
            out[unique[j]] = None
        if todo:
            miss = [unique[j] for j in todo]
            size = -(-len(miss) // max(batches, 1))
            parts = [miss[s : s + size] for s in range(0, len(miss), size)]
            if pixels:
                read = [r for part in (hash_map or _local_map)(hash_decode_batch, [(p, pixels) for p in parts])
                        for r in part]
                hashed = [d for d, _ in read]
                self.decoded = {path: gray for path, (_, gray) in zip(miss, read, strict=True) if gray is not None}
            else:
                hashed = [d for part in (hash_map or _local_map)(hash_batch, parts) for d in part]
            ok = [i for i, d in enumerate(hashed) if d is not None]
            for path, digest in zip(miss, hashed, strict=True):
                out[path] = digest
            if ok:
                rows = np.asarray([todo[i] for i in ok])
                checked.append(keys[rows])
                self._new.append({"key": keys[rows], "size": stats[rows, 0], "mtime": stats[rows, 1],
                                  "inode": stats[rows, 2],
                                  "digest": np.frombuffer(b"".join(bytes.fromhex(hashed[i] or "") for i in ok),
                                                          dtype=np.uint8).reshape(len(ok), 32)})
                self._merge()
        self._checked = np.union1d(self._checked, np.concatenate(checked))
        return out, len(todo)

    def _merge(self) -> None:
        """Fold what was hashed into the sorted columns (a newer entry replaces an older one), so a path met
        again in a later chunk of the same run is found, not re-read."""
        import numpy as np

        if not self._new:
            return
        cols = {c: np.concatenate([self._cols[c], *(n[c] for n in self._new)]) for c in _COLUMNS}
        # Stable sort by key; of equal keys keep the LAST (newest) entry.
        order = np.argsort(cols["key"], kind="stable")
        keys = cols["key"][order]
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = keys[:-1] != keys[1:]
        self._cols = {c: v[order][last] for c, v in cols.items()}
        self._new = []
        self._dirty = True

    def save(self) -> None:
        """Write the manifest atomically when anything was hashed since it was loaded."""
        import numpy as np


        self._merge()
        if not self._dirty or self.path is None:
            return
        with atomic_open(self.path, "wb") as fh:
            np.savez(fh, key=self._cols["key"], size=self._cols["size"], mtime=self._cols["mtime"],
                     inode=self._cols["inode"], digest=self._cols["digest"])
        self._dirty = False


def _local_map(fn: Callable[[Any], list[Any]], parts: list[Any]) -> list[list[Any]]:
    return [fn(part) for part in parts]
