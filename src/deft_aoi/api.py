"""The front door: one `Loop` object that pre-flights, starts, resumes, reports and shows a run, and the two
verbs that work without a run (`mine`, `kpi`). The CLI only parses arguments and calls them; the benches call
them too (`with_stage` swaps a stage for an experiment).

It sits above loop/, report/ and preflight/, so none of those has to import another one sideways or upwards
(the loop renders its report after each iteration through the hook this module gives the engine).

    loop = Loop("~/workspace", backend="local", max_iterations=2)
    report, config = loop.preflight()
    state = loop.start(report)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.config import SETTINGS, KpiTarget, LoopConfig, resolve_config
from deft_aoi.console import say
from deft_aoi.errors import DeftError, UsageError
from deft_aoi.io_utils import output_dir
from deft_aoi.mining.api import MineRequest, MiningResult
from deft_aoi.mining.api import mine as run_mining
from deft_aoi.mining.data_services import DataServicesAccess
from deft_aoi.mining.inputs import Lights, check_images_exist, default_images_dir, find_workspace_spec, load_table
from deft_aoi.mining.params import MineConfig
from deft_aoi.runners.factory import capabilities, make_runner
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.runners.tao.outputs import read_inference_csv
from deft_aoi.runners.tao.versions import load_versions
from deft_aoi.secrets import SECRET_NAMES, load_env_file
from deft_aoi.workspace.layout import WorkspaceLayout

if TYPE_CHECKING:
    from deft_aoi.analysis.kpi import KpiReport
    from deft_aoi.loop.stage_contract import Stage
    from deft_aoi.loop.state import RunState
    from deft_aoi.preflight.checks import PreflightReport
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import RunLayout


class Loop:
    """A workspace and the settings given for it (setting name → value; None or absent = not given, so the
    spec or the declared default applies: config.LoopConfig declares every setting)."""

    def __init__(self, workspace: Path | str, *, stages: dict[str, Stage] | None = None,
                 render_report: bool = True, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown loop setting(s): {', '.join(unknown)}")
        self.workspace = Path(workspace).expanduser()
        self.settings: dict[str, Any] = dict(settings)
        self.stages: dict[str, Stage] = dict(stages or {})  # replacements by stage name (experiments)
        self.render_report = render_report
        self.run: RunLayout | None = None  # the run the last start()/resume() worked on, however it ended

    @property
    def layout(self) -> WorkspaceLayout:
        return WorkspaceLayout.at(self.workspace)

    def with_stage(self, stage: Stage) -> Loop:
        """The same loop with `stage` in place of the built-in stage of the same name."""
        return Loop(self.workspace, stages={**self.stages, stage.name: stage}, render_report=self.render_report,
                    **self.settings)

    # ------------------------------------------------------------------ configuration and pre-flight

    def spec(self) -> ChangeNetSpec | None:
        """The workspace's spec if it parses; pre-flight reports its problem as a failed check otherwise."""
        try:
            return load_spec(self.layout.spec_file)
        except DeftError:
            return None

    def config(self, spec: ChangeNetSpec | None = None) -> LoopConfig:
        """Given settings beat the spec's values, which beat the declared defaults."""
        spec = spec or self.spec()
        spec_values = {name: getattr(spec, s.spec) for name, s in SETTINGS.items() if s.spec and spec is not None}
        from deft_aoi.runners.factory import check_settings

        config = resolve_config(self.settings, spec_values)
        check_settings(config)
        return config

    def preflight(self, *, deep: bool = False, backend_checks: bool = True) -> tuple[PreflightReport, LoopConfig]:
        """Every check, with the resolved config (backend_checks=False: skip the backend's own checks)."""
        from deft_aoi.loop.session import runner_factory
        from deft_aoi.preflight.checks import run_preflight

        config = self.config()
        factory = runner_factory(config.backend.value, self.layout, config) if backend_checks else None
        return run_preflight(self.layout.root, config=config, runner_factory=factory, deep=deep), config

    # ------------------------------------------------------------------ running

    def start(self, report: PreflightReport | None = None, config: LoopConfig | None = None, *,
              detach: bool = False) -> RunState:
        """A new run from a ready pre-flight (run now when not given), to the end of the loop (detach: until the
        first backend job is submitted, which runs on; `resume` re-attaches to it)."""
        from deft_aoi.loop.session import execute, start_run, workspace_lock

        if report is None or config is None:
            report, config = self.preflight()
        spec = report.require_ready()
        with workspace_lock(self.layout):
            run = start_run(self.layout, spec, config, report)
            self.run = run
            with self._report_at_end(run):
                return execute(self.layout, run, spec, config, resume=False, stages=self._stages(),
                               after_iteration=self._after_iteration(run), detach=detach)

    def resume(self, run: str | None = None, *, detach: bool = False) -> RunState:
        """Continue a run (default: the latest unfinished) with the config it was started with (detach: as in
        `start`)."""
        from deft_aoi.loop.runs import find_run
        from deft_aoi.loop.session import config_from_state, execute, workspace_lock
        from deft_aoi.loop.store import StateStore

        with workspace_lock(self.layout):
            run_layout = find_run(self.layout, run, unfinished=run is None)
            config = config_from_state(StateStore(run_layout).load())
            spec = load_spec(self.layout.spec_file)
            self.run = run_layout
            with self._report_at_end(run_layout):
                return execute(self.layout, run_layout, spec, config, resume=True, stages=self._stages(),
                               after_iteration=self._after_iteration(run_layout), detach=detach)

    def _stages(self) -> dict[str, Stage]:
        from deft_aoi.loop.stages import build_stages

        return {**build_stages(), **self.stages}

    def _after_iteration(self, run: RunLayout) -> Callable[[RunState], None] | None:
        if not self.render_report:
            return None
        return lambda _state: self._render(run)

    @contextlib.contextmanager
    def _report_at_end(self, run: RunLayout) -> Iterator[None]:
        """Render the report however the loop ends (KPI met, max iterations, hard stop, failed stage, Ctrl-C):
        NVIDIA's recipe renders at loop end whatever ended it, and a stale report would still say "running".
        A run the loop never touched (a refused resume) is left as it was: earlier runs are never modified."""
        before = _stamp(run.state_file)
        try:
            yield
        finally:
            if self.render_report and _stamp(run.state_file) != before:
                self._render(run)

    @staticmethod
    def _render(run: RunLayout) -> None:
        try:
            from deft_aoi.report.render import render_report

            render_report(run.root)
        except Exception as exc:  # the report must never take the loop down, nor hide how the run ended
            say(f"warning: report not rendered: {exc}")

    # ------------------------------------------------------------------ reading runs

    def find(self, run: str | Path | None = None) -> RunLayout:
        """A run by id or path (default: the latest)."""
        from deft_aoi.loop.runs import find_run

        return find_run(self.layout, None if run is None else str(run))

    def status(self, run: str | Path | None = None) -> dict[str, Any]:
        """Where a run stands (`deft status --json`'s document)."""
        from deft_aoi.loop.status_view import status_document

        return status_document(self.find(run))

    def report(self, run: str | Path | None = None) -> Path:
        """Render the run's DEFT_Loop_Report.html from disk; returns its path (`*.incomplete.html` beside it
        when the records now give a worse page than the one there: that one is kept)."""
        from deft_aoi.report.render import render_report

        return render_report(self.find(run).root, keep_better=True)


