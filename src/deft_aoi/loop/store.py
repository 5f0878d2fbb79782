"""The ONE writer of `deft_state.json` and `loop_log.jsonl`.

State is replaced atomically and durably (temp file in the same dir, fsync, os.replace, fsync the dir).
Log lines are appended with fsync; `seq` continues from the last line on disk; a torn last line (a crash
mid-append) is truncated on open. Every committed stage also leaves a `.stage.json` in its output dir,
so the state can be rebuilt from the log plus those files if the state file is ever lost.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deft_aoi.bounded import loads_json
from deft_aoi.errors import DeftError
from deft_aoi.io_utils import atomic_write_text, fsync_dir
from deft_aoi.loop.state import LogEntry, RunState, utc_now
from deft_aoi.secrets import redact
from deft_aoi.workspace.catalog import name
from deft_aoi.workspace.layout import RunLayout

RUN_CONFIG_FILE = name("run.config")
STAGE_RECORD_FILE = name("stage.record")


class StateStore:
    def __init__(self, run: RunLayout) -> None:
        self.run = run
        # What reading skipped or repaired (a torn log line, a corrupt stage record...), for status and
        # report to show: they read what they can and say what they left out.
        self.notes: list[str] = []

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- state -------------------------------------------------------------------------------------
    def save(self, state: RunState) -> None:
        state.updated_at = utc_now()
        atomic_write_text(self.run.state_file, state.model_dump_json(indent=2) + "\n")

    def load(self) -> RunState:
        path = self.run.state_file
        if not path.exists():
            self._note(f"{path.name} is missing: state rebuilt from {RUN_CONFIG_FILE}, the log and the stage records")
            return self.rebuild()
        try:
            return RunState.model_validate(self._relocated(loads_json(path.read_bytes())))
        except (ValidationError, ValueError, TypeError):
            self._note(f"{path.name} is unreadable: state rebuilt from {RUN_CONFIG_FILE}, the log and the "
                       "stage records")
            return self.rebuild()
        except OSError as exc:
            raise DeftError(f"cannot read the run state: {exc.strerror}", file=path) from exc

    # -- a workspace that moved ---------------------------------------------------------------------
    def workspace_root(self) -> Path:
        """Where the run's workspace is now: results/run_<TS>/ sits two levels below it."""
        return self.run.root.parent.parent

    def _relocated(self, doc: Any, *, recorded_root: str | None = None) -> Any:
        """`doc` with every path under the workspace it was written in re-rooted at the workspace's current
        place, so a copied or moved workspace resumes. Documents written before and after a move read alike:
        the recorded root (`workspace` of the state) anchors the rewrite, and nothing else is touched."""
        old = recorded_root if recorded_root is not None else (doc.get("workspace") if isinstance(doc, dict) else None)
        new = str(self.workspace_root())
        if not isinstance(old, str) or not old or old == new:
            return doc
        if self.run.root.parent.name != "results":
            return doc  # a run dir outside any workspace layout: nothing to re-root against
        return _reroot(doc, old.rstrip("/"), new)

    def relocate_records(self) -> int:
        """Rewrite the stage records and the start record that still name the workspace's earlier place,
        re-rooted where it is now, so nothing the run keeps points at the original (a copy's original may
        change or vanish). Each file is replaced atomically and names its own `workspace`, so a crash midway
        leaves records that read alike. Damaged ones are left to the readers (skipped, or rebuilt). Returns
        how many were rewritten."""
        new = str(self.workspace_root())
        if self.run.root.parent.name != "results":
            return 0
        base = self.run.root / RUN_CONFIG_FILE
        try:
            start = json.loads(base.read_bytes())
        except (OSError, ValueError):
            start = None
        start_root = start.get("workspace") if isinstance(start, dict) else None
        count = 0
        for path in sorted(self.run.root.rglob(STAGE_RECORD_FILE)):
            rec = None if ".scratch" in path.relative_to(self.run.root).parts else _read_stage_record(path)
            recorded = rec.get("workspace", start_root) if rec is not None else None
            if rec is None or not isinstance(recorded, str) or not recorded or recorded == new:
                continue
            write_stage_record(path.parent, {**self._relocated(rec, recorded_root=recorded), "workspace": new})
            count += 1
        if isinstance(start, dict) and isinstance(start_root, str) and start_root and start_root != new:
            # Last: a stage record without its own `workspace` (older runs) is anchored by this one.
            atomic_write_text(base, json.dumps(self._relocated(start), indent=2) + "\n")
            count += 1
        return count

    def repair_start_record(self, state: RunState) -> bool:
        """Re-create a deleted or damaged `run_config.json` from a readable state (its start fields never
        change). Returns whether it had to."""
        base = self.run.root / RUN_CONFIG_FILE
        try:
            RunState.model_validate_json(base.read_bytes())
            return False
        except (OSError, ValidationError, ValueError):
            pass
        start = RunState(run_id=state.run_id, started_at=state.started_at, workspace=state.workspace,
                         results_dir=state.results_dir, config=state.config,  # kpi, max_iterations: in config
                         input_hashes=state.input_hashes, preflight=state.preflight)
        atomic_write_text(base, start.model_dump_json(indent=2) + "\n")
        self._note(f"{RUN_CONFIG_FILE} was missing or damaged: re-created from {self.run.state_file.name}")
        return True

    def write_initial(self, state: RunState) -> None:
        """The immutable start-of-run record (the base for `rebuild`), then the first state."""
        self.run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run.root / RUN_CONFIG_FILE, state.model_dump_json(indent=2) + "\n")
        self.run.log_file.touch()
        fsync_dir(self.run.root)
        self.save(state)

    def rebuild(self) -> RunState:
        """Reconstruct the state from the start record, the log and the committed stages' records."""
        base = self.run.root / RUN_CONFIG_FILE
        if not base.exists():
            raise DeftError(f"not a deft run, or one whose records are lost: no {RUN_CONFIG_FILE} and no usable "
                            f"{self.run.state_file.name}", file=self.run.root,
                            hint="restore one of those two files, or start a new run with `deft run`")
        try:
            start = loads_json(base.read_bytes())
            state = RunState.model_validate(self._relocated(start))
        except (ValidationError, ValueError, TypeError) as exc:
            raise DeftError(f"the start record is damaged and {self.run.state_file.name} is unusable too",
                            file=base, hint="restore it from a backup, or start a new run with `deft run`") from exc
        records = {}
        damaged: list[str] = []
        for path in sorted(self.run.root.rglob(STAGE_RECORD_FILE)):
            if ".scratch" in path.parts:
                continue
            rec = _read_stage_record(path)
            if rec is not None:
                rec = self._relocated(rec, recorded_root=rec.get("workspace", start.get("workspace")))
            if rec is None:
                damaged.append(str(path.relative_to(self.run.root)))
                continue
            records[(rec["iteration"], rec["stage"])] = rec
        from deft_aoi.loop.apply import apply_committed

        for entry in self.read_log():
            key = (entry.iter, entry.stage)
            if entry.status == "ok" and key in records:
                try:
                    apply_committed(state, records[key])
                except (ValidationError, TypeError, ValueError, AttributeError):
                    damaged.append(f"the record of {entry.iter} · {entry.stage}")
        # What a damaged record loses depends on where the run stands: a finished run is never resumed, so
        # promising a redo there would be a lie (resume says "has finished").
        after = ("the run had finished, so nothing redoes it: its figures are missing from status and the "
                 "report" if state.status == "finished" else "`deft resume` redoes that stage")
        for what in damaged:
            self._note(f"{what} is damaged: skipped; {after}")
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
        """Every readable line; a torn or binary line is skipped (and noted), never a decode error."""
        path = self.run.log_file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._note(f"{path.name} is unreadable ({exc.strerror}): no stage history shown")
            return []
        entries = []
        skipped = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                entries.append(LogEntry.model_validate_json(line.decode("utf-8")))
            except (ValidationError, ValueError):
                skipped.append(number)
        if skipped:
            shown = ", ".join(map(str, skipped[:5])) + (" …" if len(skipped) > 5 else "")
            self._note(f"{path.name}: {len(skipped)} unreadable line(s) skipped (line {shown})")
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


def _reroot(value: Any, old: str, new: str) -> Any:
    """`value` with every mention of the path `old` (itself, or a path under it, also inside a text such as a
    pre-flight row's detail) naming `new` instead; a sibling that only shares the prefix (`old`2) is not one."""
    if not old:
        return value  # a workspace at "/": every path is under it, nothing to tell apart
    mention = re.compile(re.escape(old) + r"(?=/|(?![\w.\-]))")
    return _sub(value, mention, new)


def _sub(value: Any, mention: re.Pattern[str], new: str) -> Any:
    if isinstance(value, str):
        return mention.sub(lambda _: new, value)
    if isinstance(value, dict):
        return {k: _sub(v, mention, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub(v, mention, new) for v in value]
    return value


def _read_stage_record(path: Path) -> dict[str, Any] | None:
    """A committed stage's record, or None when it is not one (torn, binary, or missing its keys)."""
    try:
        rec = loads_json(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    required = ("iteration", "stage", "started_at")
    if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in required):
        return None
    return rec


def write_stage_record(directory: Path, record: dict[str, Any]) -> None:
    atomic_write_text(directory / STAGE_RECORD_FILE, json.dumps(record, indent=2, default=str) + "\n")
