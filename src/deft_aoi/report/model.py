"""The report's view-model: everything the template shows, already read from disk.

Values that are not known yet stay None; the template renders None as "—". SVG fields hold complete
`<svg>` documents built by our own chart code (every text inside is escaped there); thumbnails are
`data:image/png;base64,...` URIs, so the page needs nothing outside itself.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from deft_aoi.analysis.guard import GuardDecision  # the gate's protection, shown as recorded
from deft_aoi.loop.state import Failure as FailureView  # the report shows the state's record as is


class Header(BaseModel):
    workspace: str
    run_id: str
    backend: str | None = None
    kpi_target: str
    run_status: str
    stop_reason: str | None = None
    ended: str | None = None  # how the run ended (KPI met, max iterations, hard stop, failed stage, Ctrl-C)
    status_words: str | None = None
    best_iteration: str | None = None
    best_far_pct: float | None = None
    current_iteration: int = 0
    max_iterations: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None


class IterationRow(BaseModel):
    name: str
    status: str
    stage_completed: str | None = None
    training_rows: int | None = None
    mined_real: int | None = None
    mined_synthetic: int | None = None
    new_unique: int | None = None
    total: int | None = None
    delta: int | None = None
    far_pct: float | None = None
    far_change_pp: float | None = None
    far_ci_low_pct: float | None = None
    far_ci_high_pct: float | None = None
    far_at_recall99_pct: float | None = None
    significance: str | None = None  # of the FAR change vs the previous measured iteration
    threshold_set_by: str | None = None  # the lowest-scored defect
    selection: str | None = None  # PASS : defect ratio and pool share of the rows the mine stage took
    recall_pct: float | None = None
    threshold: float | None = None
    duration_sec: float | None = None
    kpi_met: bool = False
    chosen_checkpoint: str | None = None
    is_best: bool = False


class Confusion(BaseModel):
    """Rows = truth, columns = prediction, at the KPI threshold."""

    threshold: float | None = None
    tn: int | None = None
    fp: int | None = None
    fn: int | None = None
    tp: int | None = None


class LabelScores(BaseModel):
    label: str
    n: int
    min_score: float | None = None
    median_score: float | None = None
    max_score: float | None = None
    wrong: int | None = None  # misclassified at the threshold


class SampleCard(BaseModel):
    """One weak KPI sample: its input and golden image side by side."""

    label: str
    score: float | None = None
    weakness: float | None = None
    object_name: str | None = None
    input_name: str
    input_thumb: str | None = None
    golden_thumb: str | None = None


class MinedPair(BaseModel):
    """A mined pool image next to the weak target that pulled it in."""

    label: str | None = None
    similarity: float | None = None
    mined_name: str
    mined_thumb: str | None = None
    target_name: str | None = None
    target_thumb: str | None = None


class LabelChange(BaseModel):
    """One label across an iteration that made FAR worse: rows wrong at each iteration's own threshold."""

    label: str
    n: int
    wrong_before: int | None = None
    wrong_after: int | None = None
    median_before: float | None = None
    median_after: float | None = None


class AddedGroup(BaseModel):
    """Rows the iteration added, grouped by where they came from and what pulled them in."""

    source: str
    label: str
    target_label: str
    n: int


class RegressionView(BaseModel):
    """An iteration whose FAR@recall100 rose over the previous measured one, explained."""

    iteration: str
    previous: str
    far_before: float | None = None
    far_after: float | None = None
    significance: str | None = None
    set_by_before: str | None = None
    set_by_after: str | None = None
    label_changes: list[LabelChange] = Field(default_factory=list)
    added_total: int | None = None
    added: list[AddedGroup] = Field(default_factory=list)
    examples: list[MinedPair] = Field(default_factory=list)


class CheckRow(BaseModel):
    name: str
    status: str | None = None
    detail: str | None = None


class ValidationView(BaseModel):
    iteration: str
    which: str  # "mined rows" (mid-iteration) | "assembled CSV" (post-assembly)
    ok: bool | None = None
    checks: list[CheckRow] = Field(default_factory=list)
    missing_images: int | None = None
    leaked_rows: int | None = None
    near_duplicates: int | None = None


class ExcludedRow(BaseModel):
    """One pool row pre-flight kept out of mining, and the held-out row it repeats."""

    source: str
    row: str
    name: str
    label: str | None = None
    kind: str
    twin: str
    similarity: float | None = None


class PoolHygieneView(BaseModel):
    threshold: float | None = None
    encoder: str | None = None
    counts: list[tuple[str, int, int, int]] = Field(default_factory=list)  # (rows of, key, content, near dup)
    excluded_total: int | None = None
    excluded: list[ExcludedRow] = Field(default_factory=list)  # the first EXCLUDED_LIMIT
    same_board: str | None = None
    list_file: str | None = None


class StageRow(BaseModel):
    iteration: str
    stage: str
    status: str
    duration_sec: float | None = None
    summary: str = ""
    ended_at: str | None = None
    bar_pct: float = 0.0  # share of the longest stage, for the timeline bar


class Parameter(BaseModel):
    name: str
    value: str
    source: str


class Handoff(BaseModel):
    checkpoint: str | None = None
    threshold: float | None = None
    far_pct: float | None = None
    iteration: str | None = None
    backbone: str | None = None
    images_dir: str | None = None
    training_spec: str | None = None
    inference_spec: str | None = None
    onnx: str | None = None  # --export onnx


class ReportView(BaseModel):
    header: Header
    trend_svg: str | None = None
    iterations: list[IterationRow] = Field(default_factory=list)
    focus_iteration: str | None = None
    score_svg: str | None = None
    far_recall_svg: str | None = None
    label_scores: list[LabelScores] = Field(default_factory=list)
    confusion: Confusion = Field(default_factory=Confusion)
    weak_iteration: str | None = None
    weak_samples: list[SampleCard] = Field(default_factory=list)
    weak_total: int | None = None
    weak_misclassified: int | None = None  # gap rows on the wrong side of the threshold (the cards are these)
    mined_iteration: str | None = None
    mined_pairs: list[MinedPair] = Field(default_factory=list)
    mined_total: int | None = None
    regressions: list[RegressionView] = Field(default_factory=list)
    guards: list[GuardDecision] = Field(default_factory=list)  # iterations the gate did not build on
    suspect_iteration: str | None = None
    suspect_samples: list[SampleCard] = Field(default_factory=list)  # weakness = neighbours of the other class
    suspect_total: int | None = None  # KPI rows
    suspect_sets_threshold: str | None = None  # "row N (label)" when a suspect row sets the threshold
    # Training rows (the training CSV scored by the same model); total None = the training CSV was not scored.
    suspect_training_samples: list[SampleCard] = Field(default_factory=list)
    suspect_training_total: int | None = None
    suspect_training_rows: int | None = None  # rows in the training CSV that was checked
    suspect_training_csv: str | None = None
    validations: list[ValidationView] = Field(default_factory=list)
    pool_hygiene: PoolHygieneView | None = None
    stages: list[StageRow] = Field(default_factory=list)
    parameters: list[Parameter] = Field(default_factory=list)
    preflight: list[CheckRow] = Field(default_factory=list)
    handoff: Handoff | None = None
    stat_note: str | None = None
    failure: FailureView | None = None
    notes: list[str] = Field(default_factory=list)  # files that were present but unreadable
    generated_at: str
