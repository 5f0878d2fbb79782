"""Ctrl-C wherever it lands: swallowed by a library, during a commit, or through a string exec."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deft_aoi import interrupts
from deft_aoi.errors import InputError, Interrupted
from deft_aoi.loop import commit as commit_module
from deft_aoi.loop.stage_contract import StageContext, StageOutcome

from .test_engine import make_engine


def ctrl_c() -> None:
    """Deliver SIGINT to ourselves and give the handler its bytecode boundary."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)


def test_handler_raises_a_keyboard_interrupt_subclass_and_remembers(deft_sigint: None) -> None:
    assert not interrupts.requested()
    with pytest.raises(interrupts.UserInterrupt):
        ctrl_c()
    assert interrupts.requested()


def test_protect_holds_ctrl_c_until_the_block_ends(deft_sigint: None) -> None:
    with interrupts.protect():
        ctrl_c()  # would raise here without protect()
        finished = True
    assert finished and interrupts.requested()


def test_ctrl_c_swallowed_into_a_parse_error_still_marks_the_stage_interrupted(tmp_path: Path,
                                                                               deft_sigint: None) -> None:
    engine, store, state, _ = make_engine(tmp_path, max_iterations=1)
    stage = engine.stages["train"]
    real_run = stage.run

    def pandas_like(ctx: StageContext) -> StageOutcome:
        if ctx.iteration == "baseline":
            try:
                ctrl_c()
            except KeyboardInterrupt:  # what pandas' C reader does with an interrupted read
                raise InputError("train.csv: cannot parse CSV: Calling read(nbytes) on source failed") from None
        return real_run(ctx)

    stage.run = pandas_like  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        engine.run(state)
    saved = store.load()
    assert saved.status == "interrupted"
    assert saved.iterations["baseline"].stages["train"].status == "interrupted"
    assert saved.failure is not None and saved.failure.kind == "interrupted"


def test_ctrl_c_swallowed_whole_does_not_commit_the_stage(tmp_path: Path, deft_sigint: None) -> None:
    engine, store, state, _ = make_engine(tmp_path, max_iterations=1)
    stage = engine.stages["inference"]
    real_run = stage.run

    def swallowing(ctx: StageContext) -> StageOutcome:
        with contextlib.suppress(KeyboardInterrupt):  # a library that eats Ctrl-C and returns what it had
            ctrl_c()
        return real_run(ctx)

    stage.run = swallowing  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        engine.run(state)
    saved = store.load()
    assert saved.iterations["baseline"].stages["inference"].status == "interrupted"
    assert not (tmp_path / "results/run_20260101_000000/baseline/inference").exists()


def test_ctrl_c_during_a_commit_finishes_the_commit_then_stops(tmp_path: Path, deft_sigint: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine, store, state, calls = make_engine(tmp_path, max_iterations=1)
    real_write = commit_module.write_stage_record

    def write_then_ctrl_c(scratch: Path, record: dict) -> None:
        real_write(scratch, record)
        if (record["iteration"], record["stage"]) == ("baseline", "evaluate"):
            ctrl_c()

    monkeypatch.setattr(commit_module, "write_stage_record", write_then_ctrl_c)
    with pytest.raises(Interrupted, match="after baseline · evaluate"):
        engine.run(state)
    saved = store.load()
    assert saved.status == "interrupted"
    assert saved.iterations["baseline"].stages["evaluate"].status == "complete"
    assert [e.stage for e in store.read_log()][-1] == "evaluate"
    assert saved.failure is not None and "resume" in (saved.failure.fix or "")

    interrupts.reset()
    monkeypatch.setattr(commit_module, "write_stage_record", real_write)
    done = len(calls)
    finished = engine.run(engine.reconcile(store.load()))
    assert finished.status == "finished"
    assert ("baseline", "evaluate") not in calls[done:]  # committed once, never redone


def test_python_m_keeps_exit_code_130_when_ctrl_c_passes_through_a_string_exec(tmp_path: Path) -> None:
    # CPython sets an "unhandled KeyboardInterrupt" flag when one of exactly that type leaves a string exec
    # (dataclass creation does this), and `python -m` then dies by SIGINT whatever exit code was chosen.
    (tmp_path / "exec_ctrl_c.py").write_text(
        "import os, signal, sys, time\n"
        "from deft_aoi import interrupts\n"
        "interrupts.install()\n"
        "try:\n"
        "    exec('os.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(2)', {'os': os, 'signal': signal, 'time': time})\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "exec_ctrl_c"], cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
