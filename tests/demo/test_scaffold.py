from __future__ import annotations

import os
from pathlib import Path

import pytest

from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, read_changenet_csv
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.scaffold import init_workspace, resource_text

REPO = Path(__file__).resolve().parents[2]


def test_template_spec_is_identical_in_repo_and_package() -> None:
    repo_copy = (REPO / "specs" / "baseline_spec.yaml").read_text(encoding="utf-8")
    assert repo_copy == resource_text("baseline_spec.yaml")


def test_template_spec_parses_and_mirrors_the_reference_keys(tmp_path: Path) -> None:
    import yaml

    spec = load_spec(REPO / "specs" / "baseline_spec.yaml")
    assert spec.lights == ("SolderLight",)
    assert spec.batch_size <= 16
    assert spec.get("train.checkpoint_interval") == 5  # NVIDIA's DEFT template; the loop prunes the rest
    text = resource_text("baseline_spec.yaml")
    assert "EDIT" in text and "batch_size" in text and "input_map" in text

    def keys(node: object, prefix: str = "") -> set[str]:
        if not isinstance(node, dict):
            return set()
        return {f"{prefix}{k}" for k in node} | {x for k, v in node.items() for x in keys(v, f"{prefix}{k}.")}

    reference = REPO.parent / "shared" / "data" / "deeppcb-dev" / "specs" / "baseline_spec.yaml"
    if not reference.is_file():
        pytest.skip("reference workspace not present")
    # the template carries every key of the reference workspace's spec, plus NVIDIA's augmentation block and its
    # DEFT template's defect sampling share
    extra = keys(yaml.safe_load(text)) - keys(yaml.safe_load(reference.read_text(encoding="utf-8")))
    assert "dataset.classify.fpratio_sampling" in extra
    extra.discard("dataset.classify.fpratio_sampling")
    assert extra and all(k.startswith("dataset.classify.augmentation_config") for k in extra), extra


def test_env_example_holds_no_values() -> None:
    for line in resource_text("env.example").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name in ("NGC_API_KEY", "HF_TOKEN") and value == ""


def test_init_creates_the_contract_layout(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    result = init_workspace(root)
    ws = WorkspaceLayout.at(root)
    assert result.kept == []
    for path in (ws.spec_file, ws.train_csv, ws.validation_csv, ws.kpi_csv, ws.mining_pool_csv, root / ".env.example"):
        assert path.is_file() and path in result.created
        assert oct(path.stat().st_mode & 0o044) != "0o0", f"{path} must not be private"
    for d in (ws.kpi_images, ws.mining_pool_dir / "images", ws.synth_ng_dir, ws.synth_ok_dir):
        assert d.is_dir() and not any(d.iterdir())
    assert not ws.versions_file.exists() and not ws.env_file.exists()
    assert ws.spec_file.read_text(encoding="utf-8") == resource_text("baseline_spec.yaml")
    for csv in (ws.train_csv, ws.validation_csv, ws.kpi_csv, ws.mining_pool_csv):
        assert csv.read_text(encoding="utf-8") == ",".join(CHANGENET_COLUMNS) + "\n"
        assert read_changenet_csv(csv, allow_empty=True).empty
    assert not [p for p in root.rglob(".*.tmp")], "temp files left behind"


def test_init_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    init_workspace(root)
    ws = WorkspaceLayout.at(root)
    ws.spec_file.write_text("task: classify  # mine\n", encoding="utf-8")
    ws.train_csv.write_text("input_path,golden_path,label,object_name\na/test,a/golden,PASS,R1\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    second = init_workspace(root)

    assert second.created == []
    assert ws.spec_file in second.kept and ws.train_csv in second.kept and ws.kpi_images in second.kept
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_init_fills_in_only_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "specs").mkdir(parents=True)
    (root / "specs" / "baseline_spec.yaml").write_text("mine\n", encoding="utf-8")
    result = init_workspace(root)
    assert (root / "specs" / "baseline_spec.yaml").read_text(encoding="utf-8") == "mine\n"
    assert root / "specs" / "baseline_spec.yaml" in result.kept
    assert root / "kpi" / "testing_set.csv" in result.created


def test_init_on_a_file_is_an_input_error(tmp_path: Path) -> None:
    target = tmp_path / "ws"
    target.write_text("not a dir")
    with pytest.raises(InputError, match="is a file") as info:
        init_workspace(target)
    assert info.value.file == str(target)


def test_init_names_a_file_in_the_way(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "kpi").write_text("oops")
    with pytest.raises(InputError, match="not a directory") as info:
        init_workspace(root)
    assert info.value.file == str(root.resolve() / "kpi")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_init_unwritable_parent_is_an_input_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot create"):
            init_workspace(tmp_path / "ws")
    finally:
        tmp_path.chmod(0o700)
