"""The front door: one `Loop` object that pre-flights, starts, resumes, reports and shows a run. The CLI only
parses arguments and calls it; the benches call it too (`with_stage` swaps a stage for an experiment).

It sits above loop/, report/ and preflight/, so none of those has to import another one sideways or upwards
(the loop renders its report after each iteration through the hook this module gives the engine).

    loop = Loop("~/workspace", backend="local", max_iterations=2)
    report, config = loop.preflight()
    state = loop.start(report)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.errors import DeftError

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.loop.stage_contract import Stage
    from deft_aoi.loop.state import RunState
    from deft_aoi.preflight.checks import PreflightReport
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout


class Loop:
    """A workspace and the settings given for it (setting name → value; None or absent = not given, so the
    spec or the declared default applies: config.LoopConfig declares every setting)."""

    def __init__(self, workspace: Path | str, *, stages: dict[str, Stage] | None = None,
                 render_report: bool = True, **settings: Any) -> None:
        from deft_aoi.config import SETTINGS

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
        from deft_aoi.workspace.layout import WorkspaceLayout

        return WorkspaceLayout.at(self.workspace)

    def with_stage(self, stage: Stage) -> Loop:
        """The same loop with `stage` in place of the built-in stage of the same name."""
        return Loop(self.workspace, stages={**self.stages, stage.name: stage}, render_report=self.render_report,
                    **self.settings)

    # ------------------------------------------------------------------ configuration and pre-flight

    def spec(self) -> ChangeNetSpec | None:
        """The workspace's spec if it parses; pre-flight reports its problem as a failed check otherwise."""
        from deft_aoi.runners.tao.changenet_spec import load_spec

        try:
            return load_spec(self.layout.spec_file)
        except DeftError:
            return None

    def config(self, spec: ChangeNetSpec | None = None) -> LoopConfig:
        """Given settings beat the spec's values, which beat the declared defaults."""
        from deft_aoi.config import SETTINGS, resolve_config

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
        from deft_aoi.runners.tao.changenet_spec import load_spec

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
        from deft_aoi.console import say

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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size
