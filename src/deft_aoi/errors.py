"""The error vocabulary of the CLI: every failure a user can cause maps to one of these.

The CLI turns them into a message and an exit code; nothing else prints tracebacks to users.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class DeftError(Exception):
    """A failure with a message meant for the user."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.row is None else f"{self.file}, row {self.row}"
            where = f"{where}: "
        text = f"{where}{self.message}"
        if self.hint:
            text = f"{text}\n  hint: {self.hint}"
        return text


class UsageError(DeftError):
    """The command line itself is wrong (exit 2)."""

    exit_code = 2


class InputError(DeftError):
    """A workspace file is missing or malformed; names the file and, where known, the row."""


class HardStop(DeftError):
    """A CONTRACTS §5 hard stop: the run is marked failed and never auto-retried.

    `kind` is a short machine-readable reason (e.g. "leakage", "silent_drop", "synth_changed").
    """

    def __init__(self, kind: str, message: str, **kwargs: object) -> None:
        self.kind = kind
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class StageFailed(DeftError):
    """A stage could not finish (backend job failed, timeout...). The run can be resumed once fixed."""


class Interrupted(DeftError):
    """Ctrl-C during a stage; the run stays resumable."""

    exit_code = 130


class DiskError(DeftError):
    """The filesystem refused a write (full, over quota, read-only, no permission). Fixable, then resumable."""

    def __init__(self, message: str, *, kind: str, **kwargs: object) -> None:
        self.kind = kind
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


# The headroom a run needs beyond its inputs (checkpoints, inference CSVs, the staged synthetic pool's
# CSVs, reports); pre-flight refuses to start below it, and the disk-full message asks for it.
HEADROOM_MB = 500

# errno → (failure kind, what the user should do). Anything else is not a disk problem and stays an OSError.
_DISK_ERRNOS = {
    errno.ENOSPC: "disk_full",
    errno.EDQUOT: "disk_full",
    errno.EROFS: "read_only",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
}


def free_mb(path: str | Path) -> int | None:
    """Free space (MB) of the filesystem holding `path` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize // 2**20)


def disk_error(exc: OSError, *, where: str | Path | None = None,
               resume_hint: str = "`deft resume`") -> DiskError | None:
    """A DiskError explaining `exc` in one line, or None when `exc` is not a filesystem refusal. `where` names
    the place being written when the error itself does not (pyarrow, numpy and zlib often leave it out)."""
    kind = _DISK_ERRNOS.get(exc.errno or 0)
    if kind is None:
        return None
    known = exc.filename or where
    path = str(known) if known else "the output directory"
    if kind == "disk_full":
        free = free_mb(known) if known else None
        now = "" if free is None else f" ({free} MB free now)"
        return DiskError(f"no space left on the device holding {path}{now}: free at least {HEADROOM_MB} MB "
                         f"and {resume_hint}", kind=kind)
    if kind == "read_only":
        return DiskError(f"read-only file system: cannot write {path}", kind=kind,
                         hint=f"make the workspace writable (or copy it somewhere writable), then {resume_hint}")
    return DiskError(f"permission denied: cannot write {path}", kind=kind,
                     hint=f"give this user write access to the workspace, then {resume_hint}")


def write_traceback(path: Path, exc: BaseException) -> str:
    """Write `exc`'s traceback to `path` (or, when that cannot be written, to the temp dir) and say where."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc))
    for candidate in (Path(path), Path(tempfile.gettempdir()) / f"deft-traceback-{os.getpid()}.txt"):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            candidate.write_text(text, encoding="utf-8")
        except OSError:
            continue
        return f"traceback in {candidate}"
    return "the traceback could not be written anywhere"
