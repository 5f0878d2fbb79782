"""The packaged schema snapshots are exactly what NVIDIA's `nvidia-tao-core` of each release generates.

Downloads each supported release's wheel from PyPI (`--no-deps`: its other pins are irrelevant here), runs
`tools/gen_tao_schema.py` against it and diffs the result with the packaged JSON. Skipped when PyPI cannot be
reached (CI has PyPI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deft_aoi.runners.tao.schema import SNAPSHOT_DIR, supported_releases

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "src" / "deft_aoi"
FIXTURE = Path(__file__).parent / "fixtures" / "nvidia_deft_baseline_spec.yaml"


def _nvidia_core(release: str, tmp: Path) -> Path:
    wheels = tmp / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           f"nvidia-tao-core=={release}", "-d", str(wheels)],
                          capture_output=True, text=True, timeout=300)
    found = list(wheels.glob(f"nvidia_tao_core-{release}-*.whl"))
    if done.returncode != 0 or not found:
        pytest.skip(f"cannot download nvidia-tao-core=={release} from PyPI: {done.stderr.strip()[-200:]}")
    target = tmp / f"core-{release}"
    with zipfile.ZipFile(found[0]) as whl:
        whl.extractall(target)
    return target


def _run(code_or_script: list[str], core: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(core), str(REPO / "src")])}
    return subprocess.run([sys.executable, *code_or_script], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("release", supported_releases())
def test_snapshot_matches_nvidia_tao_core(release: str, tmp_path: Path) -> None:
    core = _nvidia_core(release, tmp_path)
    done = _run([str(REPO / "tools" / "gen_tao_schema.py"), release], core)
    assert done.returncode == 0, done.stderr
    packaged = json.loads(PACKAGE.joinpath(*SNAPSHOT_DIR, f"visual_changenet-{release}.json").read_text())
    fresh = json.loads(done.stdout)
    changed = sorted(k for k in fresh["keys"].keys() | packaged["keys"].keys()
                     if fresh["keys"].get(k) != packaged["keys"].get(k))
    assert not changed, f"regenerate the snapshot (tools/gen_tao_schema.py {release}); differing keys: {changed[:20]}"
    assert fresh == packaged


def test_validation_merges_into_nvidias_dataclasses_when_importable(tmp_path: Path) -> None:
    core = _nvidia_core(supported_releases()[-1], tmp_path)
    code = f"""
from deft_aoi.errors import InputError
from deft_aoi.runners.tao import spec as tao_spec
from deft_aoi.runners.tao.changenet_spec import load_spec_document
doc = load_spec_document({str(FIXTURE)!r})
tao_spec._merge_like_tao(doc, None)            # NVIDIA's own ExperimentConfig accepts NVIDIA's DEFT spec
tao_spec.check_schema(doc, None)
try:
    tao_spec._merge_like_tao({{"dataset": {{"classify": {{"batch_size": "many"}}}}}}, None)
except InputError as exc:
    print("REFUSED", exc)
"""
    done = _run(["-c", code], core)
    assert done.returncode == 0, done.stderr
    assert "REFUSED" in done.stdout and "ExperimentConfig" in done.stdout
