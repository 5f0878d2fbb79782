"""The error vocabulary of the CLI: every failure a user can cause maps to one of these.

The CLI turns them into a message and an exit code; nothing else prints tracebacks to users.
"""

from __future__ import annotations

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
