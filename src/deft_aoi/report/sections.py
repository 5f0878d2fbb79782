"""Pure builders of the report's sections: state, log entries and frames in, view-model rows out.

Nothing here touches the filesystem; `collect.py` reads the files and hands their contents over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from deft_aoi.config import KpiTarget
from deft_aoi.loop import status_view
from deft_aoi.loop.state import Failure as FailureView
from deft_aoi.loop.state import IterationState, LogEntry, RunState
from deft_aoi.report.model import (
    AddedGroup,
    CheckRow,
    Confusion,
    ExcludedRow,
    Handoff,
    IterationRow,
    LabelChange,
    LabelScores,
    MinedPair,
    Parameter,
    PoolHygieneView,
    SampleCard,
    StageRow,
    ValidationView,
)
from deft_aoi.secrets import redact

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Thumbnailer = Callable[[str | None], str | None]
COUNT_KEYS = ("training_rows", "mined_real", "mined_synthetic", "new_unique", "total", "delta")


def finite(value: Any) -> float | None:
    """A float for display, or None for anything missing, non-numeric, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    number = finite(value)
    return None if number is None else int(number)


def as_count(value: Any) -> int | None:
    """Validation reports list offending rows or give a number; either way the report shows a count."""
    if value is None:
        return None
    if isinstance(value, list | tuple | dict | set):
        return len(value)
    return as_int(value)


def short_name(path: str | None, parts: int = 3) -> str:
    """The tail of an image path, enough to recognise the sample without the machine-specific prefix."""
    if not path:
        return "—"
    return "/".join(Path(str(path)).parts[-parts:])


# -- header ------------------------------------------------------------------------------------------
# Where the KPI stands and which iteration a run's result is: one owner (loop/status_view), shared with the
# end of `deft run` and `deft status`; named here too for the report's modules.
headline_iteration = status_view.headline_iteration
status_words = status_view.status_words


# -- iterations --------------------------------------------------------------------------------------
def iteration_duration(it: IterationState) -> float | None:
    if it.duration_sec:
        return it.duration_sec
    durations = [r.duration_sec for r in it.stages.values() if r.duration_sec is not None]
    return sum(durations) if durations else None


def iteration_rows(state: RunState) -> list[IterationRow]:
    from deft_aoi.analysis.kpi import significance_words

    rows: list[IterationRow] = []
    previous_far: float | None = None
    previous_ci: tuple[float | None, float | None] = (None, None)
    for it in state.ordered_iterations():
        far = finite(it.far_pct)
        counts = {key: as_int(getattr(it.counts, key)) for key in COUNT_KEYS}
        kpi = it.kpi_report or {}
        ci = (finite(kpi.get("far_ci_low_pct")), finite(kpi.get("far_ci_high_pct")))
        rows.append(
            IterationRow(
                name=it.name,
                status=it.status,
                stage_completed=it.stage_completed,
                far_pct=far,
                far_change_pp=None if far is None or previous_far is None else far - previous_far,
                far_ci_low_pct=ci[0],
                far_ci_high_pct=ci[1],
                far_at_recall99_pct=finite(kpi.get("far_at_recall99_pct")),
                significance=None if far is None or previous_far is None else significance_words(previous_ci, ci),
                        threshold_set_by=setter_words(kpi),
                selection=it.counts.selection_words(),
                recall_pct=finite(it.recall_pct),
                threshold=finite(it.threshold),
                duration_sec=iteration_duration(it),
                kpi_met=it.kpi_met,
                chosen_checkpoint=it.chosen_checkpoint,
                is_best=it.name == state.best_iteration,
                **counts,
            )
        )
        if far is not None:
            previous_far, previous_ci = far, ci
    return rows


def trend_points(state: RunState) -> list[tuple[str, float | None, float | None]]:
    return [(it.name, finite(it.far_pct), finite(it.threshold)) for it in state.ordered_iterations()]


