"""Ctrl-C for long-running commands: one handler, one "the user asked to stop" flag.

Two CPython details shape this module:
- A `KeyboardInterrupt` of *exactly* that type which passes through a string `exec`/`eval` (dataclass and
  namedtuple creation do this) sets an interpreter flag that makes `python -m ...` die by SIGINT at exit, whatever
  exit code the program chose. Raising a subclass keeps the documented exit code 130.
- Libraries sometimes catch the interrupt and raise something else: pandas' C CSV reader reports "Calling
  read(nbytes) on source failed", `Thread.start` can be left half-done. Remembering that Ctrl-C was pressed lets the
  loop still call the stage interrupted (resumable) instead of failed.

`protect()` defers Ctrl-C over a short critical section (committing a finished stage) so it is taken between
stages, never half-way through a commit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class UserInterrupt(KeyboardInterrupt):
    """Ctrl-C (SIGINT), raised by deft's handler."""


_requested = False
_protect_depth = 0


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    if _protect_depth == 0:
        raise UserInterrupt()


def install() -> None:
    """Route SIGINT through deft's handler (main thread only; elsewhere Python refuses, and there is nothing to do)."""
    global _requested
    _requested = False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)


def requested() -> bool:
    """True once Ctrl-C was pressed in this process (since `install`)."""
    return _requested


def reset() -> None:
    global _requested
    _requested = False


@contextlib.contextmanager
def protect() -> Iterator[None]:
    """Hold Ctrl-C until the block ends; the caller checks `requested()` afterwards."""
    global _protect_depth
    _protect_depth += 1
    try:
        yield
    finally:
        _protect_depth -= 1
