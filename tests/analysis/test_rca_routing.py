"""RCA (weakness ranking, per-light gap rows, unreachable KPI) and single-bucket routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deft_aoi.analysis.rca import gap_columns, read_threshold, run_rca, write_rca
from deft_aoi.analysis.routing import route, write_routing
from deft_aoi.config import KpiTarget
from deft_aoi.errors import InputError
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, read_changenet_csv
from deft_aoi.workspace.stored_paths import read_parquet

KPI = KpiTarget.parse("FAR<0.1%@recall=100%")
LIGHTS = ("SolderLight", "UniformLight")


def inference(labels: list[str], scores: list[float]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "input_path": [f"p{i}/test" for i in range(n)],
            "golden_path": [f"p{i}/golden" for i in range(n)],
            "label": labels,
            "object_name": [f"c{i}" for i in range(n)],
            "boardname": "b1",
            "siamese_score": scores,
        }
    )


def rca(df: pd.DataFrame, tmp_path: Path, **kwargs: object) -> object:
    return run_rca(df, images_dir=tmp_path / "images", lights=LIGHTS, image_ext=".png", kpi=KPI, **kwargs)


def test_weakness_ranking_top_k_and_light_rows(tmp_path: Path) -> None:
    labels = ["PASS", "PASS", "PASS", "PASS", "open", "open", "short"]
    scores = [0.10, 0.85, 0.35, 0.50, 0.40, 0.90, 0.95]
    result = rca(inference(labels, scores), tmp_path, top_k_per_label=2)
    assert not result.unreachable
    t = result.report.threshold
    assert t == 0.35  # highest score below the weakest defect (0.40)
    gaps = result.gaps
    assert list(gaps.columns) == gap_columns()
    assert set(CHANGENET_COLUMNS) <= set(gaps.columns)
    # Two PASS (0.85 and 0.50 are the weakest), two open, one short; each once per light.
    assert len(gaps) == 5 * len(LIGHTS)
    kept = gaps.drop_duplicates("object_name").set_index("object_name")
    assert set(kept.index) == {"c1", "c3", "c4", "c5", "c6"}
    assert kept.loc["c1", "weakness"] == pytest.approx(0.85 - t)
    assert kept.loc["c4", "weakness"] == pytest.approx(t - 0.40)
    assert gaps["weakness"].is_monotonic_decreasing
    row = gaps[(gaps["object_name"] == "c1") & (gaps["light"] == "UniformLight")].iloc[0]
    assert row["filepath"] == f"{tmp_path}/images/p1/test/c1_UniformLight.png"
    assert row["golden_filepath"] == f"{tmp_path}/images/p1/golden/c1_UniformLight.png"
    assert row["boardname"] == "b1" and row["project"] == ""
    # FN first (none at recall 100 %), then FP rate: PASS leads, then defects by marginality.
    assert result.target_defects[0] == "PASS"
    assert set(result.target_defects) == {"PASS", "open", "short"}
    assert "PASS" in result.breakdown and "open" in result.breakdown


def test_target_defects_rank_fn_count_first(tmp_path: Path) -> None:
    kpi = KpiTarget.parse("FAR<1%@recall=50%")
    labels = ["open", "open", "open", "short", "short", "short", "PASS", "PASS"]
    scores = [0.9, 0.05, 0.06, 0.95, 0.8, 0.04, 0.2, 0.3]
    result = run_rca(inference(labels, scores), images_dir=tmp_path, lights=["L"], image_ext=".jpg", kpi=kpi)
    stats = result.per_label.set_index("label")
    assert result.report.threshold == 0.3  # three of six defects above it: recall 50 %
    assert stats.loc["open", "fn"] == 2 and stats.loc["short", "fn"] == 1 and stats.loc["PASS", "fp"] == 0
    assert result.target_defects == ["open", "short", "PASS"]


def test_unreachable_without_defects_writes_the_reason(tmp_path: Path) -> None:
    result = rca(inference(["PASS", "PASS"], [0.2, 0.4]), tmp_path)
    assert result.unreachable and result.gaps.empty
    assert list(result.gaps.columns) == gap_columns()
    assert "NO_PASS" in (result.reason or "")
    out = tmp_path / "rca"
    write_rca(result, out, root=tmp_path)
    assert "NO_PASS" in (out / "unreachable_kpi.txt").read_text()
    assert read_threshold(out / "threshold.txt") is None
    assert pd.read_parquet(out / "kpi_gaps.parquet").empty


def test_nan_score_makes_the_kpi_unreachable(tmp_path: Path) -> None:
    result = rca(inference(["PASS", "open", "open"], [0.2, np.nan, 0.9]), tmp_path)
    assert result.unreachable and result.gaps.empty
    assert "row 3" in (result.reason or "") and "siamese_score" in (result.reason or "")
    assert result.report.threshold is None and not result.report.kpi_met


def test_bad_inputs_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="siamese_score"):
        rca(inference(["PASS"], [0.1]).drop(columns="siamese_score"), tmp_path)
    with pytest.raises(InputError, match="object_name"):
        rca(inference(["PASS"], [0.1]).drop(columns="object_name"), tmp_path)
    with pytest.raises(InputError, match="top_k_per_label"):
        rca(inference(["PASS"], [0.1]), tmp_path, top_k_per_label=0)


def test_write_rca_then_route(tmp_path: Path) -> None:
    result = rca(inference(["PASS", "PASS", "open", "short"], [0.1, 0.6, 0.5, 0.9]), tmp_path)
    out = tmp_path / "rca"
    (out).mkdir()
    (out / "unreachable_kpi.txt").write_text("stale")
    write_rca(result, out, root=tmp_path)
    assert not (out / "unreachable_kpi.txt").exists()
    assert read_threshold(out / "threshold.txt") == result.report.threshold == 0.1
    # Stored relative to the workspace (a moved or copied one finds its own images), absolute once read back.
    stored = pd.read_parquet(out / "kpi_gaps.parquet")
    assert stored["filepath"].str.startswith("images/p").all(), stored["filepath"].tolist()
    gaps = read_parquet(out / "kpi_gaps.parquet", tmp_path)
    pd.testing.assert_frame_equal(gaps, result.gaps)
    assert "FAR" in (out / "weak_samples_breakdown.txt").read_text()
    assert '"threshold": 0.1' in (out / "metrics.json").read_text()

    routed = route(gaps)
    pd.testing.assert_frame_equal(routed.mining_gaps, gaps)
    assert routed.anomalygen_gaps.empty and list(routed.anomalygen_gaps.columns) == list(gaps.columns)
    assert f"gap rows: {len(gaps)}" in routed.summary
    rdir = tmp_path / "routing"
    write_routing(routed, rdir, root=tmp_path)
    pd.testing.assert_frame_equal(read_parquet(rdir / "mining_gaps.parquet", tmp_path), gaps)
    assert not pd.read_parquet(rdir / "mining_gaps.parquet")["golden_filepath"].str.startswith("/").any()
    empty = pd.read_parquet(rdir / "anomalygen_gaps.parquet")
    assert empty.empty and list(empty.columns) == list(gaps.columns)
    assert "single bucket" in (rdir / "routing_summary.txt").read_text()


def test_route_rejects_frames_without_gap_columns() -> None:
    with pytest.raises(InputError, match="weakness"):
        route(pd.DataFrame({"filepath": ["a"], "label": ["PASS"], "siamese_score": [0.1]}))


def test_route_empty_gaps() -> None:
    routed = route(pd.DataFrame({c: pd.Series(dtype=str) for c in gap_columns()}))
    assert routed.mining_gaps.empty and routed.anomalygen_gaps.empty


def test_rca_on_real_kpi_set(deeppcb_dev: Path) -> None:
    df = read_changenet_csv(deeppcb_dev / "kpi" / "testing_set.csv")
    rng = np.random.default_rng(7)
    is_pass = (df["label"] == "PASS").to_numpy()
    df["siamese_score"] = np.where(is_pass, rng.beta(2, 5, len(df)), rng.beta(5, 2, len(df)))
    result = run_rca(
        df, images_dir=deeppcb_dev / "kpi" / "images", lights=["SolderLight"], image_ext=".jpg", kpi=KPI
    )
    assert result.report.n_rows == 573 and result.report.n_pass == 250
    assert result.report.support_note  # 250 PASS rows cannot support FAR < 0.1 %
    per_label = result.gaps.groupby("label").size()
    assert per_label.max() <= 50
    assert per_label.sum() == sum(min(50, n) for n in df["label"].value_counts())
    assert all(Path(p).is_file() for p in result.gaps["filepath"])
    assert all(Path(p).is_file() for p in result.gaps["golden_filepath"])
