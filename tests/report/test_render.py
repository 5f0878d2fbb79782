from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from deft_aoi.errors import InputError
from deft_aoi.report.render import render_report

SECTIONS = ("trend", "iterations", "scores", "confusion", "rca", "mined", "validation", "timeline", "preflight",
            "handoff")
THUMB_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _html(run: Path) -> str:
    path = render_report(run)
    assert path == run / "DEFT_Loop_Report.html"
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["baseline", "running", "finished", "hardstop"])
def test_every_section_renders_for_each_run_shape(make_run: Callable[..., Path], kind: str) -> None:
    run = make_run(kind=kind)
    html = _html(run)
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert "run_20250101_000000" in html
    # atomic write leaves no temp file behind
    assert [p.name for p in run.iterdir() if p.name.startswith(".DEFT_Loop_Report")] == []


@pytest.mark.parametrize("kind", ["baseline", "finished", "hardstop"])
def test_report_is_offline(make_run: Callable[..., Path], kind: str) -> None:
    html = _html(make_run(kind=kind))
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    for src in re.findall(r'src="([^"]*)"', html):
        assert src.startswith("data:image/png;base64,")


def test_object_name_is_escaped(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="finished", object_name="<script>alert(1)</script>"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html


def test_label_in_chart_is_escaped(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    csv = run / "iter2" / "inference" / "best_val" / "inference.csv"
    csv.write_text(csv.read_text().replace(",short,", ",<b>x</b>,"))
    html = _html(run)
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_finished_run_shows_figures_and_thumbnails(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="finished"))
    assert "0.1 pp above target" in html  # best FAR 0.2 % against FAR < 0.1 %
    assert "iter2 (FAR 0.2 %)" in html
    assert "max iterations reached" in html
    assert "resnet18" in html
    assert "Statistical note" in html
    assert "<svg" in html and "FAR and threshold per iteration" in html
    # 10 weak samples (the fixture's 20 gap rows have weakness −0.5…0.5: 10 misclassified; input + golden)
    # and 8 mined pairs (mined + target)
    assert len(THUMB_RE.findall(html)) == 10 * 2 + 8 * 2
    assert "The 10 weakest of the 10 misclassified rows at the threshold" in html and "of 20 gap rows" in html
    assert "The 8 most similar of 10 mined images" in html
    # parameters with their sources and pre-flight checks
    assert "<td>num_epochs</td><td>2</td><td>spec</td>" in html
    assert "no GPU; CPU backend" in html


def test_weakest_first(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="finished"))
    weaknesses = [float(w) for w in re.findall(r"weakness (-?[0-9.e+-]+)", html)]
    assert weaknesses and weaknesses == sorted(weaknesses, reverse=True)
    assert weaknesses[0] == pytest.approx(0.5)


def test_baseline_only_shows_dashes_for_unknowns(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="baseline"))
    mined = html[html.index('id="mined"'):html.index('id="validation"')]
    assert '<p class="muted">—</p>' in mined
    handoff = html[html.index('id="handoff"'):]
    assert handoff.count("<td>—</td>") == 8
    assert "Hard stop" not in html


def test_running_run_shows_the_stage_in_progress(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="running"))
    timeline = html[html.index('id="timeline"'):html.index('id="preflight"')]
    assert 'class="in_progress">in_progress' in timeline
    assert "running" in html


def test_hard_stop_is_explained(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="hardstop"))
    assert "Hard stop: leakage" in html
    assert "remove the row from the training CSV" in html
    validation = html[html.index('id="validation"'):html.index('id="timeline"')]
    assert "iter1 · assembled training CSV: <span class=\"fail\">failed</span>" in validation
    assert 'class="error">error' in html  # the failed stage in the timeline


