"""bench/efficacy_suite.py: grouped folds hold board groups out of training and the pool; bench/loop_efficacy.py
records a stopped arm instead of ending, and its random control draws only rows the product may mine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pandas as pd
import pytest


def test_folds_are_balanced_deterministic_and_cover_every_group(load_bench: Callable[[str], ModuleType]) -> None:
    suite = load_bench("efficacy_suite")
    kpi = {"41": 153, "12100": 121, "92000": 91, "50600": 84, "12300": 73, "77000": 40, "12000": 11}
    folds = suite.assign_folds(kpi, 4)
    assert folds == [["41"], ["12000", "12100"], ["77000", "92000"], ["12300", "50600"]]
    assert sorted(g for f in folds for g in f) == sorted(kpi)
    assert suite.assign_folds(dict(reversed(kpi.items())), 4) == folds  # input order does not matter
    with pytest.raises(ValueError, match="cannot make 8 folds"):
        suite.assign_folds(kpi, 8)


def _frame(boards: list[str], labels: list[str]) -> pd.DataFrame:
    paths = [f"p{i}" for i in range(len(boards))]
    return pd.DataFrame({"boardname": boards, "label": labels, "input_path": paths, "golden_path": paths})


def test_a_fold_measures_only_held_out_groups_and_trains_only_on_the_others(
        load_bench: Callable[[str], ModuleType]) -> None:
    suite = load_bench("efficacy_suite")
    frames = {
        "training": _frame(["1", "1", "2", "2"], ["PASS", "open", "PASS", "short"]),
        "validation": _frame(["1", "2", "2"], ["PASS", "PASS", "open"]),
        "kpi": _frame(["1", "2", "2", "3"], ["PASS", "PASS", "open", "open"]),
        "pool": _frame(["1", "2", "3"], ["PASS", "PASS", "PASS"]),
    }
    out = suite.fold_frames(frames, {"2"}, wide_kpi=False)
    assert set(out["kpi"]["boardname"]) == {"2"} and set(out["validation"]["boardname"]) == {"2"}
    assert "2" not in set(out["training"]["boardname"]) and "2" not in set(out["pool"]["boardname"])
    assert len(out["pool"]) == 2 and len(out["training"]) == 2 and len(out["kpi"]) == 2
    with pytest.raises(ValueError, match="validation rows lack PASS or defect"):
        suite.fold_frames(frames, {"1"})  # board 1's validation rows are all PASS
    # The wide KPI set (the default) also measures on the held-out groups' training and pool rows, the pool's
    # under the folder write_fold copies their images to; nothing of those groups is trained or mined on.
    wide = suite.fold_frames(frames, {"2"})
    assert set(wide["kpi"]["boardname"]) == {"2"} and len(wide["kpi"]) == 2 + 2 + 1
    assert wide["kpi"]["input_path"].tolist() == ["p1", "p2", "p2", "p3", f"{suite.POOL_IN_KPI}/p1"]
    assert wide["training"].equals(out["training"]) and wide["pool"].equals(out["pool"])


def test_write_fold_on_deeppcb_keeps_groups_apart(load_bench: Callable[[str], ModuleType], deeppcb_dev: Path,
                                                  tmp_path: Path) -> None:
    suite = load_bench("efficacy_suite")
    held = suite.assign_folds(suite.kpi_rows_by_group(deeppcb_dev), 4)[0]
    fold = suite.write_fold(deeppcb_dev, tmp_path / "fold0", held)
    frames = suite.read_frames(fold)
    assert set(frames["kpi"]["boardname"]) == set(held) == set(frames["validation"]["boardname"])
    assert not set(frames["training"]["boardname"]) & set(held)
    assert not set(frames["pool"]["boardname"]) & set(held)
    # the KPI rows kept are written back cell for cell, then the held-out training and pool rows
    original = suite.read_frames(deeppcb_dev)
    kpi = original["kpi"][original["kpi"]["boardname"].isin(held)]
    assert frames["kpi"].head(len(kpi)).equals(kpi.reset_index(drop=True))
    pool = original["pool"][original["pool"]["boardname"].isin(held)]
    assert len(frames["kpi"]) == len(kpi) + (original["training"]["boardname"].isin(held)).sum() + len(pool)
    # every KPI row's images are where the KPI set resolves them
    from deft_aoi.workspace.layout import WorkspaceLayout

    images = WorkspaceLayout(fold).kpi_images
    for folder in set(frames["kpi"]["input_path"]) | set(frames["kpi"]["golden_path"]):
        assert any((images / folder).iterdir()), folder
    assert not (fold / "results").exists()


def test_a_stopped_run_is_a_recorded_outcome(load_bench: Callable[[str], ModuleType], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench("loop_efficacy")
    from deft_aoi.errors import HardStop
    from deft_aoi.loop.state import IterationState

    its = [IterationState(name="baseline", index=0, far_pct=12.5), IterationState(name="iter1", index=1)]
    state = SimpleNamespace(status="failed", failure="leakage", ordered_iterations=lambda: its)

    class StoppingLoop:
        def __init__(self, *_: object, **__: object) -> None: ...

        def preflight(self) -> tuple[object, object]:
            return SimpleNamespace(ready=True, checks=[]), object()

        def start(self, *_: object) -> object:
            raise HardStop("leakage", "validate: a mined row leaks into the KPI set")

    monkeypatch.setattr("deft_aoi.api.Loop", StoppingLoop)
    monkeypatch.setattr(bench, "latest_state", lambda _ws: state)
    monkeypatch.setattr(bench, "train_rates", lambda _state: [])
    result = bench.run_loop(tmp_path, 2, train_seed=0)
    assert result.state is state and result.ended is not None and "leaks into the KPI set" in result.ended
    s = bench.series(result.state)
    assert s.far == [12.5] and s.stopped  # iter1 never reached evaluate: the baseline's FAR is its final


def test_random_control_draws_only_rows_the_product_may_mine(load_bench: Callable[[str], ModuleType],
                                                             tmp_path: Path) -> None:
    bench = load_bench("loop_efficacy")
    from deft_aoi.synth.staging import synth_pool_dir
    from deft_aoi.workspace.catalog import name

    run_root = tmp_path / "run"
    pool = pd.DataFrame({"input_path": ["images/a/test", "images/b/test", "images/c/test"],
                         "golden_path": ["images/a/golden", "images/b/golden", "images/c/golden"],
                         "label": ["PASS", "PASS", "open"], "object_name": ["x", "y", "z"],
                         "source": ["mining_pool"] * 3})
    staged = synth_pool_dir(run_root) / name("stage_synth.source_pool")
    staged.parent.mkdir(parents=True)
    pool.to_parquet(staged)
    exclusions = run_root / "pool_exclusions.csv"
    pool.iloc[[1]].assign(kind="content").to_csv(exclusions, index=False)  # b leaks into the KPI set
    out = tmp_path / "mine_rows.parquet"
    ctx = SimpleNamespace(
        services=SimpleNamespace(run=SimpleNamespace(root=run_root, pool_exclusions=exclusions),
                                 workspace=SimpleNamespace(root=tmp_path / "ws"),
                                 spec=SimpleNamespace(lights=["L"], image_ext=".png")),
        state=SimpleNamespace(iterations={}), iteration="iter1", index=1, output=lambda _key: out)
    bench.SampleMineStage(None, seed=0).run(ctx)  # "the whole pool": every row it may draw
    drawn = pd.read_parquet(out)
    assert sorted(drawn["object_name"]) == ["x", "z"]


def test_a_run_that_met_the_kpi_at_baseline_keeps_its_baseline_as_best(
        load_bench: Callable[[str], ModuleType]) -> None:
    bench = load_bench("loop_efficacy")
    met = bench.Series(far=[0.0], far99=[0.0], added=[0], train_s=[1.0], rates=[])
    ran = bench.Series(far=[1.7, 21.7, 11.7], far99=[1.0, 2.0, 3.0], added=[0, 5, 5], train_s=[1, 1, 1], rates=[])
    assert bench.best_after_baseline(met) == 0.0
    assert bench.best_after_baseline(ran) == 11.7
