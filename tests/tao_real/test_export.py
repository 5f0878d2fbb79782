"""`deft run --export onnx` on NVIDIA's own TAO 7.3.0 (issue 24, Export): the handoff ends with `visual_changenet
export` of the best checkpoint; onnxruntime then scores the KPI rows with that ONNX file and must give TAO's
PyTorch inference scores to 1e-4. The fake TAO runs the same command on a copy of the workspace and must lay out
what the real export lays out (docs/TAO.md lists the deviations left)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from .workspace import tiny_workspace

pytestmark = [pytest.mark.tao_real, pytest.mark.requires_docker, pytest.mark.timeout(7200)]
# Baseline only (train, one inference of the one saved checkpoint, export): the cheapest run with a handoff.
# --stage-timeout: the first run (load ≈ 30 on the shared 2-core box) saw the 1-epoch FAN-tiny train pass deft's
# sized 30 min job timeout; a slow CPU is not a hung job here.
ARGS = ["--yes", "--max-iterations", "0", "--epochs", "1", "--seed", "1", "--no-score-training", "--export", "onnx",
        "--stage-timeout", "3600"]
TIMEOUT = 6000
TOLERANCE = 1e-4
SCORER = Path(__file__).with_name("onnx_scores.py")
# What only the real export logs: TAO's backbone loader reports the placeholder backbone's keys (the fake loads
# no backbone; the same records appear in train, tests/tao_real/test_loop.py).
BACKBONE_RECORDS = ("Loaded pretrained weights from ", "_IncompatibleKeys(")


@dataclass(frozen=True)
class Exported:
    code: int
    out: str
    ws: Path
    run: Path

    @property
    def onnx(self) -> Path:
        return self.run / "best_model.onnx"

    @property
    def export_dir(self) -> Path:
        return self.run / "handoff" / "export"


def _run(ws: Path, backend: str) -> Exported:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFT_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "DEFT_DOCKER_GPUS": "0"})
    proc = subprocess.run([sys.executable, "-m", "deft_aoi.cli", "run", "-w", str(ws), "--backend", backend, *ARGS],
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    (ws / "console.txt").write_text(proc.stdout, encoding="utf-8")
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, (runs, proc.stdout[-3000:])
    return Exported(proc.returncode, proc.stdout, ws, runs[0])


@pytest.fixture(scope="module")
def exported(tao_image: str, demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    root = tmp_path_factory.mktemp("export")
    root.chmod(0o755)
    return {backend: _run(tiny_workspace(demo, root / backend, tao_image), backend) for backend in ("fake", "docker")}


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_handoff_exports_onnx_on_nvidias_tao(exported: dict[str, Exported]) -> None:
    real = exported["docker"]
    assert real.code == 0, real.out[-4000:]
    assert real.onnx.is_file() and real.onnx.stat().st_size > 0
    best = json.loads((real.run / "best_model.json").read_text(encoding="utf-8"))
    assert best["onnx"] == str(real.onnx)
    assert f"onnx:       {real.onnx}" in real.out
    last = _records(real.export_dir / "status.json")[-1]
    assert (last["status"], last["message"]) == ("RUNNING", "Export finished successfully.")
    # TAO prints export.onnx_file as its spec holds it (deft's job specs name workspace paths relative to it)
    stored = [line for line in (real.export_dir / "export.log").read_text(encoding="utf-8").splitlines()
              if "ONNX file stored at " in line]
    assert stored and (real.ws / stored[-1].split("ONNX file stored at ")[-1].strip()).resolve() == real.onnx


def _inference_of(ws: Path, run: Path, checkpoint: str) -> tuple[Path, Path]:
    """(spec.yaml, inference.csv) of the baseline inference job that scored `checkpoint` (a job spec names
    workspace paths relative to the workspace)."""
    for spec in sorted((run / "baseline" / "inference").glob("*/spec.yaml")):
        doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
        if (ws / str(doc["inference"]["checkpoint"])).resolve() == Path(checkpoint).resolve():
            return spec, spec.with_name("inference.csv")
    raise AssertionError(f"no inference job scored {checkpoint}")


def test_onnxruntime_gives_taos_pytorch_scores(exported: dict[str, Exported], tao_image: str) -> None:
    real = exported["docker"]
    assert real.code == 0, real.out[-4000:]
    best = json.loads((real.run / "best_model.json").read_text(encoding="utf-8"))
    spec, scored = _inference_of(real.ws, real.run, best["checkpoint"])
    ws = str(real.ws)
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{ws}:{ws}:ro", "-w", ws,
                           "-v", f"{SCORER}:/tmp/onnx_scores.py:ro", tao_image,
                           "python3", "/tmp/onnx_scores.py", str(spec), str(real.onnx)],
                          text=True, capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["inputs"] == ["input_1", "input_2"]  # scripts/export.py's names: test image, golden image
    pytorch = pd.read_csv(scored)["siamese_score"].to_numpy(dtype=float)
    kpi_rows = len(pd.read_csv(real.ws / "kpi" / "testing_set.csv", dtype=str))
    onnx = np.asarray(doc["scores"], dtype=float)
    assert len(onnx) == len(pytorch) == kpi_rows
    assert np.abs(onnx - pytorch).max() <= TOLERANCE, np.c_[onnx, pytorch]


def _mask(text: str, exp: Exported) -> str:
    return re.sub(r"run_\d{8}_\d{6}", "run_X", text.replace(str(exp.ws), "<ws>"))


def test_the_fake_export_follows_the_real_one(exported: dict[str, Exported]) -> None:
    fake, real = exported["fake"], exported["docker"]
    assert (fake.code, real.code) == (0, 0), real.out[-4000:]
    assert sorted(p.name for p in fake.export_dir.iterdir()) == sorted(p.name for p in real.export_dir.iterdir())
    assert fake.onnx.is_file() and real.onnx.is_file()

    def records(exp: Exported) -> list[tuple[str, str]]:
        return [(r["status"], r["message"]) for r in _records(exp.export_dir / "status.json")
                if not r["message"].startswith(BACKBONE_RECORDS)]

    assert records(fake) == records(real)
    fake_best = json.loads((fake.run / "best_model.json").read_text(encoding="utf-8"))
    real_best = json.loads((real.run / "best_model.json").read_text(encoding="utf-8"))
    assert sorted(fake_best) == sorted(real_best)
    assert _mask(fake_best["onnx"], fake) == _mask(real_best["onnx"], real)

    def lines(exp: Exported, log: str, marks: tuple[str, ...]) -> list[str]:
        # from the mark on: the real job's stderr warnings can share a line with its print()
        return [_mask(line[line.index(mark):].strip(), exp) for line in log.splitlines() for mark in marks
                if mark in line]

    job_marks = ("Export results will be saved at:", "ONNX file stored at")
    assert lines(fake, (fake.export_dir / "export.log").read_text(encoding="utf-8"), job_marks) == \
        lines(real, (real.export_dir / "export.log").read_text(encoding="utf-8"), job_marks)
    deft_marks = ("visual_changenet export -e", "onnx: ")
    assert lines(fake, fake.out, deft_marks) == lines(real, real.out, deft_marks)
