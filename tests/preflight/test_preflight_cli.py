"""`deft preflight` on the real DeepPCB workspace and on broken copies of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from deft_aoi.cli.app import app

runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def preflight(ws: Path, *extra: str):
    return runner.invoke(app, ["preflight", "--workspace", str(ws), "--json", *extra])


def checks(result) -> dict[str, dict]:
    doc = json.loads(result.stdout)
    return {c["name"]: c for c in doc["checks"]}


def test_real_workspace_is_ready_and_only_caches_and_the_list_written(deeppcb_copy: Path) -> None:
    before = snapshot(deeppcb_copy)
    result = preflight(deeppcb_copy)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ready"] is True
    names = {c["name"] for c in doc["checks"]}
    assert {"spec", "training CSV", "validation CSV", "KPI CSV", "mining pool", "synthetic NG/OK pairs",
            "no validation leakage", "backend (images, credentials, GPU)"} <= names
    assert checks(result)["backend (images, credentials, GPU)"]["detail"] == "skipped: backend not selected"
    assert {p["name"]: p["source"] for p in doc["parameters"]}["num_epochs"] == "spec"
    after = snapshot(deeppcb_copy)
    # Pre-flight writes only its caches and the (empty) exclusion list: the workspace's data is untouched.
    written = {Path(p).relative_to(deeppcb_copy).parts[0] for p in set(after) - set(before)}
    assert written == {".deft_cache", "results"}
    assert {p: v for p, v in after.items() if p in before} == before
    assert (deeppcb_copy / "results/preflight/pool_exclusions.csv").read_text().startswith("source,file,row,")
    assert not list((deeppcb_copy / "results").glob("run_*"))


def test_removed_column_fails_naming_file_and_column(deeppcb_copy: Path) -> None:
    csv = deeppcb_copy / "kpi" / "testing_set.csv"
    pd.read_csv(csv, dtype=str, keep_default_na=False).drop(columns=["object_name"]).to_csv(csv, index=False)
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    detail = checks(result)["KPI CSV"]["detail"]
    assert "testing_set.csv" in detail and "object_name" in detail


def test_missing_image_for_one_light_names_row(deeppcb_copy: Path) -> None:
    df = pd.read_csv(deeppcb_copy / "train/base/training_set.csv", dtype=str, keep_default_na=False)
    row = df.iloc[4]
    (deeppcb_copy / "kpi/images" / row["golden_path"] / f"{row['object_name']}_SolderLight.jpg").unlink()
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    detail = checks(result)["training CSV"]["detail"]
    assert "training_set.csv, row 6" in detail and "golden" in detail


def test_unpaired_synthetic_stems_listed(deeppcb_copy: Path) -> None:
    (deeppcb_copy / "augmentation/anomalygen/original_image/sdg_00007.png").unlink()
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    assert "sdg_00007" in checks(result)["synthetic NG/OK pairs"]["detail"]


def test_empty_mining_pool(deeppcb_copy: Path) -> None:
    csv = deeppcb_copy / "augmentation/mining_pool/mining_pool.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    assert "no data rows" in checks(result)["mining pool"]["detail"]


def test_malformed_yaml_and_missing_input_map(deeppcb_copy: Path) -> None:
    spec = deeppcb_copy / "specs/baseline_spec.yaml"
    original = spec.read_text()
    spec.write_text("model: [unclosed\n")
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1 and "malformed YAML" in checks(result)["spec"]["detail"]
    spec.write_text(original.replace("    input_map:\n      SolderLight: 0\n", ""))
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1 and "input_map" in checks(result)["spec"]["detail"]


def test_unknown_key_in_versions_yaml(deeppcb_copy: Path) -> None:
    (deeppcb_copy / "versions.yaml").write_text("images:\n  tao_toolkit:\n    pyt: a\n    data_services: b\n"
                                                "    pyt_typo: c\n")
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    assert "pyt_typo" in checks(result)["versions.yaml"]["detail"]


def test_path_escaping_images_root(deeppcb_copy: Path) -> None:
    csv = deeppcb_copy / "train/base/validation_set.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[2, "input_path"] = "../../../etc"
    df.to_csv(csv, index=False)
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    assert "validation_set.csv, row 4" in checks(result)["validation CSV"]["detail"]


def test_leakage_between_validation_and_training(deeppcb_copy: Path) -> None:
    train = deeppcb_copy / "train/base/training_set.csv"
    val = pd.read_csv(deeppcb_copy / "train/base/validation_set.csv", dtype=str, keep_default_na=False)
    df = pd.read_csv(train, dtype=str, keep_default_na=False)
    pd.concat([df, val.iloc[[0]]]).to_csv(train, index=False)
    result = preflight(deeppcb_copy)
    assert result.exit_code == 1
    assert "also in validation" in checks(result)["no validation leakage"]["detail"]


def test_workspace_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "ws.txt"
    f.write_text("x")
    result = preflight(f)
    assert result.exit_code == 1
    assert "is a file" in checks(result)["workspace"]["detail"]


def test_bad_kpi_is_usage_error(deeppcb_copy: Path) -> None:
    result = runner.invoke(app, ["preflight", "--workspace", str(deeppcb_copy), "--kpi", "accuracy>1"])
    assert result.exit_code == 2
    assert "cannot parse KPI target" in result.output


def test_human_summary_lists_parameters(deeppcb_copy: Path) -> None:
    result = runner.invoke(app, ["preflight", "--workspace", str(deeppcb_copy)], env={"NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "Pre-Flight Summary" in result.output
    assert re.search(r"training +epochs 10 \(spec\) · batch 16 \(spec\)", result.output), result.output


def test_deep_decodes_and_names_a_corrupt_image(deeppcb_copy: Path) -> None:
    assert preflight(deeppcb_copy, "--deep").exit_code == 0
    df = pd.read_csv(deeppcb_copy / "kpi/testing_set.csv", dtype=str, keep_default_na=False)
    row = df.iloc[0]
    bad = deeppcb_copy / "kpi/images" / row["input_path"] / f"{row['object_name']}_SolderLight.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = preflight(deeppcb_copy, "--deep")
    assert result.exit_code == 1
    assert str(bad) in checks(result)["images decode (--deep)"]["detail"]


def test_piped_summary_is_one_unwrapped_line_per_check(deeppcb_copy: Path) -> None:
    """Not a terminal (CliRunner's streams are not TTYs), 80 columns: a grep for the path a check names works."""
    csv = deeppcb_copy / "train" / "base" / "training_set.csv"
    pd.read_csv(csv, dtype=str, keep_default_na=False).drop(columns=["golden_path"]).to_csv(csv, index=False)
    result = runner.invoke(app, ["preflight", "--workspace", str(deeppcb_copy)], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    failing = [line for line in lines if str(csv) in line]
    assert failing, result.output
    assert re.match(r"FAIL +training CSV +" + re.escape(str(csv)) + r": missing .*golden_path", failing[0])
    assert not any(ch in result.output for ch in "│┃━─")  # no box drawing
    assert any(re.match(r"ok +workspace, workspace writable, spec, ", line) for line in lines)  # passing: by name
    assert any(re.match(r" +iterations +at most 3 \(default\)", line) for line in lines)


def test_min_free_disk_fails_preflight_when_the_disk_is_short(deeppcb_copy: Path) -> None:
    """A setting added to config.LoopConfig alone: a flag, a Pre-Flight row with its source, a check."""
    short = preflight(deeppcb_copy, "--min-free-disk", "1000000T")
    assert short.exit_code == 1
    assert checks(short)["workspace writable"]["status"] == "fail"
    assert "--min-free-disk asks for" in checks(short)["workspace writable"]["detail"]
    params = {p["name"]: p for p in json.loads(short.stdout)["parameters"]}
    assert (params["min_free_disk"]["value"], params["min_free_disk"]["source"]) == ("1000000T", "flag")
    fine = preflight(deeppcb_copy, "--min-free-disk", "1M")
    assert fine.exit_code == 0, fine.output
    assert checks(fine)["workspace writable"]["status"] == "pass"
    bad = preflight(deeppcb_copy, "--min-free-disk", "lots")
    assert bad.exit_code == 2 and "cannot read memory size 'lots'" in bad.output
