"""Which run a command means: `--run` as a run id or a path, else the workspace's latest run."""

from __future__ import annotations

from pathlib import Path

from deft_aoi.errors import InputError
from deft_aoi.workspace.layout import WorkspaceLayout

RUN_GLOB = "run_*"


def latest_run(workspace: Path) -> Path:
    """The newest `results/run_<YYYYMMDD_HHMMSS>/`; the timestamp in the name sorts chronologically."""
    results = WorkspaceLayout.at(workspace).results_root
    runs = sorted(p for p in results.glob(RUN_GLOB) if p.is_dir()) if results.is_dir() else []
    if not runs:
        raise InputError("no run found (expected results/run_<YYYYMMDD_HHMMSS>/)", file=results,
                         hint="start one with `deft run`, or pass --run PATH")
    return runs[-1]


def resolve_run_dir(workspace: Path, run: str | None) -> Path:
    """`run` may be a run id (`run_20250101_120000`, looked up under the workspace's results/) or a path
    to a run dir; None means the latest run of the workspace."""
    if run is None or not run.strip():
        return latest_run(workspace)
    as_path = Path(run).expanduser()
    if as_path.is_dir():
        return as_path.resolve()
    by_id = WorkspaceLayout.at(workspace).results_root / run
    if by_id.is_dir():
        return by_id
    raise InputError(f"run {run!r} not found (neither a directory nor a run id)", file=by_id)
