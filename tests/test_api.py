"""api.Loop, the one entry of the CLI and the benches: pre-flight, start, status, report, and a swapped stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deft_aoi.api import Loop


class _Spy:
    """The real stage of the same name, recording the iterations it ran for."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.name = real.name
        self.calls: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)

    def run(self, ctx: Any) -> Any:
        self.calls.append(ctx.iteration)
        return self.real.run(ctx)


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_with_stage_swaps_one_stage_for_the_run(demo_ws: Path) -> None:
    from deft_aoi.loop.stages import build_stages

    spy = _Spy(build_stages()["mine"])
    plain = Loop(demo_ws, backend="fake", max_iterations=1, num_epochs=2, seed=1, render_report=False)
    loop = plain.with_stage(spy)
    assert plain.stages == {} and loop.settings == plain.settings  # with_stage leaves the original as it was
    report, config = loop.preflight()
    assert report.ready and config.max_iterations.value == 1 and config.max_iterations.source == "flag"
    state = loop.start(report, config)
    assert state.status == "finished" and spy.calls == ["iter1"]
    run = Path(state.results_dir)
    assert not (run / "DEFT_Loop_Report.html").exists()  # render_report=False: no per-iteration report
    assert loop.status()["status"] == "finished"
    assert loop.report() == run / "DEFT_Loop_Report.html" and (run / "DEFT_Loop_Report.html").is_file()


def test_unknown_setting_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="topn"):
        Loop(tmp_path, topn=3)
