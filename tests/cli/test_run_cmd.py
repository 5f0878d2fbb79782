"""`deft run`'s one confirmation: NVIDIA's recipe words it go / yes / looks good."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer

from deft_aoi.cli import run_cmd


@pytest.mark.parametrize("answer", ["go", "GO", "Go!", "yes", "Yes", "y", "Y", "looks good", "Looks  Good.", " go "])
def test_go_words_start_the_loop(answer: str) -> None:
    assert run_cmd.answer_is_go(answer) is True


@pytest.mark.parametrize("answer", ["", "n", "no", "No", "stop"])
def test_no_words_stop(answer: str) -> None:
    assert run_cmd.answer_is_go(answer) is False


@pytest.mark.parametrize("answer", ["maybe", "gogo", "good", "yes please"])
def test_other_words_ask_again(answer: str) -> None:
    assert run_cmd.answer_is_go(answer) is None


def _answers(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Feed the prompt these answers as typed at a terminal; returns the prompts shown."""
    feed: Iterator[str] = iter(answers)
    shown: list[str] = []
    monkeypatch.setattr(run_cmd, "_stdin_is_terminal", lambda: True)
    monkeypatch.delenv("DEFT_YES", raising=False)

    def fake_input(prompt: str = "") -> str:
        shown.append(prompt)
        return next(feed)

    monkeypatch.setattr("builtins.input", fake_input)
    return shown


def test_go_at_the_prompt_confirms(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, "go")
    run_cmd._confirm(False)  # returns: the loop starts


def test_an_unknown_answer_is_asked_again_then_looks_good_confirms(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _answers(monkeypatch, "perhaps", "looks good")
    run_cmd._confirm(False)
    assert len(shown) == 2


def test_no_at_the_prompt_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, "no")
    with pytest.raises(typer.Exit) as exc:
        run_cmd._confirm(False)
    assert exc.value.exit_code == 1
