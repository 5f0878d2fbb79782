"""Terminal output. Rich already honours NO_COLOR and drops colour when stdout is not a TTY; spinners and
progress bars are likewise shown only on a terminal. Messages go to stderr so `--json` stdout stays clean.
Every table the CLI prints goes through `print_table`: a rich table on a terminal, plain unwrapped lines
otherwise, so a grep for a path a check names finds it in CI logs.

Every string deft prints may come from a file (a label, a path, a spec value, a log line): `SafeConsole` and
`print_table` make it printable first, and `echo_json` does the same for JSON documents. A label holding
`ESC]0;…BEL` would otherwise set the terminal's title, `ESC[8m` hide everything after it."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

# C0 controls except tab and newline, ESC included; DEL; the C1 block (0x9b is an 8-bit CSI to many terminals);
# and the bidirectional overrides/isolates that make text read in another order than it runs ("trojan source").
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# The same set minus the C0 block, which every JSON encoder already escapes.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every character a terminal would act on shown as its escape (`\\x1b`, `\\u202e`), so it
    reads as what the file holds and changes nothing on the screen. Tabs and newlines stay."""
    def shown(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(shown, text)


def json_printable(text: str) -> str:
    """A serialised JSON document with DEL, C1 controls and bidi overrides written as `\\uXXXX` (valid JSON: they
    only occur inside strings), so `--json` output is as safe on a terminal as the plain one."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def echo_json(text: str) -> None:
    """Print a serialised JSON document on stdout (the one way `--json` output leaves deft)."""
    import typer

    typer.echo(json_printable(text))


Cell = str | tuple[str, str]
"""A table cell: its text, or (text, rich style) where the text is styled on a terminal."""


def _safe_console(**kwargs: Any) -> Console:
    """A rich Console whose `print` makes every plain string printable first (rich itself strips only BEL,
    BS, VT, FF and CR; ESC and the C1 controls pass through). Renderables (tables, Text) are built from
    strings made printable where they are built (`print_table`)."""
    from rich.console import Console

    class SafeConsole(Console):
        def print(self, *objects: Any, **options: Any) -> None:
            super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **options)

    return SafeConsole(no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True, **kwargs)


@cache
def err_console() -> Console:
    return _safe_console(stderr=True)


@cache
def out_console() -> Console:
    return _safe_console()


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
    text = printable(cell if isinstance(cell, str) else cell[0])
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
        table.add_row(*(Text(printable(c)) if isinstance(c, str) else Text(printable(c[0]), style=c[1]) for c in row))
    console.print(table)
