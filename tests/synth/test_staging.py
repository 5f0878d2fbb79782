from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from analysis.helpers import Workspace, frame, light_copy
from deft_aoi.errors import HardStop, InputError
from deft_aoi.runners.tao.changenet_spec import parse_spec
from deft_aoi.synth.staging import (
    GENERIC_LABEL,
    DefectSpecEntry,
    declared_types,
    label_counts_text,
    label_stems,
    load_defect_spec,
    load_manifest,
    load_source_pool,
    stage_synth_pool,
    verify_synth_sources,
    write_ingest_summary,
)
from deft_aoi.workspace.changenet_csv import find_missing_images, image_paths, read_changenet_csv
from deft_aoi.workspace.layout import WorkspaceLayout


@pytest.fixture()
def light_ws(deeppcb_dev: Path, tmp_path: Path) -> Path:
    return light_copy(deeppcb_dev, tmp_path / "ws")


def _spec(tmp: Path, lights: dict[str, int], ext: str):
    raw = {"model": {"backbone": {"type": "bb"}}, "dataset": {"classify": {"input_map": lights, "image_ext": ext}}}
    return parse_spec(raw, tmp / "specs" / "baseline_spec.yaml")


def _tiny_workspace(tmp: Path, ng: list[str], ok: list[str]) -> WorkspaceLayout:
    layout = WorkspaceLayout.at(tmp / "ws")
    for folder, names in ((layout.synth_ng_dir, ng), (layout.synth_ok_dir, ok)):
        folder.mkdir(parents=True)
        for i, name in enumerate(names):
            Image.new("RGB", (8, 8), (i * 20 % 255, 10, 200)).save(folder / name)
    return layout


def _pool() -> pd.DataFrame:
    return frame([{"input_path": "images/p1/test", "golden_path": "images/p1/golden", "label": "PASS",
                   "object_name": "k00", "boardname": "b", "comp_name": "R1"}])


# ---------------------------------------------------------------- labels


def test_label_rules_explicit_then_token_then_generic() -> None:
    entries = [DefectSpecEntry(defect_type="Short", stems=["weird_1"]), DefectSpecEntry(defect_type="pin-hole")]
    labels = label_stems(["weird_1", "sdg_pin-hole_7", "sdg_pinhole_8", "SHORT_2"], entries)
    assert labels == {"weird_1": "short", "sdg_pin-hole_7": "pin-hole", "sdg_pinhole_8": GENERIC_LABEL,
                      "SHORT_2": "short"}


def test_declared_counts_are_reported_but_never_guessed_onto_stems() -> None:
    entries = [DefectSpecEntry(defect_type="open", count=2), DefectSpecEntry(defect_type="Short", count=2,
                                                                            stems=["z_9"])]
    stems = ["sdg_3", "sdg_1", "sdg_2", "z_9"]
    # z_9 is short by name; the counts do not say which sdg_* is which: they stay generic
    assert label_stems(stems, entries) == {"sdg_1": GENERIC_LABEL, "sdg_2": GENERIC_LABEL, "sdg_3": GENERIC_LABEL,
                                           "z_9": "short"}
    assert declared_types(entries) == {"open": 2, "short": 2}
    assert label_counts_text({"short": 1, "open": 2}) == "open 2, short 1"
    assert label_counts_text({GENERIC_LABEL: 3, "short": 1}, {"open": 2, "short": 2}) == (
        f"short 1, {GENERIC_LABEL} 3; defect_spec.jsonl declares open 2, short 2 (no stem names its type)")


def test_stem_listed_under_two_types_is_an_error() -> None:
    entries = [DefectSpecEntry(defect_type="open", stems=["s"]), DefectSpecEntry(defect_type="short", stems=["s"])]
    with pytest.raises(InputError, match="two defect types"):
        label_stems(["s"], entries)


