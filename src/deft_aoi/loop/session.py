"""Starting, finding and resuming runs: everything between the CLI and the engine."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.errors import DeftError, InputError, UsageError
from deft_aoi.io_utils import sha256_file
from deft_aoi.loop.artefacts import changed_outputs, hash_artefacts, link_checkpoint
from deft_aoi.loop.engine import Engine, new_run_id
from deft_aoi.loop.stage_contract import LoopServices
from deft_aoi.loop.state import RunConfigRecord, RunState, utc_now
from deft_aoi.loop.store import StateStore
from deft_aoi.runners.factory import capabilities
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS, artefact, stage_dir
from deft_aoi.workspace.iterations import BASELINE
from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.loop.stage_contract import Stage
    from deft_aoi.preflight.checks import PreflightReport
    from deft_aoi.runners.base import Runner
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec


def input_hashes(ws: WorkspaceLayout) -> dict[str, str]:
    """What a resumed run must find unchanged (the mining pool may grow by design, so it is not here)."""
    files = {"spec": ws.spec_file, "training_csv": ws.train_csv, "validation_csv": ws.validation_csv,
             "kpi_csv": ws.kpi_csv}
    return {name: sha256_file(path) for name, path in files.items() if path.is_file()}


def runner_factory(backend: str, ws: WorkspaceLayout, config: LoopConfig | None = None) -> Callable[[], Runner]:
    """`config`: the run's settings the runner reads (--gpus, the Slurm flags)."""

    def make() -> Runner:
        from deft_aoi.runners.factory import make_runner

        return make_runner(backend, ws, config)

    return make


def start_run(ws: WorkspaceLayout, spec: ChangeNetSpec, config: LoopConfig, report: PreflightReport) -> RunLayout:
    """Create results/run_<TS>/ with its start record and first state. Earlier runs are never touched."""
    ws.results_root.mkdir(parents=True, exist_ok=True)
    run = RunLayout(ws.results_root / new_run_id(ws.results_root))
    run.root.mkdir()
    record = RunConfigRecord(
        specs_file=str(ws.spec_file),
        train_csv=str(ws.train_csv),
        validation_csv=str(ws.validation_csv),
        kpi_csv=str(ws.kpi_csv),
        images_dir=str(ws.kpi_images),
        train_container=_train_container(ws, config.backend.value),
        pool_hygiene=_record_hygiene(report, run),
        settings=config,
    )
    state = RunState(
        run_id=run.run_id,
        started_at=utc_now(),
        workspace=str(ws.root),
        results_dir=str(run.root),
        config=record,
        input_hashes=input_hashes(ws),
        preflight=[c.model_dump() for c in report.checks],
    )
    store = StateStore(run)
    store.write_initial(state)
    if config.baseline_checkpoint.value:
        _seed_baseline(store, state, Path(config.baseline_checkpoint.value))
    return run


def _record_hygiene(report: PreflightReport, run: RunLayout) -> dict[str, Any] | None:
    """Write the run's pool exclusion list (the mine stage filters the pool with it) and describe it."""
    from deft_aoi.preflight.hygiene import write_findings

    result = report.hygiene
    if result is None:
        return None
    write_findings(result, run.pool_exclusions)
    return {**result.config(), "exclusions_file": run.pool_exclusions.name, "excluded_rows": len(result.exclusions),
            "counts": result.counts(), "same_board": {k: v for k, v in result.same_board.items() if k != "boards"}}


def _train_container(ws: WorkspaceLayout, backend: str) -> str:
    if capabilities(backend).in_process:
        return "local (in-process PyTorch)"
    try:
        from deft_aoi.runners.tao.versions import load_versions

        return load_versions(ws).pyt
    except DeftError:
        return "unknown"


