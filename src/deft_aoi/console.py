"""Terminal output. Rich already honours NO_COLOR and drops colour when stdout is not a TTY; spinners and
progress bars are likewise shown only on a terminal. Messages go to stderr so `--json` stdout stays clean."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)


@cache
def out_console() -> Console:
    from rich.console import Console

    return Console(no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)


def interactive() -> bool:
    return err_console().is_terminal and os.environ.get("CI", "").lower() not in ("1", "true")


def progress(transient: bool = True) -> Progress:
    """A progress bar on stderr, silent when not attached to a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=transient,
        disable=not interactive(),
    )


def say(message: str) -> None:
    """A one-line message on stderr (redacted: nothing secret ever reaches the terminal)."""
    from deft_aoi.secrets import redact

    err_console().print(redact(message), markup=False, soft_wrap=True)