def test_bad_defect_spec_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "defect_spec.jsonl"
    path.write_text('{"defect_type": "open"}\n\n{"count": 3}\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_defect_spec(path)
    assert info.value.row == 3 and str(path) in info.value.render()


# ---------------------------------------------------------------- hard stops


def test_missing_synth_dir_hard_stops(tmp_path: Path) -> None:
    layout = _tiny_workspace(tmp_path, ["a.png"], ["a.png"])
    for p in layout.synth_ok_dir.iterdir():
        p.unlink()
    layout.synth_ok_dir.rmdir()
    with pytest.raises(HardStop) as info:
        stage_synth_pool(layout, layout.results_root / "run_x", _spec(tmp_path, {"L": 0}, ".png"), _pool())
    assert info.value.kind == "synth_missing"


def test_empty_synth_dir_hard_stops(tmp_path: Path) -> None:
    layout = _tiny_workspace(tmp_path, ["a.png"], [])
    with pytest.raises(HardStop, match="empty") as info:
        stage_synth_pool(layout, layout.results_root / "run_x", _spec(tmp_path, {"L": 0}, ".png"), _pool())
    assert info.value.kind == "synth_missing"


def test_unpaired_stems_hard_stop_and_are_listed(tmp_path: Path) -> None:
    layout = _tiny_workspace(tmp_path, ["a.png", "lonely.png"], ["a.jpg", "orphan.png"])
    with pytest.raises(HardStop) as info:
        stage_synth_pool(layout, layout.results_root / "run_x", _spec(tmp_path, {"L": 0}, ".png"), _pool())
    assert info.value.kind == "synth_unpaired"
    assert "lonely" in info.value.message and "orphan" in info.value.message


def test_empty_mining_pool_hard_stops(tmp_path: Path) -> None:
    layout = _tiny_workspace(tmp_path, ["a.png"], ["a.png"])
    with pytest.raises(HardStop) as info:
        stage_synth_pool(layout, layout.results_root / "run_x", _spec(tmp_path, {"L": 0}, ".png"), _pool().iloc[0:0])
    assert info.value.kind == "mining_pool_empty"


# ---------------------------------------------------------------- staging layout


def test_multi_light_same_format_is_linked_and_noted(tmp_path: Path) -> None:
    layout = _tiny_workspace(tmp_path, ["x_open_1.png", "y.png"], ["x_open_1.png", "y.jpg"])
    layout.defect_spec.write_text('{"defect_type": "open", "count": 1}\n', encoding="utf-8")
    run_root = layout.results_root / "run_x"
    manifest = stage_synth_pool(layout, run_root, _spec(tmp_path, {"Top": 0, "Side": 1}, ".png"), _pool())
    ng_dir = run_root / "synth_pool" / "images" / "synth_ng"
    ok_dir = run_root / "synth_pool" / "images" / "synth_ok"
    assert sorted(p.name for p in ng_dir.iterdir()) == ["x_open_1_Side.png", "x_open_1_Top.png", "y_Side.png",
                                                        "y_Top.png"]
    # Same format: a hard link shares the inode; y.jpg → .png must be re-encoded.
    assert os.path.samefile(ng_dir / "x_open_1_Top.png", layout.synth_ng_dir / "x_open_1.png")
    assert manifest.staging == {"hardlinked": 3, "copied": 0, "reencoded": 1}
    with Image.open(ok_dir / "y_Side.png") as img:
        assert img.format == "PNG"
    assert "every light" in manifest.lights_note and manifest.lights == ["Top", "Side"]
    assert manifest.labels == {"open": 1, GENERIC_LABEL: 1}
    assert manifest.defect_spec is not None and len(manifest.defect_spec.sha256) == 64
    pool = load_source_pool(run_root)
    assert pool["source"].tolist() == ["mining_pool", "synthetic", "synthetic"]
    assert pool.loc[0, "input_path"] == "augmentation/mining_pool/images/p1/test"
    assert pool.loc[0, "comp_name"] == "R1"  # optional columns survive
    assert set(pool.loc[1:, "input_path"]) == {"results/run_x/synth_pool/images/synth_ng"}


def test_stage_real_workspace(light_ws: Path) -> None:
    ws = Workspace(light_ws)
    manifest = stage_synth_pool(ws.layout, ws.run_root, ws.spec, ws.mining_pool())
    pool_dir = ws.run_root / "synth_pool"
    assert manifest.counts["pairs"] == 150 and len(manifest.sources) == 300
    # The synthetic pairs are PNG and the spec asks for .jpg: every staged image was re-encoded.
    assert manifest.staging["reencoded"] == 300
    with Image.open(pool_dir / "images" / "synth_ng" / "sdg_00000_SolderLight.jpg") as img:
        assert img.format == "JPEG"
    assert manifest == load_manifest(ws.run_root)
    assert json.loads((pool_dir / "manifest.json").read_text())["counts"]["source_pool_rows"] == 1683 + 150

    sdg = read_changenet_csv(pool_dir / "sdg_rows.csv")
    # defect_spec.jsonl counts the pairs per type (29 copper, 23 mousebite, …) but names no stem: the
    # counts are kept as declared, the rows stay generic
    spec_counts = {json.loads(line)["defect_type"]: json.loads(line)["count"]
                   for line in ws.layout.defect_spec.read_text().splitlines() if line.strip()}
    assert len(sdg) == 150 and set(sdg["label"]) == {GENERIC_LABEL}
    assert manifest.declared_types == dict(sorted(spec_counts.items()))
    assert set(sdg["project"]) == {"synthetic"} and set(sdg["boardname"]) == {"synthetic"}

    csv_pool = read_changenet_csv(pool_dir / "source_pool.csv")
    parquet_pool = load_source_pool(ws.run_root)
    pd.testing.assert_frame_equal(csv_pool, parquet_pool)
    assert csv_pool["source"].value_counts().to_dict() == {"mining_pool": 1683, "synthetic": 150}
    # One coordinate space: every image of the source pool resolves from the workspace root.
    paths = image_paths(csv_pool, ws.layout.root, ws.spec.lights, ws.spec.image_ext)
    assert find_missing_images(paths["path"].tolist()) == []


# ---------------------------------------------------------------- verification and ingest


@pytest.fixture()
def staged(light_ws: Path) -> Workspace:
    ws = Workspace(light_ws)
    stage_synth_pool(ws.layout, ws.run_root, ws.spec, ws.mining_pool())
    return ws


def test_verify_passes_when_unchanged_and_after_a_mere_touch(staged: Workspace) -> None:
    verify_synth_sources(staged.layout, staged.run_root)
    target = staged.layout.synth_ng_dir / "sdg_00007.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    verify_synth_sources(staged.layout, staged.run_root)  # mtime doubt settled by the unchanged hash


def test_verify_hard_stops_on_changed_bytes(staged: Workspace) -> None:
    target = staged.layout.synth_ok_dir / "sdg_00042.png"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(data))
    with pytest.raises(HardStop) as info:
        verify_synth_sources(staged.layout, staged.run_root)
    assert info.value.kind == "synth_changed"
    assert "modified: augmentation/anomalygen/original_image/sdg_00042.png" in info.value.message