def _seed_baseline(store: StateStore, state: RunState, checkpoint: Path) -> None:
    """`--baseline-checkpoint`: the baseline's train stage is committed as done with that checkpoint as every
    checkpoint kind (the catalog's links to it, hashed: resume refuses once it changed), through the engine's own
    commit protocol."""
    from deft_aoi.loop.commit import commit_stage, stage_record

    checkpoint = checkpoint.expanduser().resolve()
    if not checkpoint.is_file():
        raise InputError("baseline checkpoint not found", file=checkpoint)
    now = utc_now()
    output_dir = stage_dir("train", BASELINE)
    directory = store.run.root / output_dir
    links = {key: artefact(key).at(directory) for key in CHECKPOINT_KEYS}
    for link in links.values():
        link_checkpoint(link, checkpoint, relative_under=Path(state.workspace))
    record = stage_record(
        iteration=BASELINE, stage="train", started_at=now, ended_at=now, duration_sec=0.0,
        summary=f"seeded from {checkpoint}", output_dir=output_dir, workspace=state.workspace,
        outputs=hash_artefacts(links, store.run.root),
    )
    commit_stage(store, state, record, staged=directory, final=directory)


def check_resumable(state: RunState, ws: WorkspaceLayout, run: RunLayout) -> None:
    if state.status == "finished":
        raise UsageError(f"run {state.run_id} already finished ({state.stop_reason}); start a new one with `deft run`")
    if state.failure and state.failure.hard_stop:
        raise DeftError(
            f"run {state.run_id} stopped on a hard stop ({state.failure.kind}): {state.failure.message}",
            hint=(state.failure.fix or "fix the cause") + " — hard stops are never resumed",
        )
    current = input_hashes(ws)
    changed = [name for name, digest in current.items() if state.input_hashes.get(name) != digest]
    changed += [name for name in state.input_hashes if name not in current]
    changed += changed_outputs(run, state)  # a committed stage is trusted only while its outputs hash as recorded
    if changed:
        raise DeftError(
            f"cannot resume {state.run_id}: changed since the run started: {', '.join(sorted(set(changed)))}",
            hint="restore those files, or start a new run with `deft run` (the mining pool may grow; nothing else)",
        )


def services_for(ws: WorkspaceLayout, run: RunLayout, spec: ChangeNetSpec, config: LoopConfig) -> LoopServices:
    from deft_aoi.console import say

    return LoopServices(workspace=ws, run=run, spec=spec, config=config, kpi=config.kpi_target,
                        runner_factory=runner_factory(config.backend.value, ws, config), say=say)


def config_from_state(state: RunState) -> LoopConfig:
    """The typed config a run started with, as saved (resume never re-resolves it), re-checked across
    settings in case the rules tightened since."""
    from deft_aoi.config import validate_config
    from deft_aoi.runners.factory import check_settings

    validate_config(state.config.settings)
    check_settings(state.config.settings)
    return state.config.settings


def workspace_lock(ws: WorkspaceLayout) -> AbstractContextManager[None]:
    """One loop per workspace at a time: runs share the embedding cache and the GPU."""
    from deft_aoi.loop.lock import exclusive_lock

    return exclusive_lock(ws.workspace_lock, f"workspace {ws.root}")


def execute(ws: WorkspaceLayout, run: RunLayout, spec: ChangeNetSpec, config: LoopConfig, *, resume: bool,
            stages: dict[str, Stage] | None = None,
            after_iteration: Callable[[RunState], None] | None = None, detach: bool = False) -> RunState:
    """Run (or resume) the loop under the run's lock until it stops (callers hold the workspace lock).

    stages: the stage graph's stages by name (default: the built-in ones); after_iteration: called after each
    iteration (the front door renders the report there; loop/ does not import report/); detach: return once the
    next backend job is submitted and recorded, leaving it running (durable backends; `resume` re-attaches)."""
    from deft_aoi.loop.lock import exclusive_lock
    from deft_aoi.loop.stages import build_stages

    if detach and not capabilities(config.backend.value).durable:
        raise UsageError(f"--detach needs a backend whose jobs outlive deft (docker, slurm); --backend "
                         f"{config.backend.value} runs them inside deft")
    store = StateStore(run)
    with exclusive_lock(run.lock_file, f"run {run.run_id}"):
        state = store.load()
        services = services_for(ws, run, spec, config)
        engine = Engine(services, stages if stages is not None else build_stages(), store,
                        after_iteration=after_iteration, detach=detach)
        if resume:
            check_resumable(state, ws, run)
        try:
            state = engine.reconcile(state)
            return engine.run(state)
        except OSError as exc:  # a write outside any stage (reconcile, marking a stage started)
            from deft_aoi.errors import disk_error

            problem = disk_error(exc, where=run.root)  # a failed write() names no file: name the run's dir
            if problem is None:
                raise
            raise problem from None
