"""Terminal output. Rich already honours NO_COLOR and drops colour when stdout is not a TTY; spinners and
progress bars are likewise shown only on a terminal. Messages go to stderr so `--json` stdout stays clean.
Every table the CLI prints goes through `print_table`: a rich table on a terminal, plain unwrapped lines
otherwise, so a grep for a path a check names finds it in CI logs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

Cell = str | tuple[str, str]
"""A table cell: its text, or (text, rich style) where the text is styled on a terminal."""


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)


@cache
def out_console() -> Console:
    from rich.console import Console

    return Console(no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


def interactive() -> bool:
    return err_console().is_terminal and not _in_ci()


def plain(console: Console) -> bool:
    """Piped, redirected or in CI: no boxes, no wrapping, one line per record."""
    return not console.is_terminal or _in_ci()


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


def _cell_text(cell: Cell) -> str:
    text = cell if isinstance(cell, str) else cell[0]
    # A multi-line cell (a message with its hint) stays on its record's one line.
    return "  ".join(part.strip() for part in text.splitlines() if part.strip())


def plain_table_lines(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """The title, a header and one line per row; columns padded to align, the last one never padded or cut."""
    texts = [[_cell_text(c) for c in row] for row in rows]
    grid = [list(columns), *texts]
    widths = [max(len(r[i]) for r in grid) for i in range(len(columns) - 1)]
    lines = [title] if title else []
    for row in grid:
        head = [text.ljust(width) for text, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*head, row[-1]]).rstrip())
    return lines


def print_table(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    title: str | None = None,
    fold: Sequence[str] = (),
) -> None:
    """A rich table on a terminal; otherwise `plain_table_lines`, printed without any wrapping.

    `fold` names the columns whose long values fold inside their cell on a terminal (paths, messages)."""
    if plain(console):
        for line in plain_table_lines(title, columns, rows):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, expand=False)
    for name in columns:
        table.add_column(name, overflow="fold" if name in fold else "ellipsis")
    for row in rows:
        table.add_row(*(Text(c) if isinstance(c, str) else Text(c[0], style=c[1]) for c in row))
    console.print(table)