# -- scores ------------------------------------------------------------------------------------------
def label_scores(df: pd.DataFrame, threshold: float | None) -> list[LabelScores]:
    """Per label: count, min/median/max score and how many rows the threshold gets wrong
    (PASS scoring above it = false alarm; a defect at or below it = miss)."""
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import PASS_LABEL, normalise_labels

    labels = normalise_labels(df["label"]).to_numpy()
    scores = pd.to_numeric(df["siamese_score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    out: list[LabelScores] = []
    for name in sorted(set(labels), key=lambda n: (n != PASS_LABEL, n)):
        s = scores[(labels == name) & np.isfinite(scores)]
        wrong = None
        if threshold is not None and s.size:
            wrong = int((s > threshold).sum()) if name == PASS_LABEL else int((s <= threshold).sum())
        out.append(
            LabelScores(
                label=str(name),
                n=int((labels == name).sum()),
                min_score=float(s.min()) if s.size else None,
                median_score=float(np.median(s)) if s.size else None,
                max_score=float(s.max()) if s.size else None,
                wrong=wrong,
            )
        )
    return out


def confusion_from_report(kpi: dict[str, Any] | None) -> Confusion | None:
    if not kpi or any(as_int(kpi.get(k)) is None for k in ("tp", "fp", "tn", "fn")):
        return None
    return Confusion(
        threshold=finite(kpi.get("threshold")),
        tp=as_int(kpi["tp"]),
        fp=as_int(kpi["fp"]),
        tn=as_int(kpi["tn"]),
        fn=as_int(kpi["fn"]),
    )


def confusion_from_scores(df: pd.DataFrame, threshold: float | None) -> Confusion:
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import PASS_LABEL, normalise_labels

    if threshold is None:
        return Confusion()
    defect = (normalise_labels(df["label"]) != PASS_LABEL).to_numpy()
    scores = pd.to_numeric(df["siamese_score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    called = scores > threshold
    return Confusion(
        threshold=threshold,
        tp=int((defect & called).sum()),
        fn=int((defect & ~called).sum()),
        fp=int((~defect & called).sum()),
        tn=int((~defect & ~called).sum()),
    )


def stat_note(kpi: dict[str, Any] | None, target: KpiTarget | None) -> str | None:
    """The evaluator's own note when its report carries one, else the rule of three on the PASS count:
    with n PASS rows and 0 false alarms the 95 % upper bound of FAR is about 3/n (CONTRACTS §6)."""
    if not kpi:
        return None
    if "support_note" in kpi:
        return None if not kpi["support_note"] else str(kpi["support_note"])
    n_pass = as_int(kpi.get("n_pass"))
    if not n_pass or target is None:
        return None
    floor = 300.0 / n_pass
    if floor <= target.target_pct:
        return None
    needed = math.ceil(300.0 / target.target_pct) if target.target_pct > 0 else None
    return (
        f"the KPI set has {n_pass} PASS rows: even with 0 false alarms the 95 % upper bound of FAR is "
        f"about 3/{n_pass} = {floor:.3g} %, above the target {target.target_pct:g} %"
        + (f"; supporting it needs at least {needed} PASS rows" if needed else "")
    )


def defect_and_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | str:
    """(is_defect, scores) of an inference frame, or why they cannot be used (a non-finite score)."""
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import PASS_LABEL, normalise_labels

    scores = pd.to_numeric(df["siamese_score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(scores)
    if bad.any():
        first = int(np.flatnonzero(bad)[0]) + 2  # spreadsheet row: the header is row 1
        return f"'siamese_score' is missing or not a finite number in {int(bad.sum())} row(s); first at row {first}"
    return (normalise_labels(df["label"]) != PASS_LABEL).to_numpy(dtype=bool), scores


# -- RCA and mining ----------------------------------------------------------------------------------
def _cell(row: pd.Series, column: str) -> Any:
    if column not in row.index:
        return None
    value = row[column]
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _top_rows(frame: pd.DataFrame, column: str, limit: int) -> pd.DataFrame:
    """The first `limit` rows by `column`, largest first (non-numbers last, ties in file order); the file's
    first rows where the column is absent."""
    if column in frame.columns:
        import pandas as pd

        order = pd.to_numeric(frame[column], errors="coerce").fillna(-math.inf)
        frame = frame.assign(_order=order).sort_values("_order", ascending=False, kind="stable")
    return frame.head(limit)


def misclassified(gaps: pd.DataFrame) -> pd.DataFrame:
    """The gap rows on the wrong side of the threshold (analysis/rca.is_wrong). RCA keeps the top rows per label
    whatever their sign, so most of a gap file is correctly classified (negative weakness): those are not weak
    samples. Without a weakness column nothing can be told apart, and every row is kept."""
    if "weakness" not in gaps.columns:
        return gaps
    import numpy as np
    import pandas as pd

    from deft_aoi.analysis.rca import is_wrong
    from deft_aoi.workspace.changenet_csv import PASS_LABEL

    weak = pd.to_numeric(gaps["weakness"], errors="coerce").to_numpy()
    # No label: only a positive weakness is surely wrong (the PASS rule).
    is_pass = (gaps["label"] == PASS_LABEL).to_numpy() if "label" in gaps.columns else np.ones(len(gaps), bool)
    return gaps[is_wrong(is_pass, weak)]


def weak_cards(gaps: pd.DataFrame, thumb: Thumbnailer, limit: int) -> list[SampleCard]:
    """The `limit` weakest misclassified rows (largest weakness first) as input | golden cards."""
    cards = []
    for _, row in _top_rows(misclassified(gaps), "weakness", limit).iterrows():
        path = _cell(row, "filepath")
        golden = _cell(row, "golden_filepath")
        label = _cell(row, "label")
        object_name = _cell(row, "object_name")
        cards.append(
            SampleCard(
                label="—" if label is None else str(label),
                score=finite(_cell(row, "siamese_score")),
                weakness=finite(_cell(row, "weakness")),
                object_name=None if object_name is None else str(object_name),
                input_name=short_name(None if path is None else str(path)),
                input_thumb=thumb(None if path is None else str(path)),
                golden_thumb=thumb(None if golden is None else str(golden)),
            )
        )
    return cards


def mined_pairs(mined: pd.DataFrame, thumb: Thumbnailer, limit: int) -> list[MinedPair]:
    """The `limit` most similar mined images, each beside the weak target it was mined for."""
    pairs = []
    for _, row in _top_rows(mined, "similarity", limit).iterrows():
        path = _cell(row, "filepath")
        target = _cell(row, "matched_target")
        label = _cell(row, "label")
        pairs.append(
            MinedPair(
                label=None if label is None else str(label),
                similarity=finite(_cell(row, "similarity")),
                mined_name=short_name(None if path is None else str(path)),
                mined_thumb=thumb(None if path is None else str(path)),
                target_name=None if target is None else short_name(str(target)),
                target_thumb=thumb(None if target is None else str(target)),
            )
        )
    return pairs


# -- iterations that made FAR worse ------------------------------------------------------------------
def label_changes(before: list[LabelScores], after: list[LabelScores]) -> list[LabelChange]:
    """Per label, wrong rows and median score before → after, the labels that got worse first."""
    old = {row.label: row for row in before}
    out = []
    for row in after:
        prev = old.get(row.label)
        out.append(LabelChange(label=row.label, n=row.n, wrong_before=None if prev is None else prev.wrong,
                               wrong_after=row.wrong, median_before=None if prev is None else prev.median_score,
                               median_after=row.median_score))
    return sorted(out, key=lambda c: (-((c.wrong_after or 0) - (c.wrong_before or 0)), c.label))


def added_groups(mined: pd.DataFrame) -> list[AddedGroup]:
    """Added rows counted by (source, own label, label of the target that pulled them in), largest first."""
    from deft_aoi.workspace.changenet_csv import normalise_labels

    frame = mined.assign(
        _source=mined["source"].astype(str) if "source" in mined.columns else "—",
        _label=normalise_labels(mined["label"].astype(str)) if "label" in mined.columns else "—",
        _target=(normalise_labels(mined["matched_target_label"].astype(str))
                 if "matched_target_label" in mined.columns else "—"),
    )
    counts = frame.groupby(["_source", "_label", "_target"]).size().sort_values(ascending=False, kind="stable")
    # Grouped by three columns, every key is a 3-tuple (pandas-stubs types a key as any Hashable).
    keys = (cast(tuple[str, str, str], k) for k in counts.index)
    return [AddedGroup(source=str(k[0]), label=str(k[1]), target_label=str(k[2]), n=int(n))
            for k, n in zip(keys, counts.to_numpy(), strict=True)]


def suspect_cards(df: pd.DataFrame, thumb: Thumbnailer, limit: int) -> list[SampleCard]:
    """Suspect-label rows as cards (input and golden side by side); `weakness` carries the share of the
    row's neighbours labelled with the other class, `object_name` the set (KPI | training) and CSV row."""
    cards = []
    for _, row in df.head(limit).iterrows():
        path, golden = _cell(row, "filepath"), _cell(row, "golden_filepath")
        marker = " · sets the threshold" if bool(_cell(row, "sets_threshold")) else ""
        which = _cell(row, "set")
        cards.append(SampleCard(
            label=str(_cell(row, "label")),
            score=finite(_cell(row, "score")),
            weakness=finite(_cell(row, "neighbour_other_share")),
            object_name=f"{'' if which is None else f'{which} '}row {_cell(row, 'row')}{marker}",
            input_name=short_name(None if path is None else str(path)),
            input_thumb=thumb(None if path is None else str(path)),
            golden_thumb=thumb(None if golden is None else str(golden)),
        ))
    return cards


def setter_words(kpi: dict[str, Any] | None) -> str | None:
    setters = (kpi or {}).get("threshold_defects") or []
    first = setters[0] if setters and isinstance(setters[0], dict) else None
    if first is None:
        return None
    return f"{first.get('label')} (row {first.get('row')}, score {finite(first.get('score')) or 0.0:.4g})"


# -- validation, timeline, parameters, hand-off ------------------------------------------------------
def _check_row(item: Any) -> CheckRow:
    if isinstance(item, dict):
        name = item.get("name") or item.get("check") or "check"
        status = item.get("status")
        if status is None and "ok" in item:
            status = "pass" if item["ok"] else "fail"
        detail = item.get("detail") if item.get("detail") is not None else item.get("message")
        return CheckRow(
            name=redact(str(name)),
            status=None if status is None else str(status),
            detail=None if detail is None else redact(str(detail)),
        )
    return CheckRow(name=redact(str(item)))


def validation_view(data: dict[str, Any], iteration: str, which: str) -> ValidationView:
    checks = data.get("checks") or []
    ok = data.get("ok")
    return ValidationView(
        iteration=iteration,
        which=which,
        ok=ok if isinstance(ok, bool) else None,
        checks=[_check_row(c) for c in (checks if isinstance(checks, list) else [checks])],
        missing_images=as_count(data.get("missing_images")),
        leaked_rows=as_count(data.get("leaked_rows")),
        near_duplicates=as_count(data.get("near_duplicates")),
    )


_HYGIENE_SOURCES = {"mining_pool": "mining pool", "synthetic": "synthetic pairs", "training": "base training set",
                    "kpi": "KPI set (itself)"}


def pool_hygiene_view(record: dict[str, Any] | None, exclusions: pd.DataFrame | None, limit: int,
                      list_file: str | None) -> PoolHygieneView | None:
    """The run config's pool-hygiene record and the run's exclusion list (either may be missing)."""
    if record is None and exclusions is None:
        return None
    record = record or {}
    raw_counts = record.get("counts")
    counts = raw_counts if isinstance(raw_counts, dict) else {}
    rows = [(_HYGIENE_SOURCES.get(str(src), str(src)), as_int(c.get("key")) or 0, as_int(c.get("content")) or 0,
             as_int(c.get("near_duplicate")) or 0)
            for src, c in counts.items() if isinstance(c, dict)]
    board = record.get("same_board") if isinstance(record.get("same_board"), dict) else None
    same_board = None
    if board and board.get("kpi_total"):
        same_board = (f"{as_int(board.get('kpi_rows'))} of {as_int(board.get('kpi_total'))} KPI rows "
                      f"({100 * (finite(board.get('share')) or 0):.1f} %) share a boardname with training or pool rows")
    excluded = []
    if exclusions is not None:
        for _, r in exclusions.head(limit).iterrows():
            excluded.append(ExcludedRow(
                source=_HYGIENE_SOURCES.get(str(r.get("source")), str(r.get("source"))), row=str(r.get("row", "")),
                name=redact(f"{r.get('input_path', '')}/{r.get('object_name', '')}"),
                label=str(r.get("label", "")) or None, kind=str(r.get("kind", "")),
                twin=redact(f"{r.get('twin_set', '')} row {r.get('twin_row', '')} "
                            f"({r.get('twin_input_path', '')}/{r.get('twin_object_name', '')})"),
                similarity=finite(r.get("similarity"))))
    total = len(exclusions) if exclusions is not None else as_int(record.get("excluded_rows"))
    return PoolHygieneView(threshold=finite(record.get("near_duplicate_threshold")),
                           encoder=None if record.get("near_duplicate_encoder") is None
                           else str(record["near_duplicate_encoder"]),
                           counts=rows, excluded_total=total, excluded=excluded, same_board=same_board,
                           list_file=list_file)


def stage_rows(state: RunState, log: Iterable[LogEntry]) -> list[StageRow]:
    """Every logged stage in log order, then the stages the state shows as started but not yet logged
    (the one running now, or one cut short by a crash or Ctrl-C)."""
    rows = [
        StageRow(
            iteration=e.iter,
            stage=e.stage,
            status=e.status,
            duration_sec=finite(e.duration_sec),
            summary=redact(e.summary),
            ended_at=e.ts,
        )
        for e in sorted(log, key=lambda e: e.seq)
    ]
    logged = {(r.iteration, r.stage) for r in rows}
    for it in state.ordered_iterations():
        for name, rec in it.stages.items():
            if (it.name, name) in logged:
                continue
            rows.append(
                StageRow(
                    iteration=it.name,
                    stage=name,
                    status=rec.status,
                    duration_sec=finite(rec.duration_sec),
                    summary=redact(rec.summary or rec.error or ""),
                    ended_at=rec.ended_at,
                )
            )
    longest = max((r.duration_sec or 0.0 for r in rows), default=0.0)
    if longest > 0:
        for r in rows:
            r.bar_pct = round(100.0 * (r.duration_sec or 0.0) / longest, 1)
    return rows


def parameters(state: RunState) -> list[Parameter]:
    return [Parameter(name=str(n), value=redact(str(v)), source=str(s)) for n, v, s in state.config.parameters]


def preflight_rows(state: RunState) -> list[CheckRow]:
    return [_check_row(item) for item in state.preflight]


def handoff(data: dict[str, Any], inference_spec: str | None) -> Handoff:
    def text(key: str) -> str | None:
        value = data.get(key)
        return None if value is None or value == "" else redact(str(value))

    return Handoff(
        checkpoint=text("checkpoint"),
        threshold=finite(data.get("threshold")),
        far_pct=finite(data.get("far_pct")),
        iteration=text("iteration"),
        # best_model.json names the type as `backbone_type` (older runs: the type as `backbone`).
        backbone=text("backbone_type") or text("backbone"),
        images_dir=text("images_dir"),
        training_spec=text("training_spec"),
        inference_spec=inference_spec,
        onnx=text("onnx"),
    )


def failure_view(state: RunState) -> FailureView | None:
    f = state.failure
    if f is None:
        return None
    return FailureView(
        kind=f.kind,
        message=redact(f.message),
        stage=f.stage,
        iteration=f.iteration,
        hard_stop=f.hard_stop,
        fix=None if f.fix is None else redact(f.fix),
    )
