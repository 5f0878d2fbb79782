"""Reliability: SIGKILL `deft run` at random moments, resume until done, compare with a clean run.

Runs the real CLI in subprocesses on a generated demo workspace with the fake docker backend, so every
kill lands in real code: mid-stage, between commit steps, while embedding, while writing the state. After
every kill the workspace is moved or copied (alternately) and the next resume runs there (issue 28).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._runs import files_naming, fingerprint, finished_run

# `make test-slow` (CI runs it): whole-loop runs, minutes on a loaded 2-core box; `make test` stays quick.
pytestmark = pytest.mark.slow

DEFT = [sys.executable, "-m", "deft_aoi.cli"]
KILLS = 10
ARGS = ["--backend", "fake", "--yes", "--max-iterations", "3", "--seed", "3", "--epochs", "2"]


def env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def _finished(ws: Path) -> bool:
    states = [p / "deft_state.json" for p in (ws / "results").glob("run_*")]
    return any(s.exists() and json.loads(s.read_text()).get("status") == "finished" for s in states)


def relocate(ws: Path, kills: int) -> Path:
    """Move the workspace (odd kills) or copy it (even kills; the copy goes on, the original stays), to a new
    parent dir under the same name: the next resume runs from the new place."""
    new = ws.parent.parent / f"after_kill_{kills}" / ws.name
    new.parent.mkdir()
    if kills % 2:
        shutil.move(ws, new)
    else:
        shutil.copytree(ws, new, symlinks=True)  # `cp -a`
    return new


def test_sigkill_anywhere_then_resume_matches_clean_run(demo_template: Path, tmp_path: Path) -> None:
    """Every kill is followed by a move or a copy of the workspace (issue 28): the resumed run equals the clean
    one, and no file of it names any place the workspace had before (parquet cells included)."""
    clean_ws, chaos_ws = tmp_path / "clean" / "ws", tmp_path / "chaos" / "ws"
    shutil.copytree(demo_template, clean_ws)
    shutil.copytree(demo_template, chaos_ws)
    t0 = time.monotonic()
    done = subprocess.run([*DEFT, "run", "-w", str(clean_ws), *ARGS], env=env(), capture_output=True,
                          text=True, timeout=600)
    duration = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]

    rng = random.Random(20261123)
    kills = attempts = 0
    places: list[Path] = []  # where the workspace was before each relocation
    resumed = 0  # how many of them a later run or resume started after (the ones it must no longer name)
    while True:
        attempts += 1
        assert attempts < 60, "no progress after many resumes"
        started = any((p / "run_config.json").exists() for p in (chaos_ws / "results").glob("run_*")) \
            if (chaos_ws / "results").exists() else False
        if started and kills >= KILLS and _finished(chaos_ws):
            # A SIGKILL can land after the last commit but before the process exits: the run is complete and
            # `deft resume` rightly answers "nothing to resume" (exit 2), so there is nothing left to drive.
            break
        cmd = [*DEFT, "resume", "-w", str(chaos_ws)] if started else [*DEFT, "run", "-w", str(chaos_ws), *ARGS]
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        resumed = len(places)
        if kills < KILLS:
            # From "during start-up" to "deep in a stage": spread over the clean run's length.
            delay = rng.uniform(0.5, max(2.0, duration / 4))
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                places.append(chaos_ws)
                chaos_ws = relocate(chaos_ws, kills)
                continue
        else:
            proc.wait(timeout=600)
        err = proc.stderr.read() if proc.stderr else ""
        assert proc.returncode == 0, f"{' '.join(cmd[3:])} failed after {kills} kills:\n{err[-3000:]}"
        if kills >= KILLS:
            break
    assert kills >= KILLS
    assert fingerprint(chaos_ws) == fingerprint(clean_ws)
    run = finished_run(chaos_ws)
    oks = [(e["iter"], e["stage"]) for e in map(json.loads, (run / "loop_log.jsonl").read_text().splitlines())
           if e["status"] == "ok"]
    assert len(oks) == len(set(oks)), "exactly one ok log entry per completed stage"
    status = subprocess.run([*DEFT, "status", "-w", str(chaos_ws), "--run", run.name, "--json"], env=env(),
                            capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["status"] == "finished"
    assert not re.search(r"\.scratch", (run / "deft_state.json").read_text().split('"iterations"')[0])
    # A kill after the last commit leaves a finished run that was moved or copied without a resume: its
    # records still name the place they were written in (re-rooted on read), so only earlier places count.
    assert resumed >= KILLS - 1
    stale = {str(old): files_naming(run, old) for old in places[:resumed]}
    assert not any(stale.values()), stale


def test_two_concurrent_runs_on_one_workspace_one_refuses(demo_ws: Path) -> None:
    ws = demo_ws
    first = subprocess.Popen([*DEFT, "run", "-w", str(ws), *ARGS], env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((ws / "results").glob("run_*/deft_state.json")) if (ws / "results").exists() else True:
            assert time.monotonic() < deadline and first.poll() is None, "first run never started"
            time.sleep(0.1)
        second = subprocess.run([*DEFT, "run", "-w", str(ws), *ARGS], env=env(), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 1
        assert "in use by another deft process" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
