"""Paths kept in run artefacts: stored workspace-relative, resolved where the workspace is now."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deft_aoi.workspace.stored_paths import (
    read_parquet,
    resolve_frame,
    store_frame,
    store_parquet_files,
    store_path,
    store_text,
    store_text_files,
    write_parquet,
)


def test_paths_under_the_root_are_stored_relative_and_resolved_at_the_new_root(tmp_path: Path) -> None:
    old, new = tmp_path / "a" / "ws", tmp_path / "b" / "ws"
    frame = pd.DataFrame({
        "filepath": [str(old / "kpi/images/B1/test/R1_L.jpg"), "/elsewhere/x.jpg", None],
        "golden_filepath": [str(old / "kpi/images/B1/golden/R1_L.jpg"), "", str(old)],
        "label": ["PASS", "open", str(old / "not/a/path/column")],  # only the path columns are converted
    })
    stored = store_frame(frame, old)
    assert stored["filepath"].tolist()[:2] == ["kpi/images/B1/test/R1_L.jpg", "/elsewhere/x.jpg"]
    assert stored["filepath"].isna().tolist() == [False, False, True]
    assert stored["golden_filepath"].tolist() == ["kpi/images/B1/golden/R1_L.jpg", "", "."]
    assert stored["label"].tolist() == frame["label"].tolist()
    resolved = resolve_frame(stored, new)
    assert resolved["filepath"].tolist()[:2] == [str(new / "kpi/images/B1/test/R1_L.jpg"), "/elsewhere/x.jpg"]
    assert resolved["golden_filepath"].tolist()[1] == ""  # a missing golden stays missing, not the root

    write_parquet(frame, tmp_path / "t.parquet", old)
    pd.testing.assert_frame_equal(read_parquet(tmp_path / "t.parquet", old), frame)


def test_a_sibling_sharing_the_prefix_is_not_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    assert store_path(f"{root}2/kpi/a.jpg", root) == f"{root}2/kpi/a.jpg"
    text = f"csv_path: {root}/train/t.csv\nimages_dir: {root}\nother: {root}2/x\n"
    assert store_text(text, root) == f"csv_path: train/t.csv\nimages_dir: .\nother: {root}2/x\n"


def test_text_files_of_a_stage_are_rewritten_but_not_tables_or_binaries(tmp_path: Path) -> None:
    root, out = tmp_path / "ws", tmp_path / "ws" / "results" / "run_1" / ".scratch" / "train"
    out.mkdir(parents=True)
    (out / "spec.yaml").write_text(f"results_dir: {out}\n")
    (out / "train.log").write_text(f"$ visual_changenet train -e {out}/spec.yaml\n")
    (out / "rows.csv").write_text(f"input_path\n{root}/kpi/images/B1/test\n")
    (out / "model.pth").write_bytes(f"\x00{root}/x".encode())
    rewritten = store_text_files(out, root)
    assert sorted(p.name for p in rewritten) == ["spec.yaml", "train.log"]
    assert (out / "spec.yaml").read_text() == "results_dir: results/run_1/.scratch/train\n"
    assert str(root) in (out / "rows.csv").read_text() and str(root).encode() in (out / "model.pth").read_bytes()


def test_a_tools_parquet_is_made_relative_in_place_keeping_its_metadata(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "ws"
    (tmp_path / "out").mkdir()
    table = pa.table({"filepath": [f"{root}/kpi/a.jpg", None], "embedding": [[0.1], [0.2]]})
    pq.write_table(table.replace_schema_metadata({b"fingerprint": b"enc-1"}), tmp_path / "out" / "e.parquet")
    pq.write_table(pa.table({"filepath": ["x.jpg"]}), tmp_path / "out" / "already.parquet")
    assert store_parquet_files(tmp_path / "out", root) == [tmp_path / "out" / "e.parquet"]
    back = pq.read_table(tmp_path / "out" / "e.parquet")
    assert back.column("filepath").to_pylist() == ["kpi/a.jpg", None]
    assert (back.schema.metadata or {})[b"fingerprint"] == b"enc-1"
