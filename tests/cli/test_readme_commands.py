"""The README's command table is the first thing a new user reads: it must match `--help` for every verb."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from deft_aoi.cli.app import app

README = Path(__file__).resolve().parents[2] / "README.md"
FLAG = re.compile(r"--[a-z][a-z-]*")


def readme_rows() -> dict[str | None, tuple[set[str], bool]]:
    """verb (None for `deft [root options]`) → (flags the row names, whether the row elides some with …)."""
    section = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows: dict[str | None, tuple[set[str], bool]] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`deft ([^`]*)`", line)
        if not match:
            continue
        usage = match.group(1)
        first = usage.split()[0]
        verb = None if first.startswith(("-", "[")) else first
        assert verb not in rows, f"README lists `deft {verb or ''}` twice"
        rows[verb] = (set(FLAG.findall(usage)), "…" in usage)
    return rows


def help_flags(*verb: str) -> set[str]:
    """The long options `deft [VERB] --help` lists (click's plain help: `  -w, --workspace PATH  text`)."""
    result = CliRunner().invoke(app, [*verb, "--help"], prog_name="deft", terminal_width=200)
    assert result.exit_code == 0, result.output
    options = result.output.split("Options:", 1)[1].split("Commands:", 1)[0]
    flags: set[str] = set()
    for line in options.splitlines():
        declaration = line.strip().split("  ", 1)[0]
        if declaration.startswith("-"):
            flags.update(FLAG.findall(declaration))
    return flags - {"--help"}


def help_verbs() -> set[str]:
    result = CliRunner().invoke(app, ["--help"], prog_name="deft", terminal_width=200)
    commands = result.output.split("Commands:", 1)[1]
    return {line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line.strip()}


def test_every_verb_is_in_the_readme_and_only_those() -> None:
    verbs = help_verbs()
    assert verbs == set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert set(readme_rows()) - {None} == verbs


def test_each_readme_row_names_only_real_flags_and_all_of_them_unless_elided() -> None:
    for verb, (flags, elided) in readme_rows().items():
        real = help_flags(*([verb] if verb else []))
        assert flags <= real, f"README `deft {verb or ''}` names flags --help lacks: {sorted(flags - real)}"
        if not elided:
            assert flags == real, f"README `deft {verb or ''}` misses: {sorted(real - flags)} (or elide with …)"


def test_shell_completion_is_listed() -> None:
    flags, _ = readme_rows()[None]
    assert {"--install-completion", "--show-completion"} <= flags
