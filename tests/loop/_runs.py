"""What a finished run must look like whatever happened on the way, and the ways to kill deft on the way: shared
by the chaos, fault, durable-job and relocation tests."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from run_files import artefacts


def finished_run(ws: Path) -> Path:
    runs = sorted(p for p in (ws / "results").glob("run_*") if (p / "deft_state.json").exists())
    done = [r for r in runs if json.loads((r / "deft_state.json").read_text())["status"] == "finished"]
    assert len(done) == 1, f"expected one finished run, found {[r.name for r in runs]}"
    return done[0]


def fingerprint(ws: Path) -> dict:
    """What must not depend on interruptions: stage sequence, datasets, mined rows, KPI figures."""
    run = finished_run(ws)

    def norm(text: str) -> str:
        return text.replace(str(ws), "<WS>").replace(run.name, "<RUN>")

    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import RunLayout

    # Through the product's own reader: a junk line a fault left in the log is skipped there, as here.
    log = [e.model_dump() for e in StateStore(RunLayout(run)).read_log()]
    state = json.loads((run / "deft_state.json").read_text())
    out: dict = {
        "stages": [(e["iter"], e["stage"]) for e in log if e["status"] == "ok"],
        "kpi": {name: (it["far_pct"], it["threshold"], it["counts"].get("total"))
                for name, it in state["iterations"].items()},
        "best": state["best_iteration"],
    }
    for csv in artefacts(run, "assemble.train_csv").values():
        out[csv.name] = norm(csv.read_text())
    for iteration, mined in artefacts(run, "mine.rows").items():
        rows = pd.read_parquet(mined)
        out[f"{iteration}/mined"] = sorted(norm(p) for p in rows["filepath"].astype(str))
    return out


def undisturbed(template: Path, ws: Path, run: Callable[[Path], None]) -> dict:
    """The fingerprint of a run nothing interrupted: `run` (which checks it finished) on a fresh copy of the
    demo workspace `template` at `ws`, for a disturbed run to equal."""
    shutil.copytree(template, ws)
    run(ws)
    return fingerprint(ws)


class Killed(BaseException):
    """Stands for SIGKILL inside the test's process: no except clause in deft catches a bare BaseException, as
    nothing in deft runs after a SIGKILL (`run_killed_after` SIGKILLs a real process)."""


def kill_after_job_recorded(monkeypatch: pytest.MonkeyPatch, stage: str) -> list:
    """deft dies (Killed) right after recording the handle of `stage`'s first job still running, once; the
    handles it died after are returned (a list the test reads)."""
    from deft_aoi.loop.engine import StageJournal
    from deft_aoi.runners.jobs import JobHandle

    recorded: list[JobHandle] = []
    original = StageJournal.record

    def record(self: StageJournal, handle: JobHandle) -> None:
        original(self, handle)
        if handle.stage == stage and not handle.collected and not recorded:
            recorded.append(handle)
            raise Killed()

    monkeypatch.setattr(StageJournal, "record", record)
    return recorded


def run_killed_after(command: list[str], ws: Path, committed: str, env: dict[str, str]) -> Path:
    """`command` (a `deft run` of `ws`) SIGKILLed as soon as `committed` (a path under the run dir) exists;
    returns the run dir."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not list((ws / "results").glob(f"run_*/{committed}")):
            assert proc.poll() is None, f"deft run ended before {committed}: {proc.stderr.read()[-2000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"no {committed} after 300 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (run,) = (ws / "results").glob("run_*")
    return run


def files_naming(root: Path, old_root: Path) -> list[str]:
    """Every file under `root` that names `old_root` or a path under it, as `relative/file` (a parquet as
    `relative/file[column]`): parquet cells and schema metadata read as text, every other file as bytes (logs,
    YAML, JSON, CSV, HTML, checkpoints alike). A sibling that merely shares the prefix (`ws2` of `ws`) is no
    match."""
    import re

    import pyarrow.parquet as pq

    pattern = re.escape(str(old_root)) + r"(?![\w.-])"
    text_re, bytes_re = re.compile(pattern), re.compile(pattern.encode())
    hits: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = b" ".join(v for v in (table.schema.metadata or {}).values())
            if bytes_re.search(meta):
                hits.append(f"{rel}[metadata]")
            for column in table.column_names:
                if any(text_re.search(str(v)) for v in table.column(column).to_pylist()):
                    hits.append(f"{rel}[{column}]")
        elif bytes_re.search(path.read_bytes()):
            hits.append(rel)
    return hits


def thumbnails(report: Path) -> int:
    """How many embedded images (thumbnails) a rendered report shows."""
    return report.read_text(encoding="utf-8").count('src="data:image/png;base64,')
