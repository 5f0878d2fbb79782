"""Filesystem side of the demo generator: encode and write images, CSVs and text into a staging
directory, then move the finished workspace into place.

Thousands of small images are written without a per-file fsync (that alone would take longer than the
rendering); atomicity comes from staging beside the target and renaming once everything is written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from deft_aoi.errors import InputError, UsageError
from deft_aoi.io_utils import fsync_dir

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

JPEG_QUALITY = 90
_INLINE_BELOW = 300  # rows; a process pool costs more than it saves on tiny jobs

# Every path the generator owns inside a workspace (relative to its root). `--force` replaces exactly
# these and leaves anything else (results/, .env, versions.yaml...) alone.
GENERATED: tuple[str, ...] = (
    ".env.example",
    "README.md",
    "specs/baseline_spec.yaml",
    "train/base/training_set.csv",
    "train/base/validation_set.csv",
    "kpi/testing_set.csv",
    "kpi/images",
    "augmentation/mining_pool/mining_pool.csv",
    "augmentation/mining_pool/images",
    "augmentation/anomalygen/reconstructed_image",
    "augmentation/anomalygen/original_image",
    "augmentation/anomalygen/defect_spec.jsonl",
)


class RowJob(NamedTuple):
    images_root: str  # absolute directory the row's input_path/golden_path are relative to
    input_path: str
    golden_path: str
    object_name: str
    comp_type: str
    label: str
    nuisance: str
    row_seed: int


class SynthJob(NamedTuple):
    ng_path: str
    ok_path: str
    comp_type: str
    defect_type: str
    row_seed: int


def encode(image: np.ndarray, ext: str) -> bytes:
    """PNG or JPEG bytes; no metadata or timestamps, so equal pixels give equal bytes."""
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(image, mode="RGB")
    if ext.lower() in (".jpg", ".jpeg"):
        pil.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        pil.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def write_rows(jobs: Sequence[RowJob], light: str, ext: str) -> int:
    """Render and write the test and golden image of each row; returns the number of files written."""
    from deft_aoi.demo.samples import render_pair

    for job in jobs:
        tags = tuple(t for t in job.nuisance.split(";") if t)
        test, golden = render_pair(job.comp_type, job.label, tags, job.row_seed)
        name = f"{job.object_name}_{light}{ext}"
        root = Path(job.images_root)
        _write(root / job.input_path / name, encode(test, ext))
        _write(root / job.golden_path / name, encode(golden, ext))
    return 2 * len(jobs)


def write_synthetic(jobs: Sequence[SynthJob]) -> int:
    from deft_aoi.demo.samples import render_synthetic

    for job in jobs:
        ng, ok = render_synthetic(job.comp_type, job.defect_type, job.row_seed)
        _write(Path(job.ng_path), encode(ng, Path(job.ng_path).suffix))
        _write(Path(job.ok_path), encode(ok, Path(job.ok_path).suffix))
    return 2 * len(jobs)


T = TypeVar("T")


def _chunks(items: Sequence[T], n: int) -> list[Sequence[T]]:
    size = max(1, -(-len(items) // n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_jobs(rows: Sequence[RowJob], synth: Sequence[SynthJob], light: str, ext: str, workers: int) -> int:
    """Write every image, in worker processes when it pays. Output bytes do not depend on `workers`:
    each file is a function of its row's seed alone."""
    if workers <= 1 or len(rows) + len(synth) < _INLINE_BELOW:
        return write_rows(rows, light, ext) + write_synthetic(synth)
    parts = 4 * workers
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(write_rows, chunk, light, ext) for chunk in _chunks(rows, parts)]
        futures += [pool.submit(write_synthetic, chunk) for chunk in _chunks(synth, parts)]
        return sum(f.result() for f in futures)


def write_text(path: Path, text: str) -> None:
    _write(path, text.encode("utf-8"))


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    from deft_aoi.workspace.changenet_csv import write_changenet_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    write_changenet_csv(frame, path)
    # The atomic writer's temp file is private (0600); a workspace CSV should have ordinary modes.
    os.chmod(path, 0o666 & ~_umask())


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under root."""
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


def check_target(out: Path, force: bool) -> None:
    """Refuse a file, or a non-empty directory without --force, before any work is done."""
    if out.exists() and not out.is_dir():
        raise InputError("output path is a file, not a directory", file=out)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(
            f"{out} is not empty; refusing to write demo data into it",
            hint="choose an empty or new directory, or pass --force to replace the demo files there",
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_dir(out: Path) -> Path:
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.demo-"))
    # mkdtemp makes it private (0700); once renamed it is the user's workspace, so give it normal modes.
    os.chmod(stage, 0o777 & ~_umask())
    return stage


def install(stage: Path, out: Path) -> None:
    """Move the staged workspace to `out`: one rename when `out` is new or empty; otherwise replace
    just the GENERATED entries (only reachable with --force, checked earlier)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
        fsync_dir(out.parent)
        return
    for rel in GENERATED:
        src, dst = stage / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        elif src.is_dir() and (dst.exists() or dst.is_symlink()):
            dst.unlink()
        os.replace(src, dst)
        fsync_dir(dst.parent)
    shutil.rmtree(stage)
