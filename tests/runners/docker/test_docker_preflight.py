from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.runners.docker.runner import DockerRunner, max_batch_for
from deft_aoi.runners.fake.docker_client import FakeDockerClient
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.workspace.layout import WorkspaceLayout

SECRET = "nvapi-preflight-777"


def _checks(ws_root: Path, batch: int = 16, **client_kw: object) -> dict[str, tuple[str, str]]:
    ws = WorkspaceLayout.at(ws_root)
    runner = DockerRunner(FakeDockerClient(state_dir=ws_root / ".fake", **client_kw), ws)  # type: ignore[arg-type]
    return {c.name: (c.status, c.detail) for c in runner.preflight(ws, load_spec(ws.spec_file), batch)}


def _stage_backbone(ws_root: Path) -> None:
    (ws_root / "augmentation" / "backbone").mkdir(parents=True)
    (ws_root / "augmentation" / "backbone" / "c_radio_v2_b.safetensors").write_bytes(b"weights")
    spec = ws_root / "specs" / "baseline_spec.yaml"
    staged = "pretrained_backbone_path: augmentation/backbone/c_radio_v2_b.safetensors"
    spec.write_text(spec.read_text().replace("pretrained_backbone_path: null", staged))


def test_all_pass_on_a_48gb_gpu(small_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (small_ws / ".env").write_text(f"NGC_API_KEY={SECRET}\nHF_TOKEN=hf_xyz12345\n")
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    _stage_backbone(small_ws)
    checks = _checks(small_ws, batch=4)  # the small workspace trains 14 rows: batch_size ≤ 14
    assert {name: s for name, (s, _) in checks.items() if not name.startswith("TAO rule: ")} == {
        "spec schema": "pass", "docker daemon": "pass", "Visual ChangeNet image": "pass",
        "Data Services image": "pass", "credentials": "pass", "GPU": "pass", "GPUs per job": "pass"}
    rules = {name: s for name, (s, _) in checks.items() if name.startswith("TAO rule: ")}
    assert len(rules) >= 10 and all(s in ("pass", "skip") for s in rules.values()), rules
    assert all(SECRET not in detail for _, detail in checks.values())


@pytest.mark.parametrize(("gpus", "batch", "status"), [("1x24564", 8, "pass"), ("1x24564", 16, "fail"),
                                                       ("2x49140", 16, "pass"), ("1x49140", 17, "fail"),
                                                       ("0x0", 4, "fail")])
def test_gpu_memory_vs_batch_size(small_ws: Path, gpus: str, batch: int, status: str) -> None:
    assert _checks(small_ws, batch, gpus=gpus)["GPU"][0] == status


def test_max_batch_rule() -> None:
    assert max_batch_for(49140) == 16 and max_batch_for(24564) == 8 and max_batch_for(81559) == 26


def test_misspelled_spec_key_fails_preflight(small_ws: Path) -> None:
    spec = small_ws / "specs" / "baseline_spec.yaml"
    spec.write_text(spec.read_text().replace("num_epochs: 10", "num_epoch: 10"))
    status, detail = _checks(small_ws)["spec schema"]
    assert status == "fail" and "'train.num_epoch'" in detail and "'train.num_epochs'" in detail


def test_absent_images_without_credentials(small_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    checks = _checks(small_ws, images_present=False)
    assert checks["Visual ChangeNet image"][0] == "pass" and "pullable" in checks["Visual ChangeNet image"][1]
    assert checks["credentials"][0] == "fail"


def test_unpullable_image_fails(small_ws: Path) -> None:
    checks = _checks(small_ws, images_present=False, faults="pull:fail")
    status, detail = checks["Visual ChangeNet image"]
    assert status == "fail" and "cannot be pulled" in detail
    assert "nvcr.io/nvidia/tao/tao-toolkit:" in detail and "`docker login nvcr.io`" in detail


def test_unreachable_daemon_is_a_failed_check_not_a_crash(small_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    ws = WorkspaceLayout.at(small_ws)

    def no_daemon() -> object:
        raise ConnectionRefusedError("Error while fetching server API version")

    results = DockerRunner(no_daemon, ws).preflight(ws, load_spec(ws.spec_file), 8)
    daemon = next(r for r in results if r.name == "docker daemon")
    assert daemon.status == "fail" and "cannot reach the Docker Engine" in daemon.detail
    assert "DOCKER_HOST" in daemon.detail and "/var/run/docker.sock" in daemon.detail
