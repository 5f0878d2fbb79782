"""Read one run dir into a ReportView. Only `deft_state.json` is required: every other file is optional,
and one that is absent or unreadable leaves its section showing "—" (unreadable ones are listed in
`notes`), because the report is rendered after every iteration, including mid-run and after a crash."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.bounded import loads_json
from deft_aoi.errors import DeftError, InputError
from deft_aoi.loop import status_view
from deft_aoi.loop.artefacts import chosen_inference_csv, find, training_csv
from deft_aoi.loop.state import IterationState, LogEntry, RunState, utc_now
from deft_aoi.report import sections
from deft_aoi.report.model import Confusion, Header, PoolHygieneView, RegressionView, ReportView, ValidationView
from deft_aoi.report.thumbnails import ThumbnailCache
from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout
from deft_aoi.workspace.stored_paths import resolve_frame

if TYPE_CHECKING:
    import pandas as pd

# Caps keep the page small (a few hundred kB) however large the KPI set or the mined set grows.
WEAK_LIMIT = 12
MINED_LIMIT = 8
REGRESSION_GROUPS = 10
REGRESSION_EXAMPLES = 4
SUSPECT_LIMIT = 8


class _Reader:
    """File access relative to one run, through the run catalog; failures become notes instead of exceptions."""

    def __init__(self, run_root: Path, workspace: Path, state: RunState) -> None:
        self.root = run_root
        self.run = RunLayout(run_root)
        self.state = state
        self.workspace = workspace
        self.notes: list[str] = []

    def artefact(self, key: str, it: IterationState, *, committed_only: bool = True) -> Path | None:
        """Catalog artefact `key` as written in iteration `it` (None when its stage has not written it)."""
        return find(self.run, self.state, key, it.name, walk_back=False, committed_only=committed_only)

    def where(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def json(self, path: Path | None) -> dict[str, Any] | None:
        if path is None or not path.is_file():
            return None
        try:
            data = loads_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.notes.append(f"{self.where(path)}: not readable as JSON ({exc})")
            return None
        if not isinstance(data, dict):
            self.notes.append(f"{self.where(path)}: expected a JSON object")
            return None
        return data

    def table(self, path: Path | None, columns: tuple[str, ...]) -> pd.DataFrame | None:
        """A parquet or CSV that must carry `columns`; None (with a note) when it does not."""
        if path is None or not path.is_file():
            return None
        import pandas as pd

        try:
            if path.suffix == ".parquet":
                df = pd.read_parquet(path)
            else:
                df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:  # pyarrow and the CSV parser raise many types; any of them means "unreadable"
            self.notes.append(f"{self.where(path)}: could not be read ({type(exc).__name__}: {exc})")
            return None
        missing = [c for c in columns if c not in df.columns]
        if missing:
            self.notes.append(f"{self.where(path)}: missing column(s) {', '.join(missing)}")
            return None
        # Image paths are stored workspace-relative: resolved where the workspace is now (it may have moved).
        return resolve_frame(df, self.workspace)


def load_run(run_root: Path) -> tuple[RunState, list[LogEntry], list[str]]:
    """The state (rebuilt from the run's records if the state file is damaged), the stage log, and notes on
    what could not be read (skipped log lines, damaged stage records)."""
    from deft_aoi.loop.store import StateStore

    run_root = Path(run_root)
    if not run_root.is_dir():
        raise InputError("run directory not found", file=run_root)
    store = StateStore(RunLayout(run_root))
    try:
        state = store.load()
    except DeftError as exc:
        raise InputError(f"not a deft run: {exc.message}", file=RunLayout(run_root).state_file) from exc
    log = store.read_log()
    return state, log, list(store.notes)


def inference_csv(reader: _Reader, it: IterationState) -> Path | None:
    return chosen_inference_csv(reader.run, reader.state, it)


def kpi_report(reader: _Reader, it: IterationState) -> dict[str, Any] | None:
    return it.kpi_report or reader.json(reader.artefact("evaluate.metrics", it))


def _header(state: RunState, focus: IterationState | None, kpi: dict[str, Any] | None) -> Header:
    target = state.kpi
    unreachable = None
    if kpi and kpi.get("reachable") is False:
        unreachable = str(kpi.get("unreachable_reason") or "no threshold meets the recall constraint")
    far = None if focus is None else sections.finite(focus.far_pct)
    recall = None if focus is None else sections.finite(focus.recall_pct)
    return Header(
        workspace=state.workspace,
        run_id=state.run_id,
        backend=state.config.backend,
        kpi_target=state.kpi_target,
        run_status=state.status,
        stop_reason=state.stop_reason,
        ended=status_view.end_words(state),
        status_words=sections.status_words(far, recall, target, unreachable=unreachable),
        best_iteration=state.best_iteration,
        best_far_pct=far if focus is not None and focus.name == state.best_iteration else None,
        current_iteration=state.current_iteration,
        max_iterations=state.max_iterations,
        started_at=state.started_at,
        finished_at=state.finished_at,
        updated_at=state.updated_at,
    )


def _scores(view: ReportView, reader: _Reader, focus: IterationState, kpi: dict[str, Any] | None) -> None:
    from deft_aoi.analysis.plots import far_recall_svg, score_histogram_svg

    threshold = sections.finite(focus.threshold)
    if threshold is None and kpi:
        threshold = sections.finite(kpi.get("threshold"))
    view.confusion = sections.confusion_from_report(kpi) or Confusion(threshold=threshold)
    path = inference_csv(reader, focus)
    df = reader.table(path, ("label", "siamese_score"))
    if df is None or path is None:
        return
    scored = sections.defect_and_scores(df)
    if isinstance(scored, str):
        reader.notes.append(f"{reader.where(path)}: {scored}")
        return
    from deft_aoi.analysis.kpi import threshold_sweep

    is_defect, scores = scored
    view.label_scores = sections.label_scores(df, threshold)
    view.score_svg = score_histogram_svg(df, threshold)
    view.far_recall_svg = far_recall_svg(threshold_sweep(is_defect, scores))
    if view.confusion.tp is None:
        view.confusion = sections.confusion_from_scores(df, threshold)


def _rca(
    view: ReportView, reader: _Reader, state: RunState, focus: IterationState | None, thumbs: ThumbnailCache
) -> None:
    ordered = state.ordered_iterations()
    candidates = ([focus] if focus is not None else []) + list(reversed(ordered))
    for it in candidates:
        df = reader.table(reader.artefact("rca.kpi_gaps", it), ("filepath",))
        if df is None:
            continue
        view.weak_iteration = it.name
        view.weak_total = len(df)
        view.weak_misclassified = len(sections.misclassified(df))
        view.weak_samples = sections.weak_cards(df, thumbs, WEAK_LIMIT)
        return


def _mined(view: ReportView, reader: _Reader, state: RunState, thumbs: ThumbnailCache) -> None:
    for it in reversed(state.ordered_iterations()):
        df = reader.table(reader.artefact("mine.rows", it), ("filepath",))
        if df is None:
            continue
        view.mined_iteration = it.name
        view.mined_total = len(df)
        view.mined_pairs = sections.mined_pairs(df, thumbs, MINED_LIMIT)
        return


def _frame_at(reader: _Reader, it: IterationState) -> tuple[pd.DataFrame | None, float | None]:
    path = inference_csv(reader, it)
    return reader.table(path, ("label", "siamese_score")), sections.finite(it.threshold)


def _regressions(reader: _Reader, state: RunState, thumbs: ThumbnailCache) -> list[RegressionView]:
    """Every iteration whose FAR@recall100 rose over the previous measured one: the per-label change and
    the rows it added (source, label, the target that pulled them in), so it explains itself."""
    from deft_aoi.analysis.kpi import significance_words

    out: list[RegressionView] = []
    measured = [it for it in state.ordered_iterations() if sections.finite(it.far_pct) is not None]
    for prev, it in pairwise(measured):
        if (it.far_pct or 0.0) <= (prev.far_pct or 0.0):
            continue
        view = RegressionView(
            iteration=it.name, previous=prev.name, far_before=prev.far_pct, far_after=it.far_pct,
            significance=significance_words(*(((r or {}).get("far_ci_low_pct"), (r or {}).get("far_ci_high_pct"))
                                              for r in (prev.kpi_report, it.kpi_report))),
            set_by_before=sections.setter_words(prev.kpi_report), set_by_after=sections.setter_words(it.kpi_report),
        )
        (before, thr_b), (after, thr_a) = _frame_at(reader, prev), _frame_at(reader, it)
        if before is not None and after is not None:
            view.label_changes = sections.label_changes(sections.label_scores(before, thr_b),
                                                        sections.label_scores(after, thr_a))
        mined = reader.table(reader.artefact("mine.rows", it), ("label",))
        if mined is not None:
            view.added_total = len(mined)
            view.added = sections.added_groups(mined)[:REGRESSION_GROUPS]
            if "filepath" in mined.columns:
                view.examples = sections.mined_pairs(mined, thumbs, REGRESSION_EXAMPLES)
        out.append(view)
    return out


def _suspects(view: ReportView, reader: _Reader, focus: IterationState | None, thumbs: ThumbnailCache) -> None:
    """The focus iteration's suspect labels: KPI rows the model AND their neighbours disagree with, and the
    same for its training rows when RCA scored the training CSV (`training_scores`)."""
    from deft_aoi.analysis.suspects import KPI_SET, TRAINING_SET

    if focus is None or "rca" not in focus.stages:
        return
    df = reader.table(reader.artefact("rca.suspects", focus),
                      ("row", "label", "score", "sets_threshold"))
    if df is None:
        return
    in_set = df["set"].astype(str) if "set" in df.columns else None  # runs before training rows were checked
    kpi = df if in_set is None else df[in_set == KPI_SET]
    view.suspect_iteration, view.suspect_total = focus.name, len(kpi)
    view.suspect_samples = sections.suspect_cards(kpi, thumbs, SUSPECT_LIMIT)
    setters = kpi[kpi["sets_threshold"].astype(bool)]
    if len(setters):
        view.suspect_sets_threshold = f"row {int(setters['row'].to_numpy()[0])} ({setters['label'].iat[0]})"
    scored = reader.artefact("rca.training_scores", focus)
    if in_set is not None and scored is not None and scored.is_file():
        training = df[in_set == TRAINING_SET]
        view.suspect_training_total = len(training)
        view.suspect_training_samples = sections.suspect_cards(training, thumbs, SUSPECT_LIMIT)
        view.suspect_training_rows = focus.counts.training_rows
        csv = training_csv(WorkspaceLayout.at(reader.workspace), reader.run, reader.state, focus.name)  # RCA scored it
        view.suspect_training_csv = None if csv is None else csv.name


def _validations(reader: _Reader, state: RunState) -> list[ValidationView]:
    out = []
    for it in state.ordered_iterations():
        for key, which in (
            ("mine.validation", "mined rows (mid-iteration)"),
            ("validate.report", "assembled training CSV"),
        ):  # a hard stop keeps the failed stage's report, uncommitted: show it
            data = reader.json(reader.artefact(key, it, committed_only=False))
            if data is not None:
                out.append(sections.validation_view(data, it.name, which))
    return out


EXCLUDED_LIMIT = 20


def _pool_hygiene(reader: _Reader, state: RunState) -> PoolHygieneView | None:
    path = RunLayout(reader.root).pool_exclusions
    exclusions = reader.table(path, ("source", "kind")) if path.is_file() else None
    return sections.pool_hygiene_view(state.config.pool_hygiene, exclusions, EXCLUDED_LIMIT,
                                      path.name if path.is_file() else None)


def collect(run_root: Path) -> ReportView:
    """Everything the report shows, read from `run_root` (a `results/run_<TS>/` dir)."""
    run_root = Path(run_root)
    state, log, store_notes = load_run(run_root)
    reader = _Reader(run_root, Path(state.workspace), state)
    reader.notes.extend(store_notes)
    thumbs = ThumbnailCache()
    focus = sections.headline_iteration(state)
    kpi = None if focus is None else kpi_report(reader, focus)
    target = state.kpi

    view = ReportView(
        header=_header(state, focus, kpi),
        iterations=sections.iteration_rows(state),
        focus_iteration=None if focus is None else focus.name,
        validations=_validations(reader, state),
        pool_hygiene=_pool_hygiene(reader, state),
        stages=sections.stage_rows(state, log),
        parameters=sections.parameters(state),
        preflight=sections.preflight_rows(state),
        stat_note=sections.stat_note(kpi, target),
        failure=sections.failure_view(state),
        generated_at=utc_now(),
    )
    if state.iterations:
        from deft_aoi.analysis.plots import trend_svg

        view.trend_svg = trend_svg(sections.trend_points(state), None if target is None else target.target_pct)
    if focus is not None:
        _scores(view, reader, focus, kpi)
    _rca(view, reader, state, focus, thumbs)
    _mined(view, reader, state, thumbs)
    view.regressions = _regressions(reader, state, thumbs)
    view.guards = [it.guard for it in state.ordered_iterations() if it.guard is not None]
    _suspects(view, reader, focus, thumbs)
    best = reader.json(RunLayout(run_root).best_model_json)
    if best is not None:
        spec = RunLayout(run_root).best_model_spec
        view.handoff = sections.handoff(best, str(spec) if spec.is_file() else None)
    view.notes = reader.notes
    return view
