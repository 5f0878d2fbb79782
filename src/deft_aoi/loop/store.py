"""The ONE writer of `deft_state.json` and `loop_log.jsonl`.

State is replaced atomically and durably (temp file in the same dir, fsync, os.replace, fsync the dir).
Log lines are appended with fsync; `seq` continues from the last line on disk; a torn last line (a crash
mid-append) is truncated on open. Every committed stage also leaves a `.stage.json` in its output dir,
so the state can be rebuilt from the log plus those files if the state file is ever lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from deft_aoi.errors import DeftError
from deft_aoi.io_utils import atomic_write_text, fsync_dir
from deft_aoi.loop.state import LogEntry, RunState, utc_now
from deft_aoi.secrets import redact
from deft_aoi.workspace.layout import RunLayout

RUN_CONFIG_FILE = "run_config.json"
STAGE_RECORD_FILE = ".stage.json"


class StateStore:
    def __init__(self, run: RunLayout) -> None:
        self.run = run

    # -- state -------------------------------------------------------------------------------------
    def save(self, state: RunState) -> None:
        state.updated_at = utc_now()
        atomic_write_text(self.run.state_file, redact(state.model_dump_json(indent=2)) + "\n")

    def load(self) -> RunState:
        path = self.run.state_file
        if not path.exists():
            return self.rebuild()
        try:
            return RunState.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, ValueError):
            return self.rebuild()

    def write_initial(self, state: RunState) -> None:
        """The immutable start-of-run record (the base for `rebuild`), then the first state."""
        self.run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run.root / RUN_CONFIG_FILE, redact(state.model_dump_json(indent=2)) + "\n")
        self.run.log_file.touch()
        fsync_dir(self.run.root)
        self.save(state)

    def rebuild(self) -> RunState:
        """Reconstruct the state from the start record, the log and the committed stages' records."""
        base = self.run.root / RUN_CONFIG_FILE
        if not base.exists():
            raise DeftError(f"{self.run.root}: not a deft run (no {RUN_CONFIG_FILE} and no usable state)")
        state = RunState.model_validate_json(base.read_text(encoding="utf-8"))
        records = {}
        for path in self.run.root.rglob(STAGE_RECORD_FILE):
            if ".scratch" in path.parts:
                continue
            rec = json.loads(path.read_text(encoding="utf-8"))
            records[(rec["iteration"], rec["stage"])] = rec
        from deft_aoi.loop.commit import apply_committed

        for entry in self.read_log():
            if entry.status == "ok" and (entry.iter, entry.stage) in records:
                apply_committed(state, records[(entry.iter, entry.stage)])
        return state

    # -- log ---------------------------------------------------------------------------------------
    def repair_log(self) -> int:
        """Truncate a torn last line left by a crash mid-append. Returns the bytes removed."""
        path = self.run.log_file
        if not path.exists():
            return 0
        data = path.read_bytes()
        if not data:
            return 0
        keep = len(data)
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        else:
            last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
            try:
                json.loads(data[last_start:])
            except ValueError:
                keep = last_start
        if keep != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        return len(data) - keep

    def read_log(self) -> list[LogEntry]:
        path = self.run.log_file
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    entries.append(LogEntry.model_validate_json(line))
                except (ValidationError, ValueError):
                    continue
        return entries

    def append_log(self, *, iteration: str, stage: str, status: str, summary: str, duration_sec: float) -> LogEntry:
        entries = self.read_log()
        seq = entries[-1].seq + 1 if entries else 1
        entry = LogEntry(
            seq=seq,
            ts=utc_now(),
            iter=iteration,
            stage=stage,
            status=status,  # type: ignore[arg-type]
            summary=redact(summary.replace("\n", " "))[:500],
            duration_sec=round(duration_sec, 3),
        )
        with open(self.run.log_file, "a", encoding="utf-8") as fh:
            fh.write(entry.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def ok_entries(self) -> set[tuple[str, str]]:
        return {(e.iter, e.stage) for e in self.read_log() if e.status == "ok"}


def write_stage_record(directory: Path, record: dict) -> None:
    atomic_write_text(directory / STAGE_RECORD_FILE, redact(json.dumps(record, indent=2, default=str)) + "\n")
