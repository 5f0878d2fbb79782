"""`--export onnx` (issue 24): the handoff ends with `visual_changenet export` of the best checkpoint.

Against the fake TAO (the docker backend over the in-memory fake engine, and the fake backend); NVIDIA's own
export and the onnxruntime check of its scores are in tests/tao_real/test_export.py."""

from __future__ import annotations

import json
from pathlib import Path

from deft_aoi.runners.fake.tao import ONNX_FORMAT

from .test_cli_loop import FAST, deft, only_run, state


def _records(status: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in status.read_text().splitlines() if line.strip()]


def test_export_onnx_hands_off_the_best_checkpoint_as_onnx(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--export", "onnx")
    assert result.exit_code == 0, result.output
    run = only_run(demo_ws)
    onnx = run / "best_model.onnx"
    assert f"onnx:       {onnx}" in result.output
    best = json.loads((run / "best_model.json").read_text())
    assert best["onnx"] == str(onnx)
    exported = json.loads(onnx.read_text())
    assert exported["format"] == ONNX_FORMAT and exported["checkpoint"] == best["checkpoint"]
    st = state(run)
    assert st["config"]["settings"]["export"] == {"value": "onnx", "source": "flag"}  # what resume reads
    handoff = next(it["stages"]["handoff"] for it in st["iterations"].values() if "handoff" in it["stages"])
    export_dir = run / handoff["output_dir"] / "export"
    records = _records(export_dir / "status.json")
    assert [r["message"] for r in records] == ["Starting Visual ChangeNet export.", "Number of output classes: 2",
                                                "Export finished successfully."]
    log = (export_dir / "export.log").read_text()  # job specs name workspace paths relative to it
    checkpoint = Path(best["checkpoint"]).relative_to(demo_ws)
    assert "visual_changenet export -e" in log and f"export.checkpoint={checkpoint}" in log
    assert f"ONNX file stored at {onnx.relative_to(demo_ws)}" in log
    doc = json.loads(deft("status", "-w", str(demo_ws), "--json").stdout)
    assert doc["best_model"]["onnx"] == str(onnx)


def test_without_export_there_is_no_onnx(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST)
    assert result.exit_code == 0, result.output
    run = only_run(demo_ws)
    assert not (run / "best_model.onnx").exists() and "onnx:" not in result.output
    assert json.loads((run / "best_model.json").read_text())["onnx"] is None


def test_a_failed_export_resumes_with_the_recorded_setting(demo_ws: Path) -> None:
    env = {"DEFT_DOCKER": "fake", "DEFT_FAKE_FAULT": "export:exit1:once"}
    args = ["run", "-w", str(demo_ws), "--yes", *FAST, "--export", "onnx"]
    args[args.index("fake")] = "docker"
    result = deft(*args, env=env)
    assert result.exit_code == 1 and "visual_changenet export: exited with code 1" in result.output
    run = only_run(demo_ws)
    assert state(run)["status"] == "failed"
    assert not (run / "best_model.onnx").exists()
    resumed = deft("resume", "-w", str(demo_ws), "--yes", env=env)  # no --export: the run's own setting
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "best_model.json").read_text())["onnx"] == str(run / "best_model.onnx")
    assert json.loads((run / "best_model.onnx").read_text())["format"] == ONNX_FORMAT


def test_export_on_the_local_backend_is_a_usage_error(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", "--backend", "local", "--export", "onnx")
    assert result.exit_code == 2
    assert "--export onnx" in result.output and "--backend docker" in result.output
    assert not list(demo_ws.glob("results/run_*"))