def test_verify_hard_stops_on_added_and_removed_files(staged: Workspace) -> None:
    (staged.layout.synth_ng_dir / "sdg_00001.png").unlink()
    Image.new("RGB", (4, 4)).save(staged.layout.synth_ok_dir / "extra.png")
    with pytest.raises(HardStop) as info:
        verify_synth_sources(staged.layout, staged.run_root)
    assert "removed: augmentation/anomalygen/reconstructed_image/sdg_00001.png" in info.value.message
    assert "added: augmentation/anomalygen/original_image/extra.png" in info.value.message


def test_verify_hard_stops_when_defect_spec_changes(staged: Workspace) -> None:
    with open(staged.layout.defect_spec, "a", encoding="utf-8") as fh:
        fh.write('{"defect_type": "scratch", "count": 0}\n')
    with pytest.raises(HardStop, match=r"defect_spec\.jsonl"):
        verify_synth_sources(staged.layout, staged.run_root)


def test_verify_without_manifest_hard_stops(light_ws: Path) -> None:
    ws = Workspace(light_ws)
    with pytest.raises(HardStop) as info:
        verify_synth_sources(ws.layout, ws.run_root)
    assert info.value.kind == "synth_missing"


def test_ingest_summary_records_the_manifest(staged: Workspace) -> None:
    out = staged.run_root / "iter1" / "anomalygen" / "ingest_summary.json"
    summary = write_ingest_summary(staged.run_root, out, "iter1")
    on_disk = json.loads(out.read_text())
    assert on_disk == summary
    assert summary["iteration"] == "iter1" and summary["generator_launched"] is False
    assert summary["counts"]["pairs"] == 150 and len(summary["manifest_sha256"]) == 64
