"""`deft platforms`: one entry per reachable platform with what it needs; unreachable ones say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app


def test_platforms_json_names_each_backend_and_says_why_one_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    def no_engine(**_: object) -> object:
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr(docker, "from_env", no_engine)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    sinfo = fake_bin / "sinfo"
    sinfo.write_text("#!/bin/sh\necho 'gpu|up|2|idle|gpu:a100:8|1-00:00:00'\n"
                     "echo 'gpu|up|1|drained|gpu:a100:8|1-00:00:00'\n")
    sinfo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    result = CliRunner().invoke(app, ["platforms", "--json"])
    assert result.exit_code == 0, result.output
    found = {p["name"]: p for p in json.loads(result.stdout)}
    assert found["Docker Engine"]["available"] is False and "connection refused" in found["Docker Engine"]["detail"]
    assert any("NGC_API_KEY" in c for c in found["Docker Engine"]["credentials"])
    slurm = found["Slurm partition gpu"]
    assert slurm["available"] and slurm["gpus"] == ["gpu:a100:8"]
    assert "3 node(s)" in slurm["detail"] and "drained" in slurm["detail"]
    assert found["local (in-process PyTorch)"]["backend"] == "local"
