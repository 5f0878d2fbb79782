"""Pairs of (input, golden) images for the local backend, decoded once and kept in memory.

TAO reads `{images_dir}/{input_path}/{object_name}_{light}{image_ext}` per light; we resolve paths the
same way (`image_paths`), stack the lights as channels, and downscale to at most INTERNAL_MAX_SIDE px
so a CPU epoch of a few hundred rows stays within seconds. Decoded pixels live in a process-wide cache keyed by file
identity, so epochs never re-decode and the two inferences after a train reuse the KPI images.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError
from deft_aoi.workspace.changenet_csv import PASS_LABEL

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.runners.local.argv import DatasetRef

# The network is a stand-in for a ViT at 224 px; 64 px keeps 2 CPU cores near 3 s per 300-row epoch
# (≈110 pairs/s) while small defects (a few px at 128) still span a pixel or two. At 128 px the
# multi-scale model was 4× slower and, on deeppcb-dev, no better at FAR@recall100.
INTERNAL_MAX_SIDE = 64
CHANNELS_PER_LIGHT = 3
DEFAULT_CACHE_MB = 2048
CACHE_ENV = "DEFT_LOCAL_CACHE_MB"


def internal_size(width: int, height: int, max_side: int = INTERNAL_MAX_SIDE) -> tuple[int, int]:
    """(width, height) the network sees: the spec size scaled down (aspect kept) to fit max_side."""
    scale = min(1.0, max_side / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def labels_to_targets(labels: pd.Series) -> np.ndarray:
    """PASS → 0, any other label → 1 (TAO's class-0 sentinel; labels are normalised on read)."""
    import numpy as np

    return (labels.astype(str).to_numpy() != PASS_LABEL).astype(np.int64)


@dataclass(frozen=True)
class PairTable:
    """The rows of one CSV and, per row, the image path of each (side, light): paths[row, side, light]
    with side 0 = input (test) and 1 = golden."""

    csv_path: Path
    rows: pd.DataFrame
    targets: np.ndarray
    paths: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def load_pairs(ref: DatasetRef, lights: Sequence[str], image_ext: str) -> PairTable:
    """Read the CSV and resolve every image; a missing image is an InputError naming the file and row."""
    import numpy as np

    from deft_aoi.workspace.changenet_csv import find_missing_images, image_paths, read_changenet_csv

    df = read_changenet_csv(ref.csv_path)
    table = image_paths(df, ref.images_dir, lights, image_ext)
    missing = find_missing_images(table["path"].tolist())
    if missing:
        first = table.loc[table["path"] == missing[0]].iloc[0]
        raise InputError(
            f"{len(missing)} image(s) not found; first: {missing[0]} ({first['side']}, light {first['light']})",
            file=ref.csv_path,
            row=int(first["row"]) + 2,
            hint=f"images resolve as {{images_dir}}/{{input_path}}/{{object_name}}_{{light}}{image_ext} "
            f"with images_dir = {ref.images_dir}",
        )
    paths = np.empty((len(df), 2, len(lights)), dtype=object)
    for side_index, side in enumerate(("input", "golden")):
        for light_index, light in enumerate(lights):
            part = table[(table["side"] == side) & (table["light"] == light)]
            paths[part["row"].to_numpy(), side_index, light_index] = part["path"].to_numpy()
    return PairTable(csv_path=Path(ref.csv_path), rows=df, targets=labels_to_targets(df["label"]), paths=paths)


def decode_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 (3, H, W) at `size` = (width, height); corrupt files name the path."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from deft_aoi.imaging import open_image, to_8bit

    try:
        with open_image(path) as image:
            # JPEG can decode straight at 1/2, 1/4, 1/8 scale: far cheaper than decoding then resizing.
            image.draft("RGB", size)
            rgb = to_8bit(image).convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            array = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot decode image: {exc}", file=path) from exc
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class DecodedCache:
    """Process-wide LRU of decoded images, bounded in bytes. Keys carry mtime and size, so an image
    rewritten on disk is decoded afresh."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[tuple[str, int, int, int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(path: str, size: tuple[int, int]) -> tuple[str, int, int, int, int]:
        stat = os.stat(path)
        return path, stat.st_mtime_ns, stat.st_size, size[0], size[1]

    def get(self, path: str, size: tuple[int, int]) -> np.ndarray:
        try:
            key = self.key(path, size)
        except OSError as exc:
            raise InputError("image not found", file=path) from exc
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
        array = decode_image(path, size)
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = array
                self._bytes += array.nbytes
            while self._bytes > self.budget_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return array

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def cache_budget_bytes() -> int:
    try:
        return max(0, int(os.environ.get(CACHE_ENV, DEFAULT_CACHE_MB))) << 20
    except ValueError:
        return DEFAULT_CACHE_MB << 20


_CACHE: DecodedCache | None = None


def shared_cache() -> DecodedCache:
    global _CACHE
    if _CACHE is None:
        _CACHE = DecodedCache(cache_budget_bytes())
    return _CACHE


class PairImages:
    """Pixels of a PairTable as uint8 (N, 2, lights*3, H, W).

    When the whole table fits the cache budget it is decoded once up front (threads: PIL releases the
    GIL while decoding) and batches are slices; otherwise each batch is decoded on demand."""

    def __init__(
        self,
        table: PairTable,
        size: tuple[int, int],
        *,
        workers: int,
        cache: DecodedCache | None = None,
    ) -> None:
        self.table = table
        self.size = size
        self.workers = max(1, workers)
        self.cache = cache if cache is not None else shared_cache()
        self.preloaded: np.ndarray | None = None
        if self.nbytes <= self.cache.budget_bytes:
            import numpy as np

            self.preloaded = self._decode(np.arange(len(table)))

    @property
    def channels(self) -> int:
        return self.table.paths.shape[2] * CHANNELS_PER_LIGHT

    @property
    def nbytes(self) -> int:
        width, height = self.size
        return len(self.table) * 2 * self.channels * width * height

    def batch(self, indices: np.ndarray) -> np.ndarray:
        if self.preloaded is not None:
            return self.preloaded[indices]
        return self._decode(indices)

    def _load(self, path: str) -> np.ndarray:
        if self.preloaded is None and self.nbytes > self.cache.budget_bytes:
            return decode_image(path, self.size)  # streaming: caching would only evict useful entries
        return self.cache.get(path, self.size)

    def _decode(self, indices: np.ndarray) -> np.ndarray:
        import numpy as np

        width, height = self.size
        lights = self.table.paths.shape[2]
        out = np.empty((len(indices), 2, self.channels, height, width), dtype=np.uint8)
        flat = [(i, side, light) for i in range(len(indices)) for side in range(2) for light in range(lights)]
        paths = [str(self.table.paths[indices[i], side, light]) for i, side, light in flat]
        if self.workers > 1 and len(paths) > 16:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                arrays = list(pool.map(self._load, paths))
        else:
            arrays = [self._load(p) for p in paths]
        for (i, side, light), array in zip(flat, arrays, strict=True):
            c0 = light * CHANNELS_PER_LIGHT
            out[i, side, c0 : c0 + CHANNELS_PER_LIGHT] = array
        return out
