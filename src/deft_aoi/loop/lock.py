"""Advisory locks (fcntl) so two loops never write the same run or workspace.

The kernel drops an flock when its process dies, so a lock file left by a killed run is simply taken
over; the file's JSON only serves to name the holder in the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deft_aoi.bounded import loads_json
from deft_aoi.errors import DeftError
from deft_aoi.loop.state import utc_now


class LockHeld(DeftError):
    pass


# `is_held` probes with a shared lock for an instant; a run starting in that instant retries this long
# instead of reporting a holder that is only a `deft status`.
_ACQUIRE_RETRY_S = 1.0


def _try_exclusive(fd: int) -> bool:
    deadline = time.monotonic() + _ACQUIRE_RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at `path` (the kernel drops it when the holder dies)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_exclusive(fd):
            holder = _read_holder(fd)
            raise LockHeld(
                f"{what} is in use by another deft process (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started_at', '?')}"
                f"{', run ' + holder['run'] if holder.get('run') else ''})",
                hint="wait for it to finish, or stop it; a lock from a dead process is taken over automatically",
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now(), "run": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        holder = loads_json(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}  # a foreign lock file may hold any JSON