@dataclass(frozen=True)
class Mined:
    """A `mine` call's result: where its outputs went, and what mining gave back."""

    out_dir: Path
    result: MiningResult


def mine(targets: Path, pool: Path, out: Path, settings: LoopConfig | Mapping[str, Any], *,
         workspace: Path | None = None, spec: Path | None = None, targets_images_dir: Path | None = None,
         cache_dir: Path | None = None, **options: Any) -> Mined:
    """Mine `pool` for the nearest neighbours of each of `targets`, outside a run (`deft mine`). The mining
    settings are the loop's own (a typed `LoopConfig`, or setting name → value resolved into one, refused
    naming the flag when bad); `options` are mining's own (mining.params.MineConfig: metric, ds_model,
    filter_by_label, …). Outputs go to OUT/mining_results/<TS>/."""
    from pydantic import ValidationError

    config = settings if isinstance(settings, LoopConfig) else resolve_config(dict(settings))
    try:
        params = MineConfig.from_loop_config(config, in_run=False, **options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid mining option(s): {problems}") from exc
    output_dir(out)  # refused before the pool is read and embedded, not after
    ws = WorkspaceLayout.at(workspace) if workspace else None
    spec_path = spec or (ws.spec_file if ws else None) or find_workspace_spec(pool) or find_workspace_spec(targets)
    lights = None
    if spec_path is not None:
        parsed = load_spec(spec_path)
        lights = Lights(parsed.lights[0], parsed.image_ext)
    t_table = load_table(targets, lights=lights, what="targets",
                         images_dir=targets_images_dir or default_images_dir(targets, ws))
    p_table = load_table(pool, lights=lights, what="pool", images_dir=default_images_dir(pool, ws))
    check_images_exist(t_table, "targets")
    check_images_exist(p_table, "pool")
    cache_root = cache_dir or (ws.embedding_cache if ws else out / ".deft_cache" / "embeddings")
    engine = config.mining_engine.value
    access = _data_services_access(ws, config.backend.value, out) if engine == "data_services" else None
    run_dir = _new_run_dir(out / "mining_results")
    try:
        result = run_mining(MineRequest(t_table, p_table, params, run_dir, cache_root=cache_root), engine=engine,
                            data_services=access)
    except BaseException:
        if not any(run_dir.iterdir()):  # a failed run leaves no empty timestamped dir behind
            run_dir.rmdir()
        raise
    return Mined(run_dir, result)


def _data_services_access(ws: WorkspaceLayout | None, backend: str, out: Path) -> DataServicesAccess:
    """Containers for `--mining-engine data_services`: they mount the workspace (at the same path), so it, and
    OUT inside it, must be given; the image from its versions.yaml, only the known secrets from its .env."""

    if ws is None:
        raise UsageError("--mining-engine data_services needs --workspace: its containers see only the workspace")
    if not capabilities(backend).containers:
        raise UsageError("--mining-engine data_services runs TAO Data Services containers: pass --backend docker "
                         "(or slurm, fake)")
    if not out.absolute().resolve().is_relative_to(ws.root):
        raise UsageError(f"--out {out} is outside the workspace {ws.root}; the containers write only inside it")
    env = {k: v for k, v in load_env_file(ws.env_file).items() if k in SECRET_NAMES}
    return DataServicesAccess(runner=make_runner(backend, ws), workspace=ws, image=load_versions(ws).data_services,
                              env=env, say=say)


def _new_run_dir(parent: Path) -> Path:
    """`parent/<YYYYMMDD_HHMMSS>`, suffixed when two runs start in the same second; never reuses a dir."""
    from datetime import datetime

    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    output_dir(parent)
    for n in range(1000):
        candidate = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a fresh run dir under {parent}")


def kpi(inference_csv: Path, target: KpiTarget | str, out_dir: Path | None = None) -> KpiReport:
    """The KPI of one inference CSV, outside a run (`deft kpi`): FAR at the recall constraint, the threshold,
    best F1; with `out_dir`, also metrics.json/.csv, confusion.json and the SVG plots written there."""
    from deft_aoi.analysis.kpi import evaluate_scores, write_evaluation

    target = KpiTarget.parse(target) if isinstance(target, str) else target
    if out_dir is not None:
        output_dir(out_dir)  # refused before any work, not after
    df = read_inference_csv(inference_csv)
    report = evaluate_scores(df, target)
    if out_dir is not None:
        write_evaluation(report, df, out_dir)
    return report


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size
