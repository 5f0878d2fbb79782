from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deft_aoi.analysis.validation import (
    ValidationReport,
    raise_if_failed,
    validate_rows,
    write_validation,
)
from deft_aoi.errors import HardStop, InputError
from deft_aoi.synth.staging import load_source_pool, stage_synth_pool

from .helpers import Workspace, light_copy


@pytest.fixture()
def light_ws(deeppcb_dev: Path, tmp_path: Path) -> Path:
    return light_copy(deeppcb_dev, tmp_path / "ws")


@pytest.fixture()
def ws(light_ws: Path) -> Workspace:
    return Workspace(light_ws)


def _validate(ws: Workspace, rows: pd.DataFrame, **kwargs) -> ValidationReport:
    return validate_rows(rows, workspace=ws.layout, lights=ws.spec.lights, image_ext=ws.spec.image_ext,
                         validation=ws.base("validation"), kpi=ws.base("kpi"), **kwargs)


def test_clean_training_rows_pass(ws: Workspace) -> None:
    report = _validate(ws, ws.base("train"), phase="combined", rows_file="train_combined_iter1.csv")
    assert report.ok, report.checks
    assert {c["name"] for c in report.checks} >= {"mandatory_columns", "images_exist", "leakage_key",
                                                 "leakage_content", "near_duplicates"}
    assert report.check("near_duplicates")["status"] == "skip"
    # deeppcb-dev holds all-black crops in every split: equal bytes, but nothing to leak.
    assert "single-colour" in report.check("leakage_content")["detail"]
    raise_if_failed(report)


def test_validation_row_copied_into_mining_pool_stops_mid_iteration(ws: Workspace) -> None:
    """Acceptance: a renamed copy of a validation image (same pixels) is caught on the mined rows."""
    val_row = ws.base("validation").iloc[0]
    pool_images = ws.layout.mining_pool_dir / "images" / "99990001"
    for side, col in (("test", "input_path"), ("golden", "golden_path")):
        (pool_images / side).mkdir(parents=True)
        shutil.copy(ws.layout.root / val_row[col] / f"{val_row['object_name']}_SolderLight.jpg",
                    pool_images / side / "z00_SolderLight.jpg")
    with open(ws.layout.mining_pool_csv, "a", encoding="utf-8") as fh:
        fh.write("images/99990001/test,images/99990001/golden,open,z00,deeppcb,99990,,,,,,,,\n")

    stage_synth_pool(ws.layout, ws.run_root, ws.spec, ws.mining_pool())
    pool = load_source_pool(ws.run_root)
    mined = pd.concat([pool[pool["source"] == "synthetic"].head(2), pool[pool["object_name"] == "z00"],
                       pool[pool["source"] == "mining_pool"].head(1)], ignore_index=True)
    report = _validate(ws, mined, phase="mined", rows_file="iter1/mining_filter/mining_pool.csv")
    assert not report.ok
    assert report.check("leakage_key")["status"] == "pass"
    assert report.check("leakage_content")["status"] == "fail"
    [leak] = report.leaked_rows
    assert leak["kind"] == "content" and leak["row"] == 4 and leak["object_name"] == "z00"
    assert leak["reference"] == "validation" and leak["reference_row"] == 2
    with pytest.raises(HardStop) as info:
        raise_if_failed(report)
    assert info.value.kind == "leakage"
    text = info.value.render()
    assert "iter1/mining_filter/mining_pool.csv row 4" in text
    assert "augmentation/mining_pool/images/99990001/test" in text and "z00" in text


def test_kpi_row_in_training_is_key_leakage(ws: Workspace) -> None:
    train = pd.concat([ws.base("train").head(3), ws.base("kpi").iloc[[5]]], ignore_index=True)
    report = _validate(ws, train, phase="combined")
    keyed = [e for e in report.leaked_rows if e["kind"] == "key"]
    assert [(e["row"], e["reference"], e["reference_row"]) for e in keyed] == [(5, "kpi", 7)]
    # Already named by key: not listed a second time for its pixels.
    assert all(e["kind"] == "key" for e in report.leaked_rows)
    with pytest.raises(HardStop, match="same key") as info:
        raise_if_failed(report)
    assert info.value.kind == "leakage"


def test_missing_image_hard_stops_naming_the_file(ws: Workspace) -> None:
    train = ws.base("train").head(4)
    train.loc[2, "golden_path"] = "kpi/images/00000000/golden"  # a folder that does not exist
    victim = ws.layout.root / "kpi/images/00000000/golden" / f"{train.loc[2, 'object_name']}_SolderLight.jpg"
    report = _validate(ws, train, phase="combined")
    assert report.n_missing_images == 1 and report.missing_images == [str(victim)]
    with pytest.raises(HardStop, match=str(victim)) as info:
        raise_if_failed(report)
    assert info.value.kind == "missing_images"


def test_structural_problems_are_csv_validation(ws: Workspace) -> None:
    train = ws.base("train").head(3)
    report = _validate(ws, train.drop(columns="golden_path"), phase="mined")
    assert not report.ok and report.check("mandatory_columns")["status"] == "fail"
    with pytest.raises(HardStop, match="golden_path") as info:
        raise_if_failed(report)
    assert info.value.kind == "csv_validation"

    shouty = train.copy()
    shouty.loc[1, "label"] = "Open"
    report = _validate(ws, shouty, phase="mined")
    assert report.check("labels_normalised")["status"] == "fail"
    assert "row 3" in report.check("labels_normalised")["detail"]


def test_near_duplicates_warn_or_stop(ws: Workspace) -> None:
    train = ws.base("train").head(3)
    n_ref = len(ws.base("validation")) + len(ws.base("kpi"))
    rng = np.random.default_rng(0)
    ref_emb = rng.normal(size=(n_ref, 16))
    train_emb = rng.normal(size=(3, 16))
    train_emb[1] = ref_emb[len(ws.base("validation")) + 4] * 3.0  # same direction as KPI row 4
    report = _validate(ws, train, phase="combined", embeddings=(train_emb, ref_emb))
    assert report.ok and report.check("near_duplicates")["status"] == "warn"
    [dup] = report.near_duplicates
    assert (dup["row"], dup["reference"], dup["reference_row"]) == (3, "kpi", 6)
    raise_if_failed(report)

    strict = _validate(ws, train, phase="combined", embeddings=(train_emb, ref_emb), near_duplicate_stop=True)
    assert not strict.ok
    with pytest.raises(HardStop, match="cosine") as info:
        raise_if_failed(strict)
    assert info.value.kind == "leakage"

    with pytest.raises(InputError, match="line up"):
        _validate(ws, train, phase="combined", embeddings=(train_emb[:2], ref_emb))


def test_report_is_written_as_json(ws: Workspace, tmp_path: Path) -> None:
    report = _validate(ws, ws.base("train").head(2), phase="mined")
    out = tmp_path / "validation" / "merge_validation.json"
    write_validation(report, out)
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["phase"] == "mined" and data["n_rows"] == 2
    assert ValidationReport.model_validate(data) == report
