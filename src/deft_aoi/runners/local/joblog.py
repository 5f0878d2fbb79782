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
from deft_aoi.textutil import clean_text


class JobStopped(Exception):
    """stop() was called while the job ran."""


class JobLog:
    """Append-and-flush text log. Every line passes `redact` (a spec could hold a secret-like value)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._paths = [path.resolve()]
        self._written: list[str] = []  # so a mirror opened later starts with the command line too
        self._files: list[IO[str]] = [open(path, "w", encoding="utf-8")]  # noqa: SIM115 - closed in close()

    def mirror_to(self, path: Path) -> None:
        """Also write every line to `path`, from the first. The job's own log is never opened twice: a second
        truncating handle would leave the first writing past the end, a hole of NUL bytes."""
        if path.resolve() in self._paths:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        fh.writelines(self._written)
        fh.flush()
        self._paths.append(path.resolve())
        self._files.append(fh)

    def line(self, text: str) -> None:
        text = clean_text(redact(text)).rstrip("\n") + "\n"
        self._written.append(text)
        for fh in self._files:
            fh.write(text)
            fh.flush()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self._files = []


def command_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


class JobControl:
    """Checked between batches: raises when stop() was called or the job's timeout passed."""

    def __init__(self, name: str, stop_event: threading.Event, timeout_s: float | None,
                 device: str | None = None) -> None:
        self.name = name
        self.device = device  # "cpu" when the run asked for no GPU (--gpus 0); None: runtime.pick_device decides
        self.stop_event = stop_event
        self.timeout_s = timeout_s
        self.started = time.monotonic()

    def check(self) -> None:
        if self.stop_event.is_set():
            raise JobStopped(self.name)
        if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
            raise StageFailed(f"{self.name}: timed out after {self.timeout_s:g} s")
