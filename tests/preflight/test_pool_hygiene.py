"""Issue 17: pool leaks are found at pre-flight and kept out of mining, never a late hard stop."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app

from .leaky_pool import PER_KIND, add_leaks, workspace_ids

# Mine (nearly) the whole pool, so every leaking row WOULD be drawn if it were still a candidate.
WIDE = ["--max-iterations", "1", "--epochs", "1", "--seed", "1", "--top-k", "5000", "--min-similarity", "-1"]


def deft(*args: str):
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})


def pool_hygiene(result) -> dict:
    return json.loads(result.stdout)["pool_hygiene"]


@pytest.fixture()
def leaky_ws(deeppcb_copy: Path) -> tuple[Path, dict[str, pd.DataFrame]]:
    return deeppcb_copy, add_leaks(deeppcb_copy)


def test_preflight_lists_all_three_kinds_with_counts_and_exits_0(leaky_ws) -> None:
    ws, added = leaky_ws
    result = deft("preflight", "-w", str(ws), "--json")
    assert result.exit_code == 0, result.output
    doc = pool_hygiene(result)
    assert doc["counts"]["mining_pool"] == {"key": PER_KIND, "content": PER_KIND, "near_duplicate": PER_KIND}
    assert doc["excluded_rows"] == 3 * PER_KIND
    listed = pd.read_csv(doc["exclusions_file"], dtype=str, keep_default_na=False)
    n_pool = len(pd.read_csv(ws / "augmentation/mining_pool/mining_pool.csv")) - 3 * PER_KIND
    expected_rows = {str(n_pool + 2 + i) for i in range(3 * PER_KIND)}  # spreadsheet rows of the appended ones
    assert set(listed["row"]) == expected_rows
    by_kind = {kind: set(zip(part["object_name"], part["twin_set"], strict=True))
               for kind, part in listed.groupby("kind")}
    for kind, rows in added.items():
        assert {(name, "kpi") for name in rows["object_name"]} <= by_kind[kind] | {(n, "validation") for n in
                                                                                 rows["object_name"]}
    near = listed[listed["kind"] == "near_duplicate"]
    assert (near["similarity"].astype(float) >= doc["near_duplicate_threshold"]).all()
    assert (near["similarity"].astype(float) < 1.0).all()
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    hygiene = checks["pool hygiene (leaks excluded from mining)"]
    assert hygiene["status"] == "warn" and "30 row(s) excluded from mining" in hygiene["detail"]


def test_table_of_counts_by_kind_in_the_summary(leaky_ws) -> None:
    ws, _ = leaky_ws
    result = deft("preflight", "-w", str(ws))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # Piped, the table is plain lines: title, header, one line per source.
    start = next(i for i, x in enumerate(lines) if x.startswith("Leakage by kind"))
    assert lines[start + 1].split() == ["rows", "of", "key", "content", "near_duplicate", "action"]
    pool = lines[start + 2].split()
    assert pool[:5] == ["mining", "pool", str(PER_KIND), str(PER_KIND), str(PER_KIND)]
    assert " ".join(pool[5:]) == "excluded from mining"


def test_rerun_reuses_hashes_and_embeddings(leaky_ws) -> None:
    ws, _ = leaky_ws
    first = pool_hygiene(deft("preflight", "-w", str(ws), "--json"))
    assert first["embedded_now"] > 0 and first["hashed_now"] > 0
    second = pool_hygiene(deft("preflight", "-w", str(ws), "--json"))
    assert second["embedded_now"] == 0 and second["hashed_now"] == 0
    assert second["from_cache"] == first["embedded_now"] + first["from_cache"]
    assert second["counts"] == first["counts"]


def _training_csvs(run: Path) -> list[Path]:
    return sorted(run.glob("iter*/dataset/train_combined_iter*.csv"))


@pytest.mark.slow  # whole loop runs (local: real training) over the whole pool: `make test-slow`
@pytest.mark.timeout(1800)  # a whole-pool loop run passed 600 s (both backends) on a 2-core box at load 15–19
@pytest.mark.parametrize("backend", ["fake", "local"])
def test_run_finishes_with_no_leaking_row_in_any_training_csv(leaky_ws, backend: str) -> None:
    ws, added = leaky_ws
    result = deft("run", "-w", str(ws), "--yes", "--backend", backend, *WIDE)
    assert result.exit_code == 0, result.output
    run = next((ws / "results").glob("run_*"))
    state = json.loads((run / "deft_state.json").read_text())
    assert state["status"] == "finished" and "iter1" in state["iterations"]
    assert state["iterations"]["iter1"]["counts"]["pool_excluded"] == 3 * PER_KIND
    hygiene = state["config"]["pool_hygiene"]
    assert hygiene["near_duplicate_threshold"] == 0.998 and hygiene["near_duplicate_encoder"].startswith("pixel-pair")
    assert hygiene["excluded_rows"] == 3 * PER_KIND
    assert len(pd.read_csv(run / "pool_exclusions.csv")) == 3 * PER_KIND
    leaked = set().union(*(workspace_ids(rows) for rows in added.values()))
    csvs = _training_csvs(run)
    assert csvs
    for csv in csvs:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        assert len(df) > 1000  # the wide mining took (nearly) the whole pool...
        assert not leaked & set(zip(df["input_path"], df["object_name"], strict=True)), csv  # ...but no leak
    html = (run / "DEFT_Loop_Report.html").read_text()
    assert "Pool hygiene" in html and "renamed" in html


def test_no_exclude_refuses_to_start_naming_the_rows(leaky_ws) -> None:
    ws, added = leaky_ws
    result = deft("run", "-w", str(ws), "--yes", "--backend", "fake", "--no-exclude", *WIDE)
    assert result.exit_code == 1
    error = result.output[result.output.index("pre-flight failed"):]
    assert "30 row(s) would leak validation/KPI data (key 10, content 10, near_duplicate 10" in error
    n_pool = len(pd.read_csv(ws / "augmentation/mining_pool/mining_pool.csv")) - 3 * PER_KIND
    first = added["key"].iloc[0]
    assert (f"augmentation/mining_pool/mining_pool.csv row {n_pool + 2} "
            f"(augmentation/mining_pool/{first['input_path']}/{first['object_name']}) = kpi kpi/testing_set.csv row"
            ) in error
    assert "(+20 more)" in error
    assert not list(ws.glob("results/run_*"))


def test_base_training_leak_fails_preflight(deeppcb_copy: Path) -> None:
    train_csv = deeppcb_copy / "train/base/training_set.csv"
    train = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    kpi = pd.read_csv(deeppcb_copy / "kpi/testing_set.csv", dtype=str, keep_default_na=False)
    pd.concat([train, kpi.iloc[[3]]]).to_csv(train_csv, index=False)
    result = deft("preflight", "-w", str(deeppcb_copy), "--json")
    assert result.exit_code == 1
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["training set vs validation/KPI"]
    assert check["status"] == "fail"
    assert f"training_set.csv row {len(train) + 2}" in check["detail"] and "by same key" in check["detail"]


def test_kpi_duplicates_and_same_board_are_warnings(deeppcb_copy: Path) -> None:
    kpi_csv = deeppcb_copy / "kpi/testing_set.csv"
    kpi = pd.read_csv(kpi_csv, dtype=str, keep_default_na=False)
    pd.concat([kpi, kpi.iloc[[5, 7]]]).to_csv(kpi_csv, index=False)
    result = deft("preflight", "-w", str(deeppcb_copy), "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["KPI set duplicates"]["status"] == "warn"
    assert checks["KPI set duplicates"]["detail"].startswith("2 KPI row(s) repeat another KPI row")
    assert pool_hygiene(result)["counts"]["kpi"]["key"] == 2
    board = checks["same board in training and KPI"]
    assert board["status"] == "warn" and f"of {len(kpi) + 2} KPI rows (100.0 %)" in board["detail"]


def test_synthetic_pair_copied_from_a_kpi_row_is_excluded(deeppcb_copy: Path) -> None:
    import shutil

    from .leaky_pool import EXT, LIGHT

    kpi = pd.read_csv(deeppcb_copy / "kpi/testing_set.csv", dtype=str, keep_default_na=False)
    row = kpi.iloc[0]
    synth = deeppcb_copy / "augmentation/anomalygen"
    for col, folder in (("input_path", "reconstructed_image"), ("golden_path", "original_image")):
        shutil.copyfile(deeppcb_copy / "kpi/images" / row[col] / f"{row['object_name']}_{LIGHT}{EXT}",
                        synth / folder / f"sdg_leak{EXT}")
    result = deft("preflight", "-w", str(deeppcb_copy), "--json")
    assert result.exit_code == 0, result.output
    doc = pool_hygiene(result)
    assert doc["counts"]["synthetic"] == {"key": 0, "content": 1, "near_duplicate": 0}
    listed = pd.read_csv(doc["exclusions_file"], dtype=str, keep_default_na=False)
    assert listed[["source", "object_name", "twin_set", "twin_row"]].values.tolist() == [
        ["synthetic", "sdg_leak", "kpi", "2"]]
