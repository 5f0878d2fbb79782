"""The commit protocol, coded once: how a finished stage becomes committed (the engine's stages and the
seeded baseline both go through `commit_stage`), and how a committed record changes the state (shared by
the engine, live, and the store's rebuild, so a state rebuilt from disk equals the one written while running).

`.stage.json` (one per committed stage, in its output dir):
    iteration, stage, started_at, ended_at, duration_sec, summary, output_dir (relative to the run dir),
    inputs / outputs: {catalog key: {path (relative to the run dir), sha256, size}},
    updates (IterationState fields), run_updates (RunState fields), closes_iteration, closes_run,
    jobs (handles of the backend jobs that produced it, runners/jobs.JobHandle),
    workspace (anchors absolute paths if the workspace moves), record_version.
Records of older versions (no record_version) carry free-form `outputs` and no hashes; they still load.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from deft_aoi.io_utils import fsync_dir
from deft_aoi.loop.apply import apply_committed
from deft_aoi.loop.state import RunState
from deft_aoi.loop.store import StateStore, write_stage_record

RECORD_VERSION = 2  # 2: declared inputs/outputs with hashes; values only in updates


def stage_record(
    *,
    iteration: str,
    stage: str,
    started_at: str,
    ended_at: str,
    duration_sec: float,
    summary: str,
    output_dir: str,
    workspace: str,
    inputs: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    updates: dict[str, Any] | None = None,
    run_updates: dict[str, Any] | None = None,
    closes_iteration: bool = False,
    closes_run: bool = False,
    jobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `.stage.json` document of one committed stage."""
    return {
        "record_version": RECORD_VERSION,
        "iteration": iteration,
        "stage": stage,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_sec": round(duration_sec, 3),
        "summary": summary,
        "output_dir": output_dir,
        "inputs": inputs or {},
        "outputs": outputs or {},
        "updates": updates or {},
        "run_updates": run_updates or {},
        "closes_iteration": closes_iteration,
        "closes_run": closes_run,
        "jobs": jobs or [],
        "workspace": workspace,
    }


def commit_stage(store: StateStore, state: RunState, record: dict[str, Any], *, staged: Path, final: Path) -> None:
    """Write the record into `staged`, move `staged` to `final` (a no-op for stages written in place), make
    it durable, apply the record to the state (atomic + durable write), then log exactly one `ok` line.
    A crash anywhere leaves either an uncommitted stage (redone) or a committed one whose log line resume
    appends."""
    write_stage_record(staged, record)
    if staged != final:
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(final)
    fsync_dir(final.parent)
    apply_committed(state, record)
    store.save(state)
    # A stage whose committed record was damaged is redone; its first `ok` line stays the only one.
    if (record["iteration"], record["stage"]) not in store.ok_entries():
        store.append_log(iteration=record["iteration"], stage=record["stage"], status="ok",
                         summary=record.get("summary", ""), duration_sec=record.get("duration_sec") or 0.0)
