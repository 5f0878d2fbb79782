"""Which run a command means: the ONE resolver behind `status`, `resume` and `report`.

`--run` is a run id (looked up under the workspace's results/) or a path to a run dir; without it, the
workspace's latest run. Finding nothing to act on is a usage error (exit 2) with the same message from
every command.
"""

from __future__ import annotations

from pathlib import Path

from deft_aoi.errors import UsageError
from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout

RUN_PREFIX = "run_"
NO_RUN = "no deft run here (expected results/run_<YYYYMMDD_HHMMSS>/)"
NO_RUN_HINT = "start one with `deft run`, or pass --run RUN_ID|PATH"


def is_run_dir(path: Path) -> bool:
    """A run dir holds its start record or its state. A run killed before its start record landed holds
    neither, and nothing to show or resume."""
    from deft_aoi.loop.store import RUN_CONFIG_FILE

    run = RunLayout(path)
    return (path / RUN_CONFIG_FILE).is_file() or run.state_file.is_file()


def list_runs(ws: WorkspaceLayout) -> list[RunLayout]:
    """The workspace's runs, oldest first (the timestamp in `run_<YYYYMMDD_HHMMSS>` sorts chronologically)."""
    if not ws.results_root.is_dir():
        return []
    runs = [RunLayout(p) for p in ws.results_root.iterdir()
            if p.name.startswith(RUN_PREFIX) and p.is_dir() and is_run_dir(p)]
    return sorted(runs, key=lambda r: r.run_id)


def find_run(ws: WorkspaceLayout, run: str | None, *, unfinished: bool = False) -> RunLayout:
    """The run `--run` names, else the latest (the latest unfinished one with `unfinished`)."""
    if run is not None and run.strip():
        return _named_run(ws, run.strip())
    runs = list_runs(ws)
    if not runs:
        raise UsageError(NO_RUN, file=ws.results_root, hint=NO_RUN_HINT)
    if unfinished:
        from deft_aoi.loop.store import StateStore

        open_runs = [r for r in runs if StateStore(r).load().status != "finished"]
        if not open_runs:
            raise UsageError(f"no unfinished run to resume: the latest, {runs[-1].run_id}, has finished",
                             file=ws.results_root, hint="start a new one with `deft run`")
        return open_runs[-1]
    return runs[-1]


def _named_run(ws: WorkspaceLayout, run: str) -> RunLayout:
    candidate = Path(run).expanduser()
    path = candidate if candidate.is_absolute() or candidate.exists() else ws.results_root / run
    if not path.is_dir():
        raise UsageError(f"run {run!r} not found: neither a run directory nor a run id under {ws.results_root}",
                         hint=NO_RUN_HINT)
    if not is_run_dir(path):
        from deft_aoi.loop.store import RUN_CONFIG_FILE

        raise UsageError(f"{path}: not a deft run directory (neither {RUN_CONFIG_FILE} nor "
                         f"{RunLayout(path).state_file.name})", hint=NO_RUN_HINT)
    return RunLayout(path.resolve())
