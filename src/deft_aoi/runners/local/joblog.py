"""The job's log: the command line first, then progress lines, mirrored to TAO-style `<task>.log`."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from deft_aoi.errors import StageFailed
from deft_aoi.secrets import redact


class JobStopped(Exception):
    """stop() was called while the job ran."""


class JobLog:
    """Append-and-flush text log. Every line passes `redact` (a spec could hold a secret-like value)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._files: list[IO[str]] = [open(path, "w", encoding="utf-8")]  # noqa: SIM115 - closed in close()

    def mirror_to(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._files.append(open(path, "w", encoding="utf-8"))  # noqa: SIM115 - closed in close()

    def line(self, text: str) -> None:
        text = redact(text)
        for fh in self._files:
            fh.write(text.rstrip("\n") + "\n")
            fh.flush()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self._files = []


def command_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


class JobControl:
    """Checked between batches: raises when stop() was called or the job's timeout passed."""

    def __init__(self, name: str, stop_event: threading.Event, timeout_s: float | None) -> None:
        self.name = name
        self.stop_event = stop_event
        self.timeout_s = timeout_s
        self.started = time.monotonic()

    def check(self) -> None:
        if self.stop_event.is_set():
            raise JobStopped(self.name)
        if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
            raise StageFailed(f"{self.name}: timed out after {self.timeout_s:g} s")
