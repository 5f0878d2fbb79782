"""Fault injection beside the chaos test: real faults a run meets on a customer machine.

Each fault ends with one clear message (no traceback), a state `deft status` reads, and a run that
`deft resume` finishes with the same result as an undisturbed run. Disk full and read-only use a real tmpfs
when this process may mount one (root in CI); otherwise the same errno is injected, and the test says so
in its output (`-rA` / the captured stdout).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app

from ._runs import fingerprint

# `make test-slow` (CI runs it): whole-loop runs, minutes on a loaded 2-core box; `make test` stays quick.
pytestmark = pytest.mark.slow
ARGS = ["--backend", "fake", "--yes", "--max-iterations", "1", "--epochs", "2", "--seed", "3"]


def deft(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "DEFT_FAKE_FAULT": "", **(env or {})})


def no_traceback(result) -> str:
    text = result.output
    assert "Traceback (most recent call last)" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return text


def only_run(ws: Path) -> Path:
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return runs[0]


def failed_run(ws: Path) -> Path:
    """A run that committed stage_synth and train, then failed at the baseline inference (resumable)."""
    result = deft("run", "-w", str(ws), *ARGS, env={"DEFT_FAKE_FAULT": "inference:exit1"})
    assert result.exit_code == 1, result.output
    return only_run(ws)


def status_json(ws: Path) -> dict:
    result = deft("status", "-w", str(ws), "--json")
    no_traceback(result)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def resume_to_the_end(ws: Path) -> None:
    result = deft("resume", "-w", str(ws))
    assert result.exit_code == 0, no_traceback(result)
    assert status_json(ws)["status"] == "finished"


@pytest.fixture(scope="module")
def undisturbed(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    ws = tmp_path_factory.mktemp("undisturbed") / "ws"
    shutil.copytree(demo_template, ws)
    result = deft("run", "-w", str(ws), *ARGS)
    assert result.exit_code == 0, result.output
    return fingerprint(ws)


# ------------------------------------------------------------------ a small filesystem of our own


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[bool]:
    """A tmpfs of `size_kb` at `path` when mounting is permitted (yields True), else a plain dir (False)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path))
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def kb_used(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def inject(monkeypatch: pytest.MonkeyPatch, code: int, *, where: str) -> None:
    """Fallback without mount rights: writes under `where` fail with `code`, as a full or read-only disk does."""
    from deft_aoi import io_utils

    real = io_utils.atomic_open

    @contextlib.contextmanager
    def refusing(path: Path, *a: object, **kw: object) -> Iterator:
        if str(path).startswith(where) and os.environ.get("DEFT_TEST_REFUSE") == "1":
            raise OSError(code, os.strerror(code), str(path))
        with real(path, *a, **kw) as fh:  # type: ignore[arg-type]
            yield fh

    monkeypatch.setattr(io_utils, "atomic_open", refusing)


# ------------------------------------------------------------------ the faults


def test_disk_full_fails_the_stage_then_resume_matches(
    demo_template: Path, tmp_path: Path, undisturbed: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = tmp_path / "small"
    with tmpfs(mnt, kb_used(demo_template) + 400) as mounted:
        ws = mnt / "ws"
        shutil.copytree(demo_template, ws)
        env = {}
        if not mounted:
            print("disk full: no mount rights here, ENOSPC injected into the run's writes")
            inject(monkeypatch, errno.ENOSPC, where=str(ws / "results"))
            env = {"DEFT_TEST_REFUSE": "1"}
        else:
            print("disk full: a real 400 kB-headroom tmpfs")
        result = deft("run", "-w", str(ws), *ARGS, env=env)
        text = no_traceback(result)
        assert result.exit_code == 1
        assert "no space left on the device holding" in text and "deft resume" in text
        assert "MB free now" in text and f"holding {ws}" in text  # the full device, not the cwd's
        doc = status_json(ws)
        assert doc["status"] in ("failed", "interrupted")  # interrupted = the failure itself found no room
        if mounted:
            assert _mount("-o", "remount,size=200m", str(mnt))
        resume_to_the_end(ws)  # env without DEFT_TEST_REFUSE: the disk has room again
        assert fingerprint(ws) == undisturbed


def test_read_only_workspace_is_refused_clearly_then_resume_matches(
    demo_template: Path, tmp_path: Path, undisturbed: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = tmp_path / "ro"
    with tmpfs(mnt, 64 * 1024) as mounted:
        ws = mnt / "ws"
        shutil.copytree(demo_template, ws)
        if not mounted:
            pytest.skip("read-only workspace needs a remountable tmpfs (mount rights); see the EROFS unit tests")
        failed_run(ws)
        assert _mount("-o", "remount,ro", str(mnt))
        try:
            pre = deft("preflight", "-w", str(ws), "--json")
            assert pre.exit_code == 1
            checks = {c["name"]: c for c in json.loads(pre.stdout)["checks"]}
            assert checks["workspace writable"]["status"] == "fail"
            assert "read-only" in checks["workspace writable"]["detail"]
            for args in (["run", "-w", str(ws), *ARGS], ["resume", "-w", str(ws)], ["report", "-w", str(ws)],
                         ["demo-data", "--out", str(ws / "more")]):
                result = deft(*args)
                text = no_traceback(result)
                assert result.exit_code == 1, (args, text)
                assert "read-only" in text, (args, text)
            assert status_json(ws)["status"] == "failed"
        finally:
            assert _mount("-o", "remount,rw", str(mnt))
        resume_to_the_end(ws)
        assert fingerprint(ws) == undisturbed


def test_torn_and_binary_log_tails_are_skipped_and_repaired(demo_ws: Path, undisturbed: dict) -> None:
    run = failed_run(demo_ws)
    log = run / "loop_log.jsonl"
    with open(log, "ab") as fh:
        fh.write(b'\xff\xfe\x00binary junk\x00\x00\n')  # a whole line of junk
        fh.write('{"seq": 99, "summary": "é'.encode()[:-1])  # torn inside a multi-byte character
    train_log = run / "baseline" / "train" / "train.log"
    with open(train_log, "ab") as fh:
        fh.write(b"\x00" * 64 + b"\xc3")  # a crashed writer's NUL hole and half a character
    doc = status_json(demo_ws)
    assert any("loop_log.jsonl" in note and "skipped" in note for note in doc["notes"]), doc["notes"]
    good = (run / "DEFT_Loop_Report.html").read_text()  # rendered when the run failed, from whole files
    report = deft("report", "-w", str(demo_ws))
    assert report.exit_code == 0, no_traceback(report)
    # The page from the damaged log has a note more: it goes beside the good one, which is kept.
    assert (run / "DEFT_Loop_Report.html").read_text() == good
    assert "unreadable line" in (run / "DEFT_Loop_Report.incomplete.html").read_text()
    resume_to_the_end(demo_ws)
    assert not log.read_bytes().endswith(b"\xc3")
    assert fingerprint(demo_ws) == undisturbed


def test_corrupt_stage_record_without_state_is_redone(demo_ws: Path, undisturbed: dict) -> None:
    run = failed_run(demo_ws)
    (run / "baseline" / "train" / ".stage.json").write_bytes(b'{"iteration": "baseline", "sta\x00\xff')
    (run / "deft_state.json").unlink()
    doc = status_json(demo_ws)
    assert any("baseline/train/.stage.json is damaged" in note for note in doc["notes"]), doc["notes"]
    assert deft("report", "-w", str(demo_ws)).exit_code == 0
    resume_to_the_end(demo_ws)
    assert fingerprint(demo_ws) == undisturbed


def test_deleted_start_record_is_recreated_by_resume(demo_ws: Path, undisturbed: dict) -> None:
    run = failed_run(demo_ws)
    (run / "run_config.json").unlink()
    assert status_json(demo_ws)["status"] == "failed"
    assert deft("report", "-w", str(demo_ws)).exit_code == 0
    resume_to_the_end(demo_ws)
    assert json.loads((run / "run_config.json").read_text())["run_id"] == run.name
    assert fingerprint(demo_ws) == undisturbed


def test_hung_job_fails_at_its_timeout_then_resume_matches(demo_ws: Path, undisturbed: dict) -> None:
    # 90 s: well above a fake job on a loaded box (6 s seen at load 5, past 30 s at load 7 with four tiers
    # running), and the hang never ends by itself
    result = deft("run", "-w", str(demo_ws), *ARGS, "--stage-timeout", "90",
                  env={"DEFT_FAKE_FAULT": "inference:hang:once"})
    text = no_traceback(result)
    assert result.exit_code == 1
    assert "timed out after 90s" in text
    doc = status_json(demo_ws)
    assert doc["status"] == "failed" and doc["failure"]["stage"] == "inference"
    resume_to_the_end(demo_ws)
    assert fingerprint(demo_ws) == undisturbed


def test_killed_run_is_not_running_and_watch_ends(demo_ws: Path) -> None:
    """A SIGKILLed run's state still says "running"; no live lock holder means it is not."""
    from deft_aoi.report.live import watch

    run = failed_run(demo_ws)
    state = json.loads((run / "deft_state.json").read_text())
    state["status"], state["failure"] = "running", None  # what a SIGKILL mid-stage leaves
    state["iterations"]["baseline"]["stages"]["inference"]["status"] = "in_progress"
    (run / "deft_state.json").write_text(json.dumps(state))
    doc = status_json(demo_ws)
    assert doc["status"] == "interrupted" and "killed" in doc["failure"]["message"]
    assert "deft resume" in doc["next_action"]
    watch(run, interval_s=0.01)  # returns at once instead of refreshing forever
    resume_to_the_end(demo_ws)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_injected_filesystem_refusals_are_one_line(demo_ws: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Without mount rights the tmpfs tests above cannot run everything; the same errno injected here can."""
    failed_run(demo_ws)
    inject(monkeypatch, code, where=str(demo_ws))
    words = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left",
             errno.EACCES: "permission denied"}[code]
    for args in (["report", "-w", str(demo_ws)], ["resume", "-w", str(demo_ws)],
                 ["demo-data", "--out", str(demo_ws / "more")]):
        result = deft(*args, env={"DEFT_TEST_REFUSE": "1"})
        text = no_traceback(result)
        assert result.exit_code == 1 and words in text, (args, text)
    assert status_json(demo_ws)["status"] in ("failed", "interrupted")
    resume_to_the_end(demo_ws)
