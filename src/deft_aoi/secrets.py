"""Credentials from the workspace `.env`: loaded for the backend, never shown.

Every string that can reach a terminal, a log, the state or a report passes `redact()` first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SECRET_NAMES = ("NGC_API_KEY", "HF_TOKEN")
_SECRET_LIKE = re.compile(r"(?i)(key|token|secret|password)")
_known: set[str] = set()


def load_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (python-dotenv); values are remembered for redaction."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v}
    for name, value in values.items():
        if name in SECRET_NAMES or _SECRET_LIKE.search(name):
            remember(value)
    return values


def remember(value: str) -> None:
    if value and len(value) >= 4:
        _known.add(value)


def credential(name: str, env_file: Path | None = None) -> str | None:
    """The environment beats `.env`. The value is remembered so it can be redacted later."""
    value = os.environ.get(name)
    if not value and env_file is not None:
        value = load_env_file(env_file).get(name)
    if value:
        remember(value)
    return value or None


def redact(text: str) -> str:
    for name in SECRET_NAMES:
        value = os.environ.get(name)
        if value:
            remember(value)
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
