"""Shell completion is on (`--install-completion` / `--show-completion`) and costs nothing at `--help` time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app


def test_help_lists_the_completion_options() -> None:
    result = CliRunner().invoke(app, ["--help"], prog_name="deft", terminal_width=200)
    assert result.exit_code == 0
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_show_completion_prints_a_bash_script_for_deft(monkeypatch: pytest.MonkeyPatch) -> None:
    # Typer's switch to take the shell as a value instead of detecting it (a test has no login shell).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="deft")
    assert result.exit_code == 0, result.output
    assert "_DEFT_COMPLETE=complete_bash" in result.output
    assert "complete " in result.output and " deft" in result.output


def test_completion_completes_verbs_and_flags() -> None:
    def complete(words: str) -> str:
        env = {"_DEFT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        return CliRunner().invoke(app, [], prog_name="deft", env=env).output

    assert "resume" in complete("deft res")
    assert "--watch" in complete("deft status --wa")


def test_help_with_completion_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from deft_aoi.cli.app import app\n"
        "try:\n    app(['--help'], prog_name='deft')\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'pandas', 'PIL', 'torch', 'pydantic', 'docker', 'faiss', 'jinja2', 'rich.table')\n"
        "print(','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "", out.stderr
