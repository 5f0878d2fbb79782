"""Pairs of (input, golden) images for the local backend, decoded once and kept in memory.

TAO reads `{images_dir}/{input_path}/{object_name}_{light}{image_ext}` per light; we resolve paths the
same way (`image_paths`), stack the lights as channels, and downscale to at most INTERNAL_MAX_SIDE px
so a CPU epoch of a few hundred rows stays within seconds, and register each golden onto its input
(align_goldens) so the difference the model sees is the change, not the mis-registration. Decoded
pixels live in a process-wide cache keyed by file identity, so epochs never re-decode and the two
inferences after a train reuse the KPI images.
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
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout

# The network is a stand-in for a ViT at 224 px. Up to 128 px the crop is seen at its own resolution,
# where a pin-hole or a thin spur is still 2 px wide; the model's stride-2 stem (model.py) brings the
# cost of 128 px down to that of the earlier 64 px model (≈110 pairs/s on 2 CPU cores).
# The spec size only caps this: TAO resizes every crop to image_width x image_height, and a spec larger
# than the crop (C-RADIO needs 224 px) upsamples pixels that carry nothing new, so it must not change
# what the local model sees or does.
INTERNAL_MAX_SIDE = 128
# Real golden/test pairs are mis-registered by 2–5 px (fixture and camera tolerance); goldens are
# registered onto their input by searching integer shifts up to this radius, in the crop's OWN pixels
# (read from each decoded file, never from the spec size: resizing the crop moves nothing on the board),
# before the network differences them (align_goldens).
ALIGN_MAX_SHIFT_PX = 6
# A shift replaces "as is" only when its cost beats every nearer shift's by more than this (relative,
# absolute grey levels): sensor noise alone must not move a pair.
ALIGN_TOLERANCE = (0.02, 0.25)
CHANNELS_PER_LIGHT = 3
DEFAULT_CACHE_MB = 2048
CACHE_ENV = "DEFT_LOCAL_CACHE_MB"


def internal_size(width: int, height: int, max_side: int = INTERNAL_MAX_SIDE,
                  own_side: int | None = None) -> tuple[int, int]:
    """(width, height) the network sees: the spec size (its aspect, as TAO resizes to it) scaled down to fit
    max_side and, when known, the crops' own longer side: upsampling adds no detail, only cost."""
    side = max_side if own_side is None else min(max_side, max(own_side, 8))
    scale = min(1.0, side / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def own_crop_side(table: PairTable) -> int | None:
    """The longer side of the first row's input image (first light), read from its header: the resolution the
    crops of a set carry. None for an empty table."""
    from deft_aoi.imaging import open_image

    if len(table) == 0:
        return None
    path = str(table.paths[0, 0, 0])
    try:
        with open_image(path) as image:
            return int(max(image.size))
    except OSError as exc:
        raise InputError(f"cannot read image: {exc}", file=path) from exc


def align_shift_px(own_side: int, internal_side: int, own_px: int = ALIGN_MAX_SHIFT_PX) -> int:
    """The alignment search radius in internal pixels: `own_px` pixels of a crop whose own (decoded file)
    longer side is `own_side`, scaled to the internal size (at least 1 px); 0 when `own_px` is 0 (off)."""
    if own_px <= 0:
        return 0
    return max(1, -(-own_px * internal_side // max(own_side, 1)))


def first_crop_size(workspace: WorkspaceLayout, spec: ChangeNetSpec) -> tuple[int, int] | None:
    """(width, height) of the first training row's input image for the first light, read from its header;
    None when it cannot be read (the workspace checks name the CSV or image)."""
    import csv

    from deft_aoi.imaging import open_image

    try:
        with open(workspace.train_csv, newline="", encoding="utf-8") as fh:
            row = next(csv.DictReader(fh), None)
        if row is None or not spec.lights:
            return None
        folder = Path(str(row.get("input_path") or ""))
        folder = folder if folder.is_absolute() else workspace.kpi_images / folder
        path = folder / f"{row.get('object_name') or ''}_{spec.lights[0]}{spec.image_ext}"
        with open_image(str(path)) as image:
            width, height = image.size
    except (OSError, ValueError, UnicodeDecodeError, InputError):
        return None
    return int(width), int(height)


def shift_candidates(max_shift: int) -> list[tuple[int, int]]:
    """Every integer (dy, dx) with |dy|, |dx| <= max_shift, nearest to (0, 0) first: on a tie the
    smallest shift wins, so a pair that is already registered (or featureless) is left as it is."""
    span = range(-max_shift, max_shift + 1)
    return sorted(((dy, dx) for dy in span for dx in span), key=lambda s: (s[0] ** 2 + s[1] ** 2, s))


def _flat_sides(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """uint8 (N, 2, C, H, W) as the compiled search takes it: (inputs, goldens, pixel stride, channel
    stride), each side C-contiguous (N, H·W·C). Views of the shape encoder's channels-last side buffers
    as they are; any other layout (training's (N, 2, C, H, W)) as a channels-first copy of each side."""
    import numpy as np

    n, _, channels, height, width = pairs.shape
    by_side = pairs.transpose(1, 0, 3, 4, 2)  # (2, N, H, W, C)
    if by_side[0].flags.c_contiguous and by_side[1].flags.c_contiguous:
        return by_side[0].reshape(n, -1), by_side[1].reshape(n, -1), channels, 1
    sides = [np.ascontiguousarray(pairs[:, side]).reshape(n, -1) for side in (0, 1)]
    return sides[0], sides[1], 1, height * width


def best_shifts(pairs: np.ndarray, max_shift: int) -> np.ndarray:
    """Per pair, the (dy, dx) that best registers golden onto input: int (N, 2).

    pairs: uint8 (N, 2, C, H, W), side 0 = input. Shifting golden by (dy, dx) puts golden[y − dy, x − dx]
    at (y, x); the cost is the mean absolute difference of the channel-mean images (shift_cost.candidate_costs).
    A defect is a small share of the window, so it barely moves the optimum; a global mis-registration
    moves every edge of the part, which is what this finds. Coarse to fine (a search over every shift
    at full size costs ≈ 30 ms a pair): the radius is searched at half size (sums of 2x2 channel sums),
    then ±1 px around the doubled estimate at full size. At each step the pick is the first candidate whose
    cost is within ALIGN_TOLERANCE of the best: as candidates run from (0, 0) outwards, a shift must beat
    staying put by more than noise, which keeps stripes and blank areas (every shift about as good) from
    being moved by the search. Compiled, one pair at a time: shift_cost.search."""
    import numpy as np

    from deft_aoi.runners.local.shift_cost import search

    n, _, channels, height, width = pairs.shape
    zero = np.zeros((n, 2), dtype=np.int64)
    if n == 0 or max_shift <= 0 or min(height, width) <= 4 * max_shift + 4:
        return zero
    # Channel sums, and at half size sums of 2x2 of them: the channel mean's grey levels times `channels`
    # (times 4 at half size), exact in int16 up to 32 channels (int32 beyond, signed so differences fit).
    wide = np.int16 if 4 * 255 * channels <= np.iinfo(np.int16).max else np.int32
    tests, goldens, pixel_stride, channel_stride = _flat_sides(pairs)
    coarse_radius = -(-max_shift // 2)
    coarse = np.asarray(shift_candidates(coarse_radius), dtype=np.int64)
    fine = np.asarray(shift_candidates(1), dtype=np.int64)
    shifts = np.empty((n, 2), dtype=np.int64)
    search(tests, goldens, height, width, channels, pixel_stride, channel_stride, coarse[:, 0].copy(),
           coarse[:, 1].copy(), coarse_radius, fine[:, 0].copy(), fine[:, 1].copy(),
           np.float32(1 + ALIGN_TOLERANCE[0]), np.float32(ALIGN_TOLERANCE[1]),
           np.empty((2, height * width), dtype=wide), np.empty((2, (height // 2) * (width // 2)), dtype=wide),
           shifts)
    clipped: np.ndarray = np.clip(shifts, -max_shift, max_shift)
    return clipped


def align_goldens(pairs: np.ndarray, max_shift: int) -> np.ndarray:
    """Registers every golden onto its input in place (see `best_shifts`) and returns the shifts.

    The strip a shift uncovers has no golden pixels; it is filled with the input's own pixels, so it
    differences to zero instead of to a fake edge the model would have to learn to ignore."""
    shifts = best_shifts(pairs, max_shift)
    height, width = pairs.shape[-2:]
    for i, (dy, dx) in enumerate(shifts.tolist()):
        if dy == 0 and dx == 0:
            continue
        moved = pairs[i, 0].copy(order="K")  # keeps a channels-last view's rows contiguous
        moved[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = pairs[
            i, 1, :, max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
        ]
        pairs[i, 1] = moved
    return shifts


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def labels_to_targets(labels: pd.Series) -> np.ndarray:
    """PASS → 0, any other label → 1 (TAO's class-0 sentinel; labels are normalised on read)."""
    import numpy as np

    targets: np.ndarray = (labels.astype(str).to_numpy() != PASS_LABEL).astype(np.int64)
    return targets


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
    return decode_image_sized(path, size)[0]


def decode_image_sized(path: str, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """`decode_image` and the longer side of the file's own resolution (what registration is measured in)."""
    import numpy as np

    array, own_side = decode_channels_last(path, size)
    return np.ascontiguousarray(array.transpose(2, 0, 1)), own_side


def decode_channels_last(path: str, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """`decode_image_sized` as PIL gives it, uint8 (H, W, 3): for callers that keep channels last (the
    channel-first copy costs ≈ 20 % of a 128-px JPEG decode)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from deft_aoi.imaging import open_image, to_8bit

    try:
        with open_image(path) as image:
            own_side = max(image.size)  # before draft(), which may decode at a reduced scale
            # JPEG can decode straight at 1/2, 1/4, 1/8 scale: far cheaper than decoding then resizing.
            image.draft("RGB", size)
            # convert() of an RGB image is a copy of it: skipped (≈ 5 % of a 128-px JPEG decode).
            rgb = image if image.mode == "RGB" else to_8bit(image).convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            array = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot decode image: {exc}", file=path) from exc
    return array, own_side


class DecodedCache:
    """Process-wide LRU of decoded images, bounded in bytes. Keys carry mtime and size, so an image
    rewritten on disk is decoded afresh."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[tuple[str, int, int, int, int], tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(path: str, size: tuple[int, int]) -> tuple[str, int, int, int, int]:
        stat = os.stat(path)
        return path, stat.st_mtime_ns, stat.st_size, size[0], size[1]

    def get(self, path: str, size: tuple[int, int]) -> np.ndarray:
        return self.get_sized(path, size)[0]

    def get_sized(self, path: str, size: tuple[int, int]) -> tuple[np.ndarray, int]:
        """The decoded pixels at `size` and the file's own longer side (see decode_image_sized)."""
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
        decoded = decode_image_sized(path, size)
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = decoded
                self._bytes += decoded[0].nbytes
            while self._bytes > self.budget_bytes and len(self._items) > 1:
                _, (dropped, _) = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return decoded

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
    """Pixels of a PairTable as uint8 (N, 2, lights*3, H, W), goldens registered onto their inputs
    within `align_px` pixels of each pair's own resolution (0 = as decoded); `align_shift` is the largest
    radius that took in internal pixels.

    When the whole table fits the cache budget it is decoded once up front (threads: PIL releases the
    GIL while decoding) and batches are slices; otherwise each batch is decoded on demand."""

    def __init__(
        self,
        table: PairTable,
        size: tuple[int, int],
        *,
        workers: int,
        align_px: int = 0,
        cache: DecodedCache | None = None,
    ) -> None:
        self.table = table
        self.size = size
        self.align_px = align_px
        self.align_shift = 0
        self.workers = max(1, workers)
        self.cache = cache if cache is not None else shared_cache()
        self.preloaded: np.ndarray | None = None
        if self.nbytes <= self.cache.budget_bytes:
            import numpy as np

            self.preloaded = self._decode(np.arange(len(table)))

    @property
    def channels(self) -> int:
        channels: int = self.table.paths.shape[2] * CHANNELS_PER_LIGHT
        return channels

    @property
    def nbytes(self) -> int:
        width, height = self.size
        return len(self.table) * 2 * self.channels * width * height

    def batch(self, indices: np.ndarray) -> np.ndarray:
        if self.preloaded is not None:
            decoded: np.ndarray = self.preloaded[indices]
            return decoded
        return self._decode(indices)

    def _load(self, path: str) -> tuple[np.ndarray, int]:
        if self.preloaded is None and self.nbytes > self.cache.budget_bytes:
            return decode_image_sized(path, self.size)  # streaming: caching would only evict useful entries
        return self.cache.get_sized(path, self.size)

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
        own_side = np.zeros(len(indices), dtype=np.int64)
        for (i, side, light), (array, side_px) in zip(flat, arrays, strict=True):
            c0 = light * CHANNELS_PER_LIGHT
            out[i, side, c0 : c0 + CHANNELS_PER_LIGHT] = array
            if side == 0 and light == 0:
                own_side[i] = side_px
        # All lights of a pair share one shift: they are one camera position under different lighting. The
        # radius is the input crop's own `align_px`, so pairs of different resolutions are searched apart.
        internal_side = max(width, height)
        radii = np.asarray([align_shift_px(int(s), internal_side, self.align_px) for s in own_side], dtype=np.int64)
        for radius in np.unique(radii).tolist():
            members = np.flatnonzero(radii == radius)
            group = out[members]
            align_goldens(group, radius)
            out[members] = group
            self.align_shift = max(self.align_shift, radius)
        return out
