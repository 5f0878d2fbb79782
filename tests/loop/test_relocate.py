"""A workspace moved or copied while its run is stopped (issue 28, points 1 and 2), through the CLI.

The run is SIGKILLed after iteration 1's ingest committed and before its mine did (mine embeds the weak
targets the baseline's RCA wrote, the reads that went wrong), then the workspace is moved or copied and
resumed there: the result equals an undisturbed run, the report shows its thumbnails, and nothing the run
keeps names the old place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._runs import files_naming, fingerprint, finished_run, run_killed_after, thumbnails, undisturbed

DEFT = [sys.executable, "-m", "deft_aoi.cli"]
ARGS = ["--backend", "fake", "--yes", "--max-iterations", "2", "--seed", "3", "--epochs", "2"]
# Committed last before the kill: iteration 1's ingest. Its mine (seconds of embedding) has not committed.
KILL_AFTER = "iter1/anomalygen/.stage.json"


def env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "DEFT_FAKE_FAULT": ""}


def deft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEFT, *args], env=env(), capture_output=True, text=True, timeout=600)


def killed_before_mine(ws: Path) -> Path:
    """`deft run` SIGKILLed once iteration 1's ingest committed, before its mine did; returns the run dir."""
    run = run_killed_after([*DEFT, "run", "-w", str(ws), *ARGS], ws, KILL_AFTER, env())
    mine = json.loads((run / "deft_state.json").read_text())["iterations"]["iter1"]["stages"].get("mine", {})
    assert mine.get("status") != "complete", "the kill came too late: iteration 1's mine had committed"
    return run


def _run(ws: Path) -> None:
    done = deft("run", "-w", str(ws), *ARGS)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def clean(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, int]:
    ws = tmp_path_factory.mktemp("undisturbed") / "ws"
    return undisturbed(demo_template, ws, _run), thumbnails(finished_run(ws) / "DEFT_Loop_Report.html")


def test_moved_workspace_resumes_and_reports_from_its_new_place(
        demo_template: Path, tmp_path: Path, clean: tuple[dict, int]) -> None:
    old, new = tmp_path / "a" / "ws", tmp_path / "b" / "ws"
    shutil.copytree(demo_template, old)
    killed_before_mine(old)
    new.parent.mkdir()
    shutil.move(old, new)

    done = deft("resume", "-w", str(new))
    assert done.returncode == 0, done.stderr[-3000:]
    expected, shown = clean
    assert fingerprint(new) == expected
    run = finished_run(new)
    assert thumbnails(run / "DEFT_Loop_Report.html") == shown > 0
    assert files_naming(run, old) == []  # RCA gaps, suspects, specs, logs, records: none names the old place

    # Moved again once finished: `deft report` still finds every image it shows.
    moved = tmp_path / "c" / "ws"
    moved.parent.mkdir()
    shutil.move(new, moved)
    report = deft("report", "-w", str(moved))
    assert report.returncode == 0, report.stderr[-3000:]
    assert thumbnails(finished_run(moved) / "DEFT_Loop_Report.html") == shown


def test_copied_workspace_reads_only_its_own_files(
        demo_template: Path, tmp_path: Path, clean: tuple[dict, int]) -> None:
    original, copy = tmp_path / "a" / "ws", tmp_path / "b" / "ws"
    shutil.copytree(demo_template, original)
    run = killed_before_mine(original)
    shutil.copytree(original, copy, symlinks=True)  # `cp -a`
    before = {p: p.stat().st_mtime_ns for p in original.rglob("*") if p.is_file()}

    done = deft("resume", "-w", str(copy))
    assert done.returncode == 0, done.stderr[-3000:]
    assert fingerprint(copy) == clean[0]
    # Target embeddings, mining gaps, knn summary, mined rows (the copy's own images, never the original's), and
    # every spec, log and record the copy keeps.
    assert files_naming(copy / "results" / run.name, original) == []
    # ...and the original is left as it was.
    assert {p: p.stat().st_mtime_ns for p in original.rglob("*") if p.is_file()} == before
