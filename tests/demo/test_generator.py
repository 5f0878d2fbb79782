from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from deft_aoi.demo.defects import DEFECT_TYPES
from deft_aoi.demo.generator import DemoSummary, generate_workspace
from deft_aoi.demo.nuisance import NUISANCE_TYPES
from deft_aoi.demo.splits import BASE_DEFECTS, SYNTH_DEFECTS
from deft_aoi.errors import InputError, UsageError
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.workspace.changenet_csv import (
    CHANGENET_COLUMNS,
    LEAKAGE_KEY,
    find_missing_images,
    image_paths,
    read_changenet_csv,
    rebase_paths,
)
from deft_aoi.workspace.layout import WorkspaceLayout

Demo = tuple[Path, DemoSummary]


def _csvs(root: Path) -> dict[str, tuple[Path, Path]]:
    """split → (csv, images_dir) exactly as a loop resolves them."""
    ws = WorkspaceLayout.at(root)
    return {
        "train": (ws.train_csv, ws.kpi_images),
        "validation": (ws.validation_csv, ws.kpi_images),
        "kpi": (ws.kpi_csv, ws.kpi_images),
        "mining_pool": (ws.mining_pool_csv, ws.mining_pool_dir),
    }


def _read(demo: Demo, split: str) -> pd.DataFrame:
    return read_changenet_csv(_csvs(demo[0])[split][0])


def test_layout_matches_contract(demo_ws: Demo) -> None:
    root, summary = demo_ws
    ws = WorkspaceLayout.at(root)
    for path in (ws.spec_file, ws.train_csv, ws.validation_csv, ws.kpi_csv, ws.mining_pool_csv, ws.defect_spec,
                 root / ".env.example", root / "README.md"):
        assert path.is_file(), path
    for d in (ws.kpi_images, ws.mining_pool_dir / "images", ws.synth_ng_dir, ws.synth_ok_dir):
        assert d.is_dir() and any(d.iterdir()), d
    assert not ws.env_file.exists()
    assert summary.path == root.absolute()
    assert sorted(p.name for p in root.parent.iterdir()) == ["ws"], "staging directory left behind"


def test_spec_is_the_demo_configuration(demo_ws: Demo) -> None:
    spec = load_spec(WorkspaceLayout.at(demo_ws[0]).spec_file)
    assert spec.lights == ("SolderLight",)
    assert spec.image_ext == ".jpg"
    # 64 px crops, but C-RADIO with a learnable difference module runs in TAO only at 224x224.
    assert (spec.image_width, spec.image_height) == (224, 224)
    assert spec.num_epochs == 6
    assert spec.batch_size == 16
    assert spec.get("train.checkpoint_interval") == 1
    assert spec.get("train.validation_interval") == 1
    assert spec.get("dataset.classify.train_dataset.csv_path") == "train/base/training_set.csv"


def test_csvs_have_the_14_columns_and_normalised_labels(demo_ws: Demo) -> None:
    for split, (csv, _) in _csvs(demo_ws[0]).items():
        header = csv.read_text(encoding="utf-8").splitlines()[0]
        assert header == ",".join(CHANGENET_COLUMNS), split
        df = read_changenet_csv(csv)
        assert list(df.columns) == list(CHANGENET_COLUMNS)
        assert set(df["label"]) <= {"PASS", *DEFECT_TYPES}
        assert (df["boardname"] != "").all()
        assert (df["project"] == "demo").all()


def test_counts_match_the_summary_and_the_brief(demo_ws: Demo) -> None:
    _, summary = demo_ws
    expected = {"train": 150, "validation": 100, "kpi": 350, "mining_pool": 1000}
    for split, rows in expected.items():
        df = _read(demo_ws, split)
        assert len(df) == rows == summary.rows[split]
        assert df["label"].value_counts().to_dict() == summary.labels[split]
    train = _read(demo_ws, "train")
    assert 0.65 <= (train["label"] == "PASS").mean() <= 0.75
    assert (_read(demo_ws, "kpi")["label"] == "PASS").sum() == 200


def test_label_coverage_per_split(demo_ws: Demo) -> None:
    train_defects = set(_read(demo_ws, "train")["label"]) - {"PASS"}
    assert 2 <= len(train_defects) <= 3
    assert train_defects == set(BASE_DEFECTS)
    assert set(_read(demo_ws, "validation")["label"]) - {"PASS"} <= set(BASE_DEFECTS)
    assert set(_read(demo_ws, "kpi")["label"]) == {"PASS", *DEFECT_TYPES}
    assert set(_read(demo_ws, "mining_pool")["label"]) == {"PASS", *DEFECT_TYPES}
    assert set(SYNTH_DEFECTS) == set(DEFECT_TYPES) - train_defects


def _tags(df: pd.DataFrame) -> pd.Series:
    return df["description"].str.removeprefix("nuisance=")


def test_nuisance_ground_truth(demo_ws: Demo) -> None:
    for split in ("train", "validation"):
        assert (_read(demo_ws, split)["description"] == "").all(), f"{split} must be nuisance-free"
    kpi = _read(demo_ws, "kpi")
    tagged = kpi["description"] != ""
    assert kpi.loc[tagged, "description"].str.startswith("nuisance=").all()
    seen = {t for tags in _tags(kpi[tagged]) for t in tags.split(";")}
    assert seen == set(NUISANCE_TYPES)
    assert 0.28 <= tagged.mean() <= 0.38
    for is_pass in (True, False):
        group = tagged[(kpi["label"] == "PASS") == is_pass]
        assert 0.28 <= group.mean() <= 0.38, "nuisance must hit both labels"
    pool = _read(demo_ws, "mining_pool")
    assert {t for tags in _tags(pool[pool["description"] != ""]) for t in tags.split(";")} == set(NUISANCE_TYPES)


