"""Credentials from the workspace `.env`: loaded for the backend, never shown.

Values are redacted where text is emitted (log lines, error texts, container env echoes, the terminal),
never by rewriting a serialised document: a text replace inside JSON can break its syntax (`null`, `true`)
or a path that happens to contain the value. Short or common values are not secrets worth searching for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

SECRET_NAMES = ("NGC_API_KEY", "HF_TOKEN")
_SECRET_LIKE = re.compile(r"(?i)(key|token|secret|password)")
# A value shorter than this, or a word every config file contains, would match everywhere and mask nothing
# secret: `HF_TOKEN=test` must not turn a workspace named `ws-test3` into `ws-***3`.
MIN_SECRET_LENGTH = 8
_NOT_SECRETS = frozenset({"null", "none", "true", "false", "yes", "no", "on", "off", "enabled", "disabled",
                          "changeme", "password", "undefined", "placeholder"})
_known: set[str] = set()


def load_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (python-dotenv); values are remembered for redaction."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v}
    remember_secret_values(values)
    return values


def remember_secret_values(env: Mapping[str, str]) -> None:
    """Remember for redaction the values of the variables whose NAME says secret (a job's environment, .env)."""
    for name, value in env.items():
        if name in SECRET_NAMES or _SECRET_LIKE.search(name):
            remember(value)


def is_secret_worthy(value: str) -> bool:
    """Whether a value is distinctive enough to search for in emitted text."""
    text = value.strip()
    return len(text) >= MIN_SECRET_LENGTH and text.lower() not in _NOT_SECRETS and not text.isdigit()


def remember(value: str) -> None:
    if value and is_secret_worthy(value):
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
