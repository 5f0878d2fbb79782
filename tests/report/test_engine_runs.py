"""The report renders runs the loop engine really produced (not fabricated ones), finding every file through
the run catalog: nothing the engine wrote is missed, nothing is reported unreadable."""

from __future__ import annotations

from pathlib import Path

from deft_aoi.loop.store import StateStore
from deft_aoi.report.collect import collect
from deft_aoi.report.render import render_report
from deft_aoi.workspace.layout import RunLayout

from .test_render import SECTIONS, THUMB_RE


def test_a_finished_engine_run_shows_every_artefact_it_wrote(engine_runs: dict[str, Path]) -> None:
    run = engine_runs["finished"]
    view = collect(run)
    assert view.notes == []
    assert view.header.run_status == "finished"
    assert [row.name for row in view.iterations] == ["baseline", "iter1"]
    assert view.confusion.tp is not None and view.score_svg and view.far_recall_svg
    assert view.weak_iteration == view.focus_iteration and view.weak_total and view.weak_samples
    assert view.mined_iteration == "iter1" and view.mined_total and view.mined_pairs
    assert {(v.iteration, v.which) for v in view.validations} == {
        ("iter1", "mined rows (mid-iteration)"), ("iter1", "assembled training CSV")}
    assert view.suspect_iteration == view.focus_iteration and view.suspect_total is not None
    assert view.handoff is not None and view.trend_svg
    state = StateStore(RunLayout(run)).load()
    logged = {(it.name, stage) for it in state.ordered_iterations() for stage in it.stages}
    assert {(row.iteration, row.stage) for row in view.stages} >= logged
    html = render_report(run).read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert len(THUMB_RE.findall(html)) >= 2 * (len(view.weak_samples) + len(view.mined_pairs))


def test_a_failed_engine_run_renders_its_failure_and_what_was_committed(engine_runs: dict[str, Path]) -> None:
    run = engine_runs["failed"]
    view = collect(run)
    assert view.notes == []
    assert view.header.run_status == "failed"
    assert view.failure is not None and view.failure.stage == "inference" and not view.failure.hard_stop
    assert view.weak_iteration is None and view.mined_iteration is None  # nothing after the failure is guessed
    html = render_report(run).read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
