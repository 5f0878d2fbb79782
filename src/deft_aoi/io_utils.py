"""Crash-safe file writes and content hashing shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_CHUNK = 1 << 20


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results must get the permissions a plain open() would give them.
_FILE_MODE = 0o666 & ~_current_umask()


def fsync_dir(path: Path) -> None:
    """Persist a directory entry (a rename or a new file) across power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def remove_torn_writes(root: Path, *, keep: Path | None = None) -> int:
    """Delete the temp files (`.<name>.<random>.tmp`, atomic_open's) that a killed writer left under `root`,
    except under `keep`; returns how many. Only for a tree no one else writes (the caller holds its lock): a
    live writer's temp file looks the same, so a dir where jobs may still run (a run's scratch) is kept."""
    count = 0
    for path in Path(root).rglob(".*.tmp"):
        if keep is not None and path.is_relative_to(keep):
            continue
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                count += 1
    return count

@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Write to a temp file in the same directory, fsync, then os.replace it into place.

    Readers see either the old file or the whole new one, never a torn write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb", encoding=None) as fh:
        fh.write(data)


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "w") as fh:
        df.to_csv(fh, index=False, lineterminator="\n")


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "wb", encoding=None) as fh:
        df.to_parquet(fh, index=False)


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def refuse_special_file(path: str | Path) -> None:
    """InputError naming `path` when it is a named pipe, socket or device (symlinks followed). Opening a FIFO
    for reading blocks until a writer appears, so deft would hang with no output; a device never ends. A
    missing file or a directory passes: each caller reports those in its own words."""
    from deft_aoi.errors import InputError

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            raise InputError(f"is {kind}, not a regular file; deft reads only regular files",
                             file=path, hint="replace it with the file itself")


def output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """Create the directory a command writes into (parents too), or refuse in one line naming it: a file, or
    a file where one of its parents should be, is the user's mistake, never an internal error."""
    from deft_aoi.errors import InputError, disk_error

    path = Path(path)
    for probe in (path, *path.parents):
        if probe.exists() and not probe.is_dir():
            where = "" if probe == path else f" (its parent {probe} is a file)"
            raise InputError(f"{flag} must be a directory; this is a file{where}", file=path,
                             hint=f"pass {flag} a new or existing folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = disk_error(exc, where=path)
        if problem is not None:
            raise problem from exc
        raise InputError(f"cannot create the {flag} directory: {exc.strerror}", file=path) from exc
    return path


def sha256_file(path: Path) -> str:
    refuse_special_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
