from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import InputError
from deft_aoi.runners.tao.versions import load_versions, package_versions_file
from deft_aoi.workspace.layout import WorkspaceLayout


def test_package_default_when_workspace_has_none(tmp_path: Path) -> None:
    v = load_versions(WorkspaceLayout.at(tmp_path))
    assert v.pyt.startswith("nvcr.io/nvidia/tao/tao-toolkit:") and v.pyt.endswith("-pyt")
    assert v.data_services.endswith("-data-services")
    assert v.source == str(package_versions_file())


def test_repo_versions_yaml_matches_package_default() -> None:
    repo_file = Path(__file__).resolve().parents[3] / "versions.yaml"
    assert repo_file.read_text() == package_versions_file().read_text()


def test_workspace_overrides_one_entry(tmp_path: Path) -> None:
    (tmp_path / "versions.yaml").write_text("images:\n  tao_toolkit:\n    pyt: registry.local:5000/tao/vcn:7.0-pyt\n")
    v = load_versions(WorkspaceLayout.at(tmp_path))
    assert v.pyt == "registry.local:5000/tao/vcn:7.0-pyt"
    assert v.data_services.endswith("-data-services")
    assert v.source == str(tmp_path / "versions.yaml")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("images:\n  tao_toolkit:\n    pty: x/y:1\n", "pty"),
        ("imags:\n  tao_toolkit: {}\n", "imags"),
        ("images:\n  tao_tolkit: {}\n", "tao_tolkit"),
        ("images:\n  tao_toolkit:\n    pyt: docker pull x\n", "not a container image reference"),
        ("images: [unclosed\n", "malformed YAML"),
    ],
)
def test_bad_versions_file_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "versions.yaml").write_text(text)
    with pytest.raises(InputError) as err:
        load_versions(WorkspaceLayout.at(tmp_path))
    assert needle in str(err.value)
    assert "versions.yaml" in str(err.value)
