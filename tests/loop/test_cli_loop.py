"""`deft run / resume / status` end to end with the fake docker backend on a generated workspace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS, artefact

FAST = ["--backend", "fake", "--max-iterations", "1", "--epochs", "2", "--seed", "1"]


def deft(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", **(env or {})})


def only_run(ws: Path) -> Path:
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return runs[0]


def state(run: Path) -> dict:
    return json.loads((run / "deft_state.json").read_text())


def test_no_tty_and_no_yes_is_a_usage_error_and_writes_nothing(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), *FAST)
    assert result.exit_code == 2
    assert "--yes" in result.output
    assert not list(demo_ws.glob("results/run_*"))


def test_resume_accepts_the_same_yes_as_run(tmp_path: Path) -> None:
    for flag in ("--yes", "-y"):
        result = deft("resume", "-w", str(tmp_path), flag)
        assert result.exit_code == 2  # nothing to resume here, and the flag itself is fine
        assert "no deft run here" in result.output and "No such option" not in result.output


def test_injected_fault_fails_the_stage_then_resume_finishes(demo_ws: Path) -> None:
    env = {"DEFT_DOCKER": "fake", "DEFT_FAKE_FAULT": "inference:exit1:once"}
    args = ["run", "-w", str(demo_ws), "--yes", *FAST]
    args[args.index("fake")] = "docker"
    result = deft(*args, env=env)
    assert result.exit_code == 1
    assert "exited with code 1" in result.output
    run = only_run(demo_ws)
    st = state(run)
    assert st["status"] == "failed" and st["failure"]["hard_stop"] is False
    assert st["iterations"]["baseline"]["stages"]["inference"]["status"] == "failed"
    train_log = run / st["iterations"]["baseline"]["stages"]["train"]["outputs"]["train.log"]["path"]
    assert "visual_changenet train -e" in train_log.read_text().splitlines()[0]
    resumed = deft("resume", "-w", str(demo_ws), "--yes", env=env)  # scripts pass run's --yes to resume too
    assert resumed.exit_code == 0, resumed.output
    doc = json.loads(deft("status", "-w", str(demo_ws), "--json").stdout)
    assert doc["status"] == "finished"
    assert doc["stage"] == "finished" and doc["next_action"] is None
    assert doc["best_model"]["json"] == str(run / "best_model.json") and Path(doc["best_model"]["json"]).is_file()
    assert [it["name"] for it in doc["iterations"]] == ["baseline", "iter1"]
    assert all(it["status"] == "complete" for it in doc["iterations"])
    assert all(it["far_pct"] is not None for it in doc["iterations"])


def test_resume_refuses_when_the_spec_changed(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, env={"DEFT_FAKE_FAULT": "train:exit1"})
    assert result.exit_code == 1
    spec = demo_ws / "specs" / "baseline_spec.yaml"
    spec.write_text(spec.read_text() + "\n# edited after the run started\n")
    resumed = deft("resume", "-w", str(demo_ws))
    assert resumed.exit_code == 1
    assert "changed since the run started: spec" in resumed.output


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_leak_that_slipped_past_preflight_is_a_hard_stop_naming_the_check(
    demo_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    val = pd.read_csv(demo_ws / "train/base/validation_set.csv", dtype=str, keep_default_na=False)
    row = val[val["label"] != "PASS"].iloc[0]
    pool_csv = demo_ws / "augmentation/mining_pool/mining_pool.csv"
    pool = pd.read_csv(pool_csv, dtype=str, keep_default_na=False)
    light = "SolderLight"
    ext = Path(next((demo_ws / "kpi/images" / row["input_path"]).glob(f"{row['object_name']}_*"))).suffix
    for side, col in (("test", "input_path"), ("golden", "golden_path")):
        dest = demo_ws / "augmentation/mining_pool/images/leak9999" / side
        dest.mkdir(parents=True, exist_ok=True)
        src = demo_ws / "kpi/images" / row[col] / f"{row['object_name']}_{light}{ext}"
        (dest / f"renamed_{light}{ext}").write_bytes(src.read_bytes())
    leaked = row.copy()
    leaked["input_path"], leaked["golden_path"] = "images/leak9999/test", "images/leak9999/golden"
    leaked["object_name"], leaked["boardname"] = "renamed", "leakboard"
    pd.concat([pool, leaked.to_frame().T]).to_csv(pool_csv, index=False)
    # Pre-flight lists the copy and the mine stage drops it (tests/workspace/test_pool_hygiene.py); here that
    # filter is switched off, as if a check had missed the row, to reach the last line of defence.
    from deft_aoi.loop.stages import data

    monkeypatch.setattr(data, "drop_exclusions", lambda pool, _file: (pool, 0))
    # Mine (almost) the whole pool so the copied row is certainly among the new rows (the plain k-NN:
    # `kpi` would take only the neighbourhoods of the rows wrong at the threshold).
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--top-k", "5000", "--min-similarity", "-1",
                  "--strategy", "knn")
    assert result.exit_code == 1
    assert "leak9999" in result.output and "validation" in result.output
    assert "Pre-flight should have caught this (same input pixels (sha256)): check 'pool hygiene (leaks " \
           "excluded from mining)'" in " ".join(result.output.split())
    assert "pool_exclusions.csv" in result.output
    run = only_run(demo_ws)
    st = state(run)
    assert st["failure"]["hard_stop"] is True and st["failure"]["kind"] == "leakage"
    assert st["failure"]["stage"] == "mine"
    assert (run / "iter1/mining_filter/merge_validation_mined.json").exists()
    refused = deft("resume", "-w", str(demo_ws))
    assert refused.exit_code == 1 and "hard stop" in refused.output


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_ctrl_c_exits_130_and_the_run_resumes(demo_ws: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "DEFT_FAKE_FAULT": "train:hang"}
    proc = subprocess.Popen([sys.executable, "-m", "deft_aoi.cli", "run", "-w", str(demo_ws), "--yes", *FAST],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while True:
        runs = list(demo_ws.glob("results/run_*/deft_state.json"))
        if runs and "train" in state(runs[0].parent)["iterations"].get("baseline", {}).get("stages", {}):
            break
        assert time.monotonic() < deadline and proc.poll() is None, "never reached the train stage"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    run = only_run(demo_ws)
    st = state(run)
    assert st["status"] == "interrupted"
    assert st["iterations"]["baseline"]["stages"]["train"]["status"] == "interrupted"
    resumed = deft("resume", "-w", str(demo_ws))
    assert resumed.exit_code == 0, resumed.output
    assert state(run)["status"] == "finished"


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_baseline_checkpoint_skips_baseline_training(demo_ws: Path, tmp_path: Path) -> None:
    first = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--max-iterations", "0")
    assert first.exit_code == 0, first.output
    ckpt = state(only_run(demo_ws))["iterations"]["baseline"]["best_ckpt_path"]
    seeded = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--max-iterations", "0", "--baseline-checkpoint", ckpt)
    assert seeded.exit_code == 0, seeded.output
    run = sorted((demo_ws / "results").glob("run_*"))[-1]
    log = [json.loads(x) for x in (run / "loop_log.jsonl").read_text().splitlines()]
    train = [e for e in log if e["stage"] == "train"]
    assert len(train) == 1 and train[0]["summary"].startswith("seeded from")
    assert state(run)["iterations"]["baseline"]["far_pct"] is not None


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_secrets_from_env_file_never_reach_results(demo_ws: Path) -> None:
    secret = "nvapi-THIS-IS-SECRET-0123456789"
    (demo_ws / ".env").write_text(f"NGC_API_KEY={secret}\nHF_TOKEN=hf_also_secret_987654\n")
    args = ["run", "-w", str(demo_ws), "--yes", *FAST]
    args[args.index("fake")] = "docker"
    result = deft(*args, env={"DEFT_DOCKER": "fake"})
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    for path in (demo_ws / "results").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"hf_also_secret_987654" not in data, path


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_strategy_guards_and_finetune_protocol_flow_through_the_run(demo_ws: Path) -> None:
    args = ["run", "-w", str(demo_ws), "--yes", *FAST, "--strategy", "diverse", "--pool-share", "20",
            "--max-pass-ratio", "1", "--finetune-from", "baseline"]
    result = deft(*args)
    assert result.exit_code == 0, result.output
    run = only_run(demo_ws)
    st = state(run)
    mining = st["config"]["mining_filter"]
    assert (mining["strategy"], mining["pool_share_pct"], mining["max_pass_ratio"]) == ("diverse", 20.0, 1.0)
    assert st["config"]["finetune_from"] == "baseline"
    it1 = st["iterations"]["iter1"]
    counts = it1["counts"]
    assert counts["selected_pass"] <= counts["selected_defect"]  # the class-balance guard at 1 : 1
    assert counts["selected_pass"] + counts["selected_defect"] == counts["mined_total"]
    assert counts["selected_pool_share_permille"] <= 200  # at most 20 % of the pool
    assert "diverse selection, cut-off" in it1["stages"]["mine"]["summary"]
    spec = (run / "iter1" / "train" / "spec.yaml").read_text()
    # best_ckpt_path (CONTRACTS §8) is the catalog's link; the spec names the TAO checkpoint it links to
    chosen = Path(st["iterations"]["baseline"]["best_ckpt_path"])
    assert chosen.parent.name == "checkpoints" and chosen.is_symlink()
    assert chosen.resolve().name in spec and "baseline/train" in spec
    summary = (run / "iter1_summary.md").read_text()
    assert "**Selection**" in summary and "PASS : defect" in summary and "**FAR 95% CI**" in summary
    doc = json.loads(deft("status", "-w", str(demo_ws), "--json").stdout)
    for it in doc["iterations"]:
        assert it["far_ci_pct"][0] <= it["far_ci_pct"][1] and it["threshold_defects"]
    text = deft("status", "-w", str(demo_ws)).output
    # Piped: a header and one whole line per iteration with the error-bar columns.
    lines = text.splitlines()
    header = next(ln for ln in lines if ln.startswith("iteration"))
    assert all(col in header for col in ("95% CI", "FAR@r99 %", "set by"))
    line = next(ln for ln in lines if ln.startswith("iter1 "))
    low, high = it1_ci = [f"{v:.1f}" for v in doc["iterations"][1]["far_ci_pct"]]
    assert f"{low}–{high}" in line and "(row " in line, (line, it1_ci)
    report = (run / "DEFT_Loop_Report.html").read_text()
    assert "95 % CI" in report and "selection:" in report
    rca = it1["stages"]["rca"]
    assert "suspect label" in rca["summary"] and (run / rca["outputs"]["rca.suspects"]["path"]).is_file()
    assert 'id="suspects"' in report


def test_unknown_strategy_is_a_usage_error(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--strategy", "magic")
    assert result.exit_code == 2 and "unknown selection strategy" in result.output


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_default_run_offers_the_val_far_checkpoint_and_balances_classes(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--epochs", "4")
    assert result.exit_code == 0, result.output
    run = only_run(demo_ws)
    st = state(run)
    assert st["config"]["mining_filter"]["max_pass_ratio"] == 2.0  # class balance on by default (kpi selection)
    counts = st["iterations"]["iter1"]["counts"]
    assert counts["selected_defect"] == 0 or counts["selected_pass"] <= 2 * counts["selected_defect"]
    for name, it in st["iterations"].items():
        # the train stage's checkpoint artefacts, recorded (hashed) with its outputs; each links a kept checkpoint
        train = it["stages"]["train"]["outputs"]
        assert {k for k in train if artefact(k).format == "checkpoint"} == {"train.best_val", "train.latest",
                                                                              "train.best_far"}, name
        assert all((run / train[k]["path"]).resolve().parent == (run / train["train.results"]["path"]).resolve()
                   for k in CHECKPOINT_KEYS)
        evaluate = run / it["stages"]["evaluate"]["outputs"]["evaluate.candidates"]["path"]
        candidates = json.loads(evaluate.read_text())
        assert set(candidates) == {"best_val", "latest", "best_far"}, name
        # the KPI set picks among them: the chosen one has the lowest FAR@recall100
        assert candidates[it["chosen_checkpoint"]]["far_pct"] == min(c["far_pct"] for c in candidates.values())
        assert "best_far epoch" in it["stages"]["train"]["summary"]
