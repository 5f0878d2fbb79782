"""Issue 28's reproductions (points 3-12) through the CLI, as a user runs them: a stage that commits a torn
output, named pipes, YAML/JSON bombs, terminal escapes from data, huge CSV cells, symlinks out of the
workspace, `--out` that is a file, a full disk in the late stages, a run whose state file is gone. Each ends
in one clear message naming the file (no traceback, no hang) and a state `deft status` / `deft resume` read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app

ARGS = ["--backend", "fake", "--yes", "--max-iterations", "1", "--epochs", "2", "--seed", "3"]
TRACEBACK = "Traceback (most recent call last)"


def deft(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "DEFT_FAKE_FAULT": "", **(env or {})})
    assert TRACEBACK not in result.output, result.output
    assert "internal error" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def only_run(ws: Path) -> Path:
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return runs[0]


def state_of(ws: Path) -> dict:
    return json.loads((only_run(ws) / "deft_state.json").read_text())


# ---------------------------------------------------------------- 3. a torn inference.csv is never committed


def test_partial_inference_fails_its_own_stage_and_resume_redoes_it(demo_ws: Path, tmp_path: Path) -> None:
    env = {"DEFT_FAKE_FAULT": "inference:partial:once", "DEFT_FAKE_STATE_DIR": str(tmp_path / "fake")}
    first = deft("run", "-w", str(demo_ws), *ARGS, env=env)
    assert first.exit_code == 1
    assert "the inference job wrote an unusable CSV" in first.output
    baseline = state_of(demo_ws)["iterations"]["baseline"]
    assert baseline["stages"]["inference"]["status"] == "failed"
    assert "evaluate" not in baseline["stages"]
    resumed = deft("resume", "-w", str(demo_ws), env=env)
    assert resumed.exit_code == 0, resumed.output
    assert state_of(demo_ws)["status"] == "finished"


def test_a_clean_but_short_inference_csv_is_refused(tmp_path: Path) -> None:
    from deft_aoi.errors import StageFailed
    from deft_aoi.runners.tao.outputs import check_inference_csv

    header = "input_path,golden_path,label,object_name"
    infer = tmp_path / "kpi.csv"
    infer.write_text(f"{header}\na,b,PASS,o1\na,b,PASS,o2\na,b,short,o3\n")
    out = tmp_path / "inference.csv"
    out.write_text(f"{header},siamese_score\na,b,PASS,o1,0.1\na,b,PASS,o2,0.2\n")
    with pytest.raises(StageFailed, match="2 scored row"):
        check_inference_csv(out, infer)
    out.write_text(f"{header},siamese_score\na,b,PASS,o1,0.1\na,b,PASS,o2,0.2\na,b,short,o3,nan\n")
    with pytest.raises(StageFailed, match="not a number"):
        check_inference_csv(out, infer)
    out.write_text("input_path,golden_path,label,siamese_score\na,b,PASS,0.1\na,b,PASS,0.2\na,b,short,0.3\n")
    with pytest.raises(StageFailed, match="object_name"):
        check_inference_csv(out, infer)
    out.write_text(f"{header},siamese_score\na,b,PASS,o1,0.1\na,b,PASS,o2,0.2\na,b,short,o3,0.9\n")
    assert len(check_inference_csv(out, infer)) == 3


# ---------------------------------------------------------------- 4. named pipes never hang deft


def _fifo_in_place_of(ws: Path, what: str) -> Path:
    import os

    target = {"image": next(p for p in sorted((ws / "kpi" / "images").rglob("*")) if p.is_file()),
              "spec": ws / "specs" / "baseline_spec.yaml",
              "csv": ws / "kpi" / "testing_set.csv",
              "pool image": next(p for p in sorted((ws / "augmentation" / "mining_pool" / "images").rglob("*"))
                                 if p.is_file()),
              "synthetic": next(p for p in sorted((ws / "augmentation" / "anomalygen" / "original_image").iterdir())
                                if p.is_file())}[what]
    target.unlink()
    os.mkfifo(target)
    return target


@pytest.mark.parametrize("what", ["image", "spec", "csv", "pool image", "synthetic"])
def test_a_named_pipe_is_refused_by_name_not_waited_on(demo_ws: Path, what: str) -> None:
    """Run in a child process with a timeout: on the old code the read blocks forever."""
    import subprocess
    import sys

    fifo = _fifo_in_place_of(demo_ws, what)
    for command in (["preflight"], ["run", "--yes"]):
        done = subprocess.run([sys.executable, "-m", "deft_aoi.cli", *command, "-w", str(demo_ws), "--backend",
                               "fake"], capture_output=True, text=True, timeout=120, env={**_env(), "NO_COLOR": "1"})
        assert done.returncode == 1, done.stderr
        assert f"{fifo}: is a named pipe (FIFO), not a regular file" in done.stdout + done.stderr
        assert TRACEBACK not in done.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DEFT_")}


# ---------------------------------------------------------------- 5. YAML alias bombs, deep YAML and JSON

BOMB = "lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
DEEP_FLOW = "deep: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_BLOCK = "deep:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 3000)) + "  " * 3000 + "x: 1\n"


@pytest.mark.parametrize(("text", "words"), [(BOMB, "YAML expands to more than 200,000 nodes"),
                                             (DEEP_FLOW, "YAML nested more than 64 levels deep"),
                                             (DEEP_BLOCK, "YAML nested more than 64 levels deep")])
@pytest.mark.parametrize("where", ["specs/baseline_spec.yaml", "versions.yaml"])
def test_yaml_bombs_and_deep_yaml_are_refused_by_name(demo_ws: Path, text: str, words: str, where: str) -> None:
    target = demo_ws / where
    original = target.read_text() if target.exists() else "images: {}\n"
    target.write_text(text + original)
    result = deft("preflight", "-w", str(demo_ws), "--backend", "fake", "--json")
    assert result.exit_code == 1
    details = [c["detail"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert any(d.startswith(f"{target}: {words}") for d in details), details


def test_anchors_a_real_spec_uses_still_load(tmp_path: Path) -> None:
    from deft_aoi.workspace.spec_file import load_yaml_mapping

    spec = tmp_path / "spec.yaml"
    spec.write_text("base: &b {lr: 0.1, epochs: 3}\ntrain: *b\nval: {<<: *b, epochs: 1}\n")
    assert load_yaml_mapping(spec)["val"] == {"lr": 0.1, "epochs": 1}


@pytest.mark.parametrize("depth", [100, 100_000])
def test_a_deeply_nested_state_file_is_unreadable_not_a_bug(demo_ws: Path, depth: int) -> None:
    assert deft("run", "-w", str(demo_ws), *ARGS, env={"DEFT_FAKE_FAULT": "inference:exit1"}).exit_code == 1
    state_file = only_run(demo_ws) / "deft_state.json"
    text = state_file.read_text().rstrip().rstrip("}")
    state_file.write_text(text + ', "deep": ' + "[" * depth + "]" * depth + "}\n")
    status = deft("status", "-w", str(demo_ws))
    assert status.exit_code == 0, status.output
    assert "deft_state.json is unreadable: state rebuilt" in status.output
    assert deft("resume", "-w", str(demo_ws)).exit_code == 0


# ---------------------------------------------------------------- 6. terminal escapes from data

TITLE, HIDE = "\x1b]0;PWNED\x07", "\x1b[8m"


def test_escapes_in_a_label_are_shown_not_acted_on(demo_ws: Path) -> None:
    csv = demo_ws / "kpi" / "testing_set.csv"
    csv.write_text(csv.read_text().replace(",scratch,", f",scratch{TITLE}{HIDE}\u202e,"))
    assert deft("run", "-w", str(demo_ws), *ARGS).exit_code == 0
    for args in (("status",), ("status", "--json"), ("report",), ("resume",)):
        result = deft(*args, "-w", str(demo_ws))
        assert "\x1b" not in result.output and "\u202e" not in result.output, args
        assert "\x07" not in result.output and "\x9b" not in result.output, args
    status = deft("status", "-w", str(demo_ws)).output
    assert "scratch\\x1b]0;pwned\\x07\\x1b[8m\\u202e" in status  # what the file holds, readable
    assert json.loads(deft("status", "-w", str(demo_ws), "--json").stdout)["status"] == "finished"  # valid JSON


def test_a_rich_table_on_a_terminal_is_made_printable_too() -> None:
    import io

    from rich.console import Console

    from deft_aoi.console import print_table

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, no_color=True, width=200)
    print_table(console, ("label", "rows"), [(f"scratch{TITLE}{HIDE}\x9b", "3"), ((f"x{HIDE}", "red"), "1")])
    text = buffer.getvalue()
    assert "]0;PWNED" not in text.replace("\\x1b]0;PWNED", "") and "\x9b" not in text
    assert "scratch\\x1b]0;PWNED\\x07\\x1b[8m\\x9b" in text


def test_say_and_console_print_make_strings_printable(capsys: pytest.CaptureFixture[str]) -> None:
    from deft_aoi.console import err_console, say

    err_console.cache_clear()
    say(f"label {TITLE}{HIDE}")
    err_console().print(f"note: {HIDE}x", markup=False)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "label \\x1b]0;PWNED\\x07\\x1b[8m" in err and "note: \\x1b[8mx" in err


# ---------------------------------------------------------------- 7. a CSV cell over 128 KB


def _huge_cell(csv: Path, size: int) -> None:
    lines = csv.read_text().splitlines()
    cells = lines[5].split(",")
    cells[lines[0].split(",").index("description")] = "x" * size
    lines[5] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")


def test_a_legal_csv_with_a_200kb_cell_is_read(demo_ws: Path) -> None:
    """The fake backend is the docker runner on an in-memory client: its TAO rule checks read every CSV."""
    _huge_cell(demo_ws / "kpi" / "testing_set.csv", 200_000)
    result = deft("preflight", "-w", str(demo_ws), "--backend", "fake", "--json")
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert not [c for c in failed if "testing_set.csv" in c["detail"]], failed


def test_a_cell_beyond_the_bound_is_refused_naming_file_and_row(tmp_path: Path) -> None:
    from deft_aoi.bounded import MAX_BYTES
    from deft_aoi.errors import InputError
    from deft_aoi.runners.tao.rules import dataset_facts

    csv = tmp_path / "kpi.csv"
    csv.write_text("input_path,golden_path,label,object_name,description\n" + "a,b,PASS,o,d\n" * 4 +
                   "a,b,PASS,o,d\n")
    _huge_cell(csv, MAX_BYTES + 10)
    with pytest.raises(InputError) as info:
        dataset_facts("KPI", str(csv))
    assert info.value.file == str(csv) and info.value.row == 6


# ---------------------------------------------------------------- 8, 9. symlinks out of the workspace


def test_a_synthetic_image_symlinked_outside_is_refused_like_the_other_sets(demo_ws: Path) -> None:
    outside = demo_ws.parent / "outside"
    outside.mkdir()
    image = sorted((demo_ws / "augmentation" / "anomalygen" / "reconstructed_image").iterdir())[0]
    shutil.move(image, outside / image.name)
    image.symlink_to(outside / image.name)
    for command in (["preflight"], ["run", "--yes"]):
        result = deft(*command, "-w", str(demo_ws), "--backend", "fake")
        assert result.exit_code == 1, result.output
        assert f"'{image.name}' resolves outside the images root" in result.output


def test_results_symlinked_outside_is_refused_at_preflight(demo_ws: Path) -> None:
    outside = demo_ws.parent / "elsewhere"
    outside.mkdir()
    (demo_ws / "results").symlink_to(outside)
    result = deft("run", "-w", str(demo_ws), *ARGS)
    assert result.exit_code == 1
    assert f"{demo_ws / 'results'} resolves outside the workspace ({outside})" in result.output
    assert not any(outside.iterdir())  # nothing written outside


# ---------------------------------------------------------------- 10. --out that is a file


@pytest.mark.parametrize("shape", ["file", "parent is a file", "mining_results is a file"])
def test_out_that_is_a_file_is_a_clean_refusal(demo_ws: Path, tmp_path: Path, shape: str) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("mine\n")
    out = {"file": blocker, "parent is a file": blocker / "sub", "mining_results is a file": tmp_path / "o"}[shape]
    if shape == "mining_results is a file":
        out.mkdir()
        (out / "mining_results").write_text("x\n")
    inference = tmp_path / "inference.csv"
    inference.write_text("input_path,golden_path,label,object_name,siamese_score\n"
                         "a,b,PASS,o1,0.1\na,b,bridge,o2,0.9\n")
    commands = [("kpi", str(inference), "--out", str(out)),
                ("mine", "--targets", str(demo_ws / "kpi" / "testing_set.csv"),
                 "--pool", str(demo_ws / "augmentation" / "mining_pool" / "mining_pool.csv"),
                 "--workspace", str(demo_ws), "--out", str(out))]
    for args in commands:
        if shape == "mining_results is a file" and args[0] == "kpi":
            continue  # kpi writes into --out itself
        result = deft(*args)
        assert result.exit_code == 1, (args[0], result.output)
        assert "--out must be a directory; this is a file" in result.output, result.output
    assert blocker.read_text() == "mine\n"


# ---------------------------------------------------------------- 11. disk full while a late stage commits


@pytest.mark.parametrize("where", ["record", "log line"])
@pytest.mark.parametrize("stage", ["rca", "handoff"])
def test_disk_full_during_a_commit_names_the_run_and_fails_the_stage(
        demo_ws: Path, monkeypatch: pytest.MonkeyPatch, where: str, stage: str) -> None:
    """A write() that hits a full disk raises ENOSPC naming no file; the commit is where a late stage meets it."""
    import errno

    from deft_aoi.loop import commit
    from deft_aoi.loop.store import StateStore

    fired: list[bool] = []

    def full(*_: object) -> None:
        fired.append(True)
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "record":
        real_record = commit.write_stage_record

        def write_stage_record(directory: Path, record: dict) -> None:
            if record["stage"] == stage and not fired:
                full()
            real_record(directory, record)

        monkeypatch.setattr(commit, "write_stage_record", write_stage_record)
    else:
        real_append = StateStore.append_log

        def append_log(self: StateStore, **kw: object):  # type: ignore[no-untyped-def]
            if kw["stage"] == stage and kw["status"] == "ok" and not fired:
                full()
            return real_append(self, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(StateStore, "append_log", append_log)
    result = deft("run", "-w", str(demo_ws), *ARGS)
    assert fired and result.exit_code == 1, result.output
    run = only_run(demo_ws)
    assert f"no space left on the device holding {run}" in result.output
    doc = json.loads(deft("status", "-w", str(demo_ws), "--json").stdout)
    assert doc["status"] == "failed" and doc["failure"]["kind"] == "disk_full", doc
    status = deft("status", "-w", str(demo_ws)).output
    assert "killed or crashed" not in status
    resumed = deft("resume", "-w", str(demo_ws))
    assert resumed.exit_code == 0, resumed.output
    assert state_of(demo_ws)["status"] == "finished"


# ---------------------------------------------------------------- 12. a finished run that lost its state file


def test_lost_state_and_damaged_record_say_what_is_lost_and_keep_the_good_report(demo_ws: Path) -> None:
    assert deft("run", "-w", str(demo_ws), *ARGS).exit_code == 0
    run = only_run(demo_ws)
    good = (run / "DEFT_Loop_Report.html").read_text()
    (run / "deft_state.json").unlink()
    record = run / "baseline" / "evaluate" / ".stage.json"
    assert record.exists()
    record.write_bytes(b"\x00\x00{torn")
    status = deft("status", "-w", str(demo_ws))
    assert status.exit_code == 0
    assert "baseline/evaluate/.stage.json is damaged: skipped; the run had finished" in status.output
    assert "will be redone" not in status.output and "redoes that stage" not in status.output
    resumed = deft("resume", "-w", str(demo_ws))
    assert "has finished" in resumed.output  # what the note said: nothing redoes it
    report = deft("report", "-w", str(demo_ws))
    assert report.exit_code == 0
    assert (run / "DEFT_Loop_Report.html").read_text() == good  # the good report is kept
    beside = run / "DEFT_Loop_Report.incomplete.html"
    assert beside.exists() and f"written beside it: {beside}" in report.output


def test_a_damaged_record_of_an_unfinished_run_is_redone_as_the_note_says(demo_ws: Path) -> None:
    assert deft("run", "-w", str(demo_ws), *ARGS, env={"DEFT_FAKE_FAULT": "inference:exit1"}).exit_code == 1
    run = only_run(demo_ws)
    (run / "deft_state.json").unlink()
    (run / "baseline" / "train" / ".stage.json").write_text("{}")
    status = deft("status", "-w", str(demo_ws)).output
    assert "baseline/train/.stage.json is damaged: skipped; `deft resume` redoes that stage" in status
    assert deft("resume", "-w", str(demo_ws)).exit_code == 0
    assert state_of(demo_ws)["status"] == "finished"


# ---------------------------------------------------------------- hostile corpus: numbers from flags


@pytest.mark.parametrize(("flag", "value"), [("--min-similarity", "nan"), ("--near-duplicate-threshold", "nan"),
                                             ("--recall-floor", "-nan"), ("--timeout-per-sample-epoch", "inf"),
                                             ("--max-pass-ratio", "nan")])
def test_non_finite_numbers_are_refused_where_they_enter(demo_ws: Path, flag: str, value: str) -> None:
    """NaN passes every range check written as comparisons (they are all False)."""
    result = deft("run", "-w", str(demo_ws), *ARGS, flag, value)
    assert result.exit_code == 2 and f"{flag} must be a finite number" in result.output, result.output
    assert not (demo_ws / "results").exists()