def test_report_stays_small_with_large_inputs(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished", n_kpi=3000, weak_rows=400, mined_rows=300)
    html = _html(run)
    assert len(html.encode()) < 3_000_000
    assert len(THUMB_RE.findall(html)) == 12 * 2 + 8 * 2


def test_thumbnails_are_small_pngs(make_run: Callable[..., Path]) -> None:
    html = _html(make_run(kind="finished"))
    for data in THUMB_RE.findall(html)[:4]:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "PNG"
            assert max(img.size) <= 96


def test_missing_optional_files_show_dashes(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    for path in run.rglob("*"):
        if path.is_file() and path.name not in ("deft_state.json", "loop_log.jsonl"):
            path.unlink()
    html = _html(run)
    assert len(THUMB_RE.findall(html)) == 0
    rca = html[html.index('id="rca"'):html.index('id="mined"')]
    assert '<p class="muted">—</p>' in rca
    # the state still carries the KPI figures, so the trend and confusion survive
    assert "FAR and threshold per iteration" in html


def test_missing_image_files_show_dash_instead_of_thumbnail(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    for png in (run.parent.parent / "kpi").rglob("*.png"):
        png.unlink()
    html = _html(run)
    assert len(THUMB_RE.findall(html)) == 0
    assert html.count('<div class="nothumb">—</div>') == 10 * 2 + 8 * 2  # 10 misclassified, 8 mined


def test_unreadable_files_are_listed_not_fatal(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    (run / "iter2" / "rca_results" / "20250101_000100" / "kpi_gaps.parquet").write_bytes(b"not parquet")
    (run / "iter1" / "validation" / "merge_validation.json").write_text("{torn")
    html = _html(run)
    notes = html[html.index('id="notes"'):]
    assert "iter2/rca_results/20250101_000100/kpi_gaps.parquet: could not be read" in notes
    assert "iter1/validation/merge_validation.json: not readable as JSON" in notes
    # RCA falls back to an earlier iteration's gaps
    assert "weakest KPI samples · iter1" in html


def test_non_finite_scores_are_reported_with_row(make_run: Callable[..., Path]) -> None:
    run = make_run(kind="finished")
    csv = run / "iter2" / "inference" / "best_val" / "inference.csv"
    lines = csv.read_text().splitlines()
    lines[3] = ",".join([*lines[3].split(",")[:-1], "nan"])
    csv.write_text("\n".join(lines) + "\n")
    html = _html(run)
    assert "first at row 4" in html


def test_secrets_never_reach_the_report(make_run: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "nvapi-SECRET-123456"
    monkeypatch.setenv("NGC_API_KEY", secret)
    run = make_run(kind="hardstop")
    state = json.loads((run / "deft_state.json").read_text())
    state["failure"]["message"] = f"docker login failed with key {secret}"
    (run / "deft_state.json").write_text(json.dumps(state))
    html = _html(run)
    assert secret not in html
    assert "docker login failed with key ***" in html


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a deft run"):
        render_report(tmp_path)
    with pytest.raises(InputError, match="run directory not found"):
        render_report(tmp_path / "absent")


def test_real_deeppcb_crops_as_thumbnails(make_run: Callable[..., Path], deeppcb_dev: Path) -> None:
    images = deeppcb_dev / "kpi" / "images"
    pairs = []
    for pair in sorted(images.iterdir())[:4]:
        for test_img in sorted((pair / "test").glob("*.jpg"))[:1]:
            pairs.append((test_img, pair / "golden" / test_img.name))
    assert pairs
    html = _html(make_run(kind="finished", images=pairs))
    data = THUMB_RE.findall(html)
    assert len(data) == 10 * 2 + 8 * 2  # 10 misclassified gap rows, 8 mined pairs
    with Image.open(io.BytesIO(base64.b64decode(data[0]))) as img:
        assert max(img.size) == 96  # the 128 px crops are scaled down


def test_an_iteration_that_makes_far_worse_explains_itself(make_run: Callable[..., Path]) -> None:
    from deft_aoi.report.collect import collect

    run = make_run(far_by_iter={"baseline": 0.3, "iter1": 0.5, "iter2": 0.2})
    view = collect(run)
    assert [g.iteration for g in view.regressions] == ["iter1"]  # iter2 improved: no explanation needed
    g = view.regressions[0]
    assert (g.previous, g.far_before, g.far_after) == ("baseline", 0.3, 0.5)
    assert g.added_total == 10 and [(a.label, a.n) for a in g.added] == [("short", 10)]
    assert {c.label for c in g.label_changes} >= {"PASS"} and g.examples
    assert g.set_by_after is None or "row" in g.set_by_after
    html = _html(run)
    assert 'id="regressions"' in html and "Iterations that made FAR worse" in html
    assert "Pulled in by a target labelled" in html


def test_no_regression_section_when_far_only_falls(make_run: Callable[..., Path]) -> None:
    assert 'id="regressions"' not in _html(make_run(kind="finished"))  # 0.5 → 0.3 → 0.2


def test_suspect_labels_are_shown_and_the_threshold_setter_is_called_out(make_run: Callable[..., Path]) -> None:
    import pandas as pd

    from deft_aoi.loop.artefacts import find
    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import RunLayout

    run = make_run()
    layout = RunLayout(run)
    state = StateStore(layout).load()
    gaps_file = find(layout, state, "rca.kpi_gaps", "iter2", walk_back=False)
    path = find(layout, state, "rca.suspects", "iter2", walk_back=False)
    assert gaps_file is not None and path is not None
    gaps = pd.read_parquet(gaps_file)
    suspects = pd.DataFrame({"row": [7, 3], "label": ["short", "PASS"], "score": [0.01, 0.97],
                             "neighbour_other_share": [0.8, 0.6], "sets_threshold": [True, False],
                             "filepath": gaps["filepath"].head(2).tolist(),
                             "golden_filepath": gaps["golden_filepath"].head(2).tolist()})
    suspects.to_parquet(path)  # where the RCA stage writes it: found through the catalog, not the state
    html = _html(run)
    assert 'id="suspects"' in html and "2 KPI row(s) whose label disagrees" in html
    assert "row 7 (short), is a suspect" in html and "row 7 · sets the threshold" in html
