"""Issue 27.1/27.2: every end of a run — KPI met, max iterations, hard stop, failed stage, Ctrl-C — leaves a
DEFT_Loop_Report.html that says how it ended, and the end of `deft run` says the final FAR with its interval,
whether the KPI is met (by how much not), and the change from the baseline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deft_aoi import interrupts
from deft_aoi.api import Loop
from deft_aoi.errors import DeftError, HardStop, Interrupted, StageFailed

FAST = {"backend": "fake", "max_iterations": 1, "num_epochs": 2, "seed": 1}


class _Breaks:
    """The real stage of the same name, ending the run the way `raise_` does instead of running."""

    def __init__(self, real: Any, raise_: BaseException) -> None:
        self.real, self.name, self.raise_ = real, real.name, raise_

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)

    def run(self, ctx: Any) -> Any:
        raise self.raise_


def _ended(report: Path) -> str:
    html = report.read_text(encoding="utf-8")
    found = re.search(r'<div id="run-ended"><span>Run ended</span><span[^>]*>([^<]*)</span>', html)
    assert found, "the report has no 'Run ended' row"
    return found.group(1)


@pytest.mark.parametrize(("stage", "raise_", "error", "words"), [
    ("train", HardStop("leakage", "1 training row leaks into validation"), HardStop,
     "hard stop (leakage) at baseline · train"),
    ("inference", StageFailed("inference job exited 1"), StageFailed,
     "failed stage at baseline · inference (StageFailed)"),
    ("evaluate", interrupts.UserInterrupt(), Interrupted, "interrupted (Ctrl-C) at baseline · evaluate"),
])
def test_a_stopped_run_leaves_a_report_saying_how_it_ended(
    demo_ws: Path, stage: str, raise_: BaseException, error: type[DeftError], words: str
) -> None:
    from deft_aoi.loop.stages import build_stages

    loop = Loop(demo_ws, **FAST).with_stage(_Breaks(build_stages()[stage], raise_))
    with pytest.raises(error):
        loop.start()
    assert loop.run is not None
    assert _ended(loop.run.report_html) == words


def test_a_report_that_fails_to_render_is_a_warning_not_a_lost_run(
    demo_ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deft_aoi.report.render as render

    def broken(*_a: object, **_k: object) -> Path:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(render, "render_report", broken)
    state = Loop(demo_ws, **FAST).start()
    assert state.status == "finished"
    assert "warning: report not rendered: template exploded" in capsys.readouterr().err


def _deft_run(ws: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    from deft_aoi.cli.app import app

    result = CliRunner().invoke(app, ["run", "-w", str(ws), "--max-iterations", "1", "--epochs", "2", "--seed",
                                      "1", "--yes", *extra], env={"NO_COLOR": "1", **(env or {})})
    return result.exit_code, result.output


def test_the_end_of_a_run_says_final_far_kpi_and_change_from_baseline(demo_ws: Path) -> None:
    code, out = _deft_run(demo_ws, "--backend", "fake")
    assert code == 0, out
    run = next((demo_ws / "results").glob("run_*"))
    assert "ended: max iterations reached (1 of 1)" in out
    assert _ended(run / "DEFT_Loop_Report.html") == "max iterations reached (1 of 1)"
    far = re.search(r"final FAR: (\d+\.\d\d)% \(95% CI (\d+\.\d\d)–(\d+\.\d\d)%\) at recall 100%", out)
    assert far, out
    assert float(far.group(2)) <= float(far.group(1)) <= float(far.group(3))
    gap = re.search(r"KPI not met \(([\d.]+) pp above target; target FAR<0.1%@recall=100%\)", out)
    assert gap and float(gap.group(1)) == pytest.approx(float(far.group(1)) - 0.1, abs=0.01), out
    assert re.search(r"change from baseline: (\d+\.\d\d% → \d+\.\d\d% \([+-]\d+\.\d\d pp\)|none)", out), out


def test_a_met_kpi_ends_the_run_saying_so(demo_ws: Path) -> None:
    code, out = _deft_run(demo_ws, "--backend", "fake", "--kpi", "FAR<=100%@recall=100%")
    assert code == 0, out
    assert "ended: KPI met" in out and "KPI met (" in out
    run = next((demo_ws / "results").glob("run_*"))
    assert _ended(run / "DEFT_Loop_Report.html") == "KPI met"
    # A refused resume of the finished run leaves its report as it was (earlier runs are never modified).
    before = (run / "DEFT_Loop_Report.html").stat().st_mtime_ns
    from deft_aoi.cli.app import app

    refused = CliRunner().invoke(app, ["resume", "-w", str(demo_ws), "--run", run.name], env={"NO_COLOR": "1"})
    assert refused.exit_code == 2, refused.output
    assert (run / "DEFT_Loop_Report.html").stat().st_mtime_ns == before


def test_a_failed_stage_still_ends_with_the_summary_and_a_fresh_report(demo_ws: Path) -> None:
    code, out = _deft_run(demo_ws, "--backend", "docker",
                          env={"DEFT_DOCKER": "fake", "DEFT_FAKE_FAULT": "inference:exit1:once"})
    assert code == 1, out
    assert "ended: failed stage at baseline · inference" in out
    assert "final FAR: — (no iteration measured)" in out
    run = next((demo_ws / "results").glob("run_*"))
    assert _ended(run / "DEFT_Loop_Report.html").startswith("failed stage at baseline · inference")
