from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def browser_check(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("browser_check")


def test_problems_are_recognised(browser_check: ModuleType) -> None:
    events = [
        {"method": "Runtime.exceptionThrown",
         "params": {"exceptionDetails": {"exception": {"description": "ReferenceError: x"}}}},
        {"method": "Runtime.consoleAPICalled", "params": {"type": "error", "args": [{"value": "boom"}]}},
        {"method": "Runtime.consoleAPICalled", "params": {"type": "log", "args": [{"value": "fine"}]}},
        {"method": "Log.entryAdded", "params": {"entry": {"level": "error", "text": "Failed to load", "url": "u"}}},
        {"method": "Network.requestWillBeSent", "params": {"type": "Document", "request": {"url": "file:///r.html"}}},
        {"method": "Network.requestWillBeSent", "params": {"type": "Image", "request": {"url": "data:image/png;x"}}},
        {"method": "Network.requestWillBeSent", "params": {"type": "Font", "request": {"url": "https://cdn/x.woff"}}},
    ]
    assert browser_check.problems_in(events) == [
        "uncaught exception: ReferenceError: x",
        "console.error: boom",
        "browser log error: Failed to load u",
        "network request: https://cdn/x.woff",
    ]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make browser-check)")
def test_report_loads_cleanly_in_chromium(
    browser_check: ModuleType, make_run: Callable[..., Path], tmp_path: Path
) -> None:
    from deft_aoi.report.collect import collect
    from deft_aoi.report.render import render_report

    run = make_run(kind="finished", object_name="<script>alert(1)</script>")
    view = collect(run)
    html = render_report(run)
    found, page = browser_check.check_page(shutil.which("chromium"), html, tmp_path / "shot.png")
    assert found == []
    cards = len(view.weak_samples) + len(view.mined_pairs)  # an input and a golden (or target) image each
    assert cards > 0 and page["broken"] == 0 and page["images"] == 2 * cards and page["svgs"] == 3
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make browser-check)")
@pytest.mark.parametrize(("kind", "ended"), [
    ("hardstop", "hard stop (leakage) at iter1 · validate"),
    ("failed", "failed stage at baseline · evaluate (StageFailed)"),
    ("interrupted", "interrupted (Ctrl-C) at baseline · evaluate"),
])
def test_a_stopped_run_s_report_says_how_it_ended_in_chromium(
    browser_check: ModuleType, make_run: Callable[..., Path], tmp_path: Path, kind: str, ended: str
) -> None:
    """Issue 27.1: what a user sees in a browser after a hard stop, a failed stage and Ctrl-C (screenshot kept
    under the test's tmp dir)."""
    from deft_aoi.report.render import render_report

    html = render_report(make_run(kind=kind))
    shot = tmp_path / f"report_{kind}.png"
    found, page = browser_check.check_page(shutil.which("chromium"), html, shot)
    assert found == []
    assert page["ended"] == ended
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
