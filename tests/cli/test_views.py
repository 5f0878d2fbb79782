"""Issue 27.4: the Pre-Flight Summary of deeppcb-dev on the docker backend fits one 80-column screen (40 lines)
when every check passes, KPI target and iterations in its first 10 lines, with the rows NVIDIA's summary has;
passing TAO rules are one count, a failing one prints in full with its source."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app

SCREEN = 80


def _preflight(ws: Path, *extra: str, backend: str = "docker") -> tuple[int, str, str]:
    env = {"COLUMNS": str(SCREEN), "NO_COLOR": "1", "DEFT_DOCKER": "fake"}
    result = CliRunner().invoke(app, ["preflight", "-w", str(ws), "--backend", backend, *extra], env=env)
    return result.exit_code, result.stdout, result.stderr


def _screen_lines(text: str) -> int:
    """Lines as an 80-column terminal shows them (a longer line takes several)."""
    return sum(max(1, math.ceil(len(line) / SCREEN)) for line in text.splitlines())


@pytest.fixture()
def ready_ws(deeppcb_copy: Path) -> Path:
    """deeppcb-dev with credentials, so every backend check passes (secrets stay fake)."""
    (deeppcb_copy / ".env").write_text("NGC_API_KEY=nvapi-summary-test-0001\nHF_TOKEN=hf_summary_test_0001\n")
    return deeppcb_copy


def test_the_summary_fits_a_screen_with_kpi_and_iterations_first(ready_ws: Path) -> None:
    code, _, err = _preflight(ready_ws)
    assert code == 0, err
    lines = err.splitlines()
    assert not any(line.startswith("FAIL") for line in lines), err
    assert _screen_lines(err) <= 40, err
    head = "\n".join(lines[:10])
    assert re.search(r"KPI target +FAR<0\.1%@recall=100% \(default\)", head), head
    assert re.search(r"iterations +at most 3 \(default\)", head), head
    # Passing TAO rules are one count, never one row each.
    assert not any("TAO rule: " in line for line in lines), err
    assert re.search(r"TAO rules \(\d+ of \d+ pass", err)


def test_the_summary_has_the_rows_nvidias_summary_has(ready_ws: Path) -> None:
    code, _, err = _preflight(ready_ws)
    assert code == 0, err
    flat = re.sub(r"\s+", " ", err)
    kpi = pd.read_csv(ready_ws / "kpi" / "testing_set.csv", dtype=str, keep_default_na=False)
    defects = kpi.loc[kpi["label"] != "PASS", "label"].value_counts()
    assert "new run" in flat
    for label, count in defects.items():
        assert f"{label} {count}" in flat  # KPI defect types and counts
    synth = [json.loads(line) for line in (ready_ws / "augmentation/anomalygen/defect_spec.jsonl").read_text()
             .splitlines() if line.strip()]
    synth_row = next(line for line in err.splitlines() if line.strip().startswith("synth. types"))
    assert all(f"{e['defect_type']} {e['count']}" in synth_row for e in synth)
    assert "kpi/images" in flat and "augmentation/mining_pool/images" in flat
    assert re.search(r"encoder +builtin", err)
    assert "backbone file none: random init" in flat  # the spec's pretrained_backbone_path is null
    # Mining budget = top-k × targets, targets = the weakest top_k_per_label of each KPI label (one light).
    targets = sum(min(50, n) for n in kpi["label"].value_counts())
    assert f"top-5 × ≤ {targets} targets = ≤ {5 * targets} rows/iteration" in flat


def test_a_failing_tao_rule_prints_in_full_with_its_source(ready_ws: Path) -> None:
    spec = ready_ws / "specs" / "baseline_spec.yaml"
    text = spec.read_text()
    assert "batch_size: 16" in text
    spec.write_text(text.replace("batch_size: 16", "batch_size: 1"))
    code, _, err = _preflight(ready_ws)
    assert code == 1
    rule = next(line for line in err.splitlines() if line.startswith("FAIL  TAO rule: batch_size > 1  "))
    assert "source: NVIDIA-TAO/tao-pytorch:" in rule and "build_data_loader.py" in rule and len(rule) > SCREEN


def test_the_fake_backend_shows_no_invented_gpu_as_real(ready_ws: Path) -> None:
    code, out, _ = _preflight(ready_ws, "--json", backend="fake")
    assert code == 0
    gpu = next(c for c in json.loads(out)["checks"] if c["name"] == "GPU")
    assert gpu["detail"].startswith("no real GPU checked (fake backend simulates ")


def test_piped_json_carries_the_plan(ready_ws: Path) -> None:
    code, out, _ = _preflight(ready_ws, "--json")
    assert code == 0
    plan = {row["name"]: row["value"] for row in json.loads(out)["plan"]}
    assert plan["KPI target"].startswith("FAR<0.1%") and "mining budget" in plan