def test_every_row_image_exists_for_every_light(demo_ws: Demo) -> None:
    spec = load_spec(WorkspaceLayout.at(demo_ws[0]).spec_file)
    for split, (csv, images_dir) in _csvs(demo_ws[0]).items():
        df = read_changenet_csv(csv)
        paths = image_paths(df, images_dir, spec.lights, spec.image_ext)
        assert len(paths) == 2 * len(df) * len(spec.lights)
        assert find_missing_images(paths["path"].tolist()) == [], split


def test_images_are_64px_rgb_and_test_differs_from_golden(demo_ws: Demo) -> None:
    import numpy as np
    from PIL import Image

    root = demo_ws[0]
    df = _read(demo_ws, "kpi").head(20)
    for row in df.itertuples():
        test = np.asarray(Image.open(root / "kpi/images" / row.input_path / f"{row.object_name}_SolderLight.jpg"))
        golden = np.asarray(Image.open(root / "kpi/images" / row.golden_path / f"{row.object_name}_SolderLight.jpg"))
        assert test.shape == golden.shape == (64, 64, 3)
        assert 20 < golden.mean() < 200 and golden.std() > 15, "a crop, not a flat image"
        assert not np.array_equal(test, golden)


def test_no_leakage_between_splits(demo_ws: Demo) -> None:
    root = demo_ws[0]
    keys: dict[str, set[tuple[str, ...]]] = {}
    boards: dict[str, set[str]] = {}
    pairs: dict[str, set[str]] = {}
    for split, (csv, images_dir) in _csvs(root).items():
        df = rebase_paths(read_changenet_csv(csv), images_dir, root)
        keys[split] = set(map(tuple, df[list(LEAKAGE_KEY)].to_numpy()))
        assert len(keys[split]) == len(df), f"duplicate leakage key inside {split}"
        boards[split] = set(df["boardname"])
        pairs[split] = {p.rsplit("/", 1)[0].rsplit("/", 1)[-1] for p in df["input_path"]}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)
            assert not boards[a] & boards[b], (a, b)
            assert not pairs[a] & pairs[b], (a, b)


def test_objects_unique_within_a_pair(demo_ws: Demo) -> None:
    for split in ("train", "kpi", "mining_pool"):
        df = _read(demo_ws, split)
        assert not df.duplicated(["input_path", "object_name"]).any(), split


def test_mining_pool_paths_are_relative_to_its_dir(demo_ws: Demo) -> None:
    pool = _read(demo_ws, "mining_pool")
    assert pool["input_path"].str.match(r"^images/[^/]+/test$").all()
    assert pool["golden_path"].str.match(r"^images/[^/]+/golden$").all()
    kpi = _read(demo_ws, "kpi")
    assert kpi["input_path"].str.match(r"^[^/]+/test$").all()


def test_synthetic_pairs_and_defect_spec(demo_ws: Demo) -> None:
    root, summary = demo_ws
    ws = WorkspaceLayout.at(root)
    ng = {p.stem for p in ws.synth_ng_dir.iterdir()}
    ok = {p.stem for p in ws.synth_ok_dir.iterdir()}
    assert ng == ok and len(ng) == 80
    assert {p.suffix for p in ws.synth_ng_dir.iterdir()} == {".png"}
    entries = [json.loads(line) for line in ws.defect_spec.read_text(encoding="utf-8").splitlines()]
    assert {e["defect_type"] for e in entries} == set(SYNTH_DEFECTS)
    assert sum(e["count"] for e in entries) == 80
    stems = [s for e in entries for s in e["stems"]]
    assert sorted(stems) == sorted(ng)
    assert all(e["count"] == len(e["stems"]) for e in entries)
    assert summary.synthetic_pairs == {e["defect_type"]: e["count"] for e in entries}


def test_synthetic_ng_differs_from_ok_only_locally(demo_ws: Demo) -> None:
    import numpy as np
    from PIL import Image

    ws = WorkspaceLayout.at(demo_ws[0])
    for stem in ("sdg_00000", "sdg_00001", "sdg_00002"):
        ng = np.asarray(Image.open(ws.synth_ng_dir / f"{stem}.png")).astype(int)
        ok = np.asarray(Image.open(ws.synth_ok_dir / f"{stem}.png")).astype(int)
        changed = (np.abs(ng - ok).max(axis=2) > 0).mean()
        assert 0 < changed < 0.5, stem


def test_workspace_stays_small(demo_ws: Demo) -> None:
    _, summary = demo_ws
    assert summary.total_bytes < 8_500_000
    assert summary.files == 2 * 1600 + 2 * 80 + 8


def test_readme_reports_the_counts(demo_ws: Demo) -> None:
    text = (demo_ws[0] / "README.md").read_text(encoding="utf-8")
    assert "| kpi | `kpi/testing_set.csv` | 350 | 200 | 150 |" in text
    assert "--seed 7 --size small" in text


def test_refuses_non_empty_directory_without_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        generate_workspace(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_file_path_is_an_input_error(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        generate_workspace(target)


def test_bad_size_and_seed_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        generate_workspace(tmp_path / "x", size="huge")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        generate_workspace(tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()


def test_install_into_an_existing_empty_directory(tmp_path: Path) -> None:
    from deft_aoi.demo.writer import install, staging_dir

    out = tmp_path / "empty"
    out.mkdir()
    stage = staging_dir(out)
    (stage / "kpi").mkdir()
    (stage / "kpi" / "testing_set.csv").write_text("x")
    install(stage, out)
    assert (out / "kpi" / "testing_set.csv").read_text() == "x"
    assert not stage.exists()
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask, "the workspace must not stay private like a temp dir"
