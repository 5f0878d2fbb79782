"""Text from files deft does not fully control (job logs, torn writes): made safe to show and to store.

A log torn inside a multi-byte character, binary junk, or the NUL run a crashed writer leaves must never
turn into a decode traceback, nor travel into the state or onto the terminal.
"""

from __future__ import annotations

import re
from pathlib import Path

# C0 controls except tab and newline, plus DEL: a terminal would act on them, JSON readers choke on NUL.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")


def clean_text(text: str) -> str:
    """`text` without control characters (NUL runs, escape sequences); tabs and newlines kept."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def decode_lenient(data: bytes) -> str:
    """UTF-8 with undecodable bytes shown as U+FFFD, then cleaned."""
    return clean_text(data.decode("utf-8", errors="replace"))


def read_text_lenient(path: Path) -> str:
    return decode_lenient(Path(path).read_bytes())
