"""Selection strategies (mining/strategy.py): pure functions on small hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from deft_aoi.mining.knn import KnnParams, mine_neighbours
from deft_aoi.mining.params import MineConfig
from deft_aoi.mining.strategy import (
    Selection,
    balance,
    calibrated_cutoff,
    kpi_weights,
    select,
    selection_cutoff,
    target_weights,
)


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two targets far apart; target 0 has 12 near-identical neighbours, target 1 has 3 looser ones;
    plus 20 unrelated pool rows."""
    rng = np.random.default_rng(seed)
    d = 16
    t = np.eye(d, dtype=np.float32)[:2]
    near0 = t[0] + 0.01 * rng.standard_normal((12, d))  # near-duplicates of one another
    near1 = t[1] + 0.3 * rng.standard_normal((3, d))
    far = rng.standard_normal((20, d))
    far[:, :2] = 0
    pool = np.vstack([near0, near1, far]).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    is_defect = np.zeros(len(pool), bool)
    is_defect[12:15] = True
    return t, pool, is_defect


def _select(t: np.ndarray, pool: np.ndarray, params: MineConfig, *, pool_is_defect: np.ndarray,
            in_history: np.ndarray | None = None, weakness: np.ndarray | None = None) -> Selection:
    """The engine's one pass on arrays: the cut-off, the one k-NN at it, the selection among its rows."""
    cutoff, _ = selection_cutoff(t, pool, params, weakness)
    knn_params = KnnParams(topn=params.top_k_per_target, min_similarity=cutoff, filter_by_label=False)
    knn = mine_neighbours(t, pool, knn_params, pool_in_history=in_history)
    return select(t, pool, params, knn=knn, cutoff=cutoff, pool_is_defect=pool_is_defect, in_history=in_history,
                  weakness=weakness)


def test_knn_strategy_is_todays_knn() -> None:
    t, pool, is_def = _world()
    params = MineConfig(strategy="knn", top_k_per_target=5, min_similarity=0.5)
    got = _select(t, pool, params, pool_is_defect=is_def)
    ref = mine_neighbours(t, pool, KnnParams(topn=5, min_similarity=0.5, filter_by_label=False))
    assert got.knn.mined["pool"].tolist() == ref.mined["pool"].tolist()
    assert got.counts["selected"] == got.counts["budget"] == len(ref.mined)
    assert got.counts["selected_pass"] + got.counts["selected_defect"] == got.counts["selected"]


def test_calibrated_cutoff_takes_the_stated_share() -> None:
    sims = np.array([0.1, 0.5, 0.9, 0.8, 0.7, 0.3, 0.2, 0.6, 0.4, 0.95])
    assert calibrated_cutoff(sims, 20) == 0.9  # 2 of 10 rows at or above
    assert calibrated_cutoff(sims, 100) == 0.1
    assert calibrated_cutoff(sims, 1) == 0.95  # at least one row
    with pytest.raises(ValueError):
        calibrated_cutoff(sims, 0)


def test_pool_share_bounds_the_share_taken() -> None:
    t, pool, is_def = _world()
    params = MineConfig(top_k_per_target=50, min_similarity=-1.0, pool_share_pct=10)
    got = _select(t, pool, params, pool_is_defect=is_def)
    assert got.counts["selected"] <= round(0.10 * len(pool)) + 1
    cutoff, notes = selection_cutoff(t, pool, params)
    assert got.cutoff == cutoff > 0.5 and any("pool-calibrated" in n for n in notes)


def test_kpi_strategy_follows_the_weakest_target() -> None:
    t, pool, is_def = _world()
    weak_second = np.array([-1.0, 1.0])  # target 1 is wrong at the threshold, target 0 right by a margin
    got = _select(t, pool, MineConfig(strategy="kpi", top_k_per_target=3, min_similarity=0.0), pool_is_defect=is_def,
                 weakness=weak_second)
    mined = got.knn.mined
    assert 0 < len(mined) <= got.counts["budget"]  # never more than knn's budget
    # The marginal target's neighbours rank first; a target the model gets right pulls nothing.
    assert set(mined["pool"].head(3)) == {12, 13, 14}
    assert (mined["matched_target"] == 1).all()


def test_kpi_strategy_with_every_target_right_weighs_them_all() -> None:
    t, pool, is_def = _world()
    got = _select(t, pool, MineConfig(strategy="kpi", top_k_per_target=3, min_similarity=0.0), pool_is_defect=is_def,
                 weakness=np.array([-1.0, -0.5]))
    assert set(got.knn.mined["matched_target"]) == {0, 1}


def test_kpi_pool_share_is_calibrated_on_the_targets_that_pull() -> None:
    # Target 0 (right by a margin) has 12 near-identical neighbours; calibrated on every target they
    # would take the whole 8 % share (3 rows) and target 1's looser neighbours would fall below it.
    t, pool, is_def = _world()
    params = MineConfig(strategy="kpi", top_k_per_target=5, min_similarity=-1.0, pool_share_pct=8)
    got = _select(t, pool, params, pool_is_defect=is_def, weakness=np.array([-1.0, 1.0]))
    assert set(got.knn.mined["pool"]) == {12, 13, 14}


def test_diverse_skips_near_duplicates_and_covers_every_target() -> None:
    t, pool, is_def = _world()
    knn = _select(t, pool, MineConfig(strategy="knn", top_k_per_target=5, min_similarity=0.5),
                  pool_is_defect=is_def)
    div = _select(t, pool, MineConfig(strategy="diverse", top_k_per_target=5, min_similarity=0.5),
                  pool_is_defect=is_def)
    assert set(div.knn.mined["matched_target"]) == {0, 1}
    taken = pool[div.knn.mined["pool"].to_numpy()]
    sims = taken @ taken.T
    np.fill_diagonal(sims, 0)
    assert sims.max() < 0.99  # no two near-duplicates
    # k-NN takes near-duplicates of target 0 (they are its top-5), diverse takes at most one of them.
    assert (knn.knn.mined["pool"] < 12).sum() >= 2 and (div.knn.mined["pool"] < 12).sum() <= 1


def test_balance_drops_lowest_ranked_pass_rows() -> None:
    picked = pd.DataFrame({"pool": [0, 1, 2, 3, 4, 5], "similarity": [0.9] * 6, "target": [0] * 6})
    is_def = np.array([False, True, False, False, True, False])
    kept, dropped = balance(picked, is_def, 1.0)
    assert kept["pool"].tolist() == [0, 1, 2, 4] and dropped == 2
    assert balance(picked, is_def, None)[1] == 0
    none_def = np.zeros(6, bool)
    assert balance(picked, none_def, 0.5)[1] == 0  # no defect rows: nothing to balance against


def test_balance_guard_inside_select_reports_the_ratio() -> None:
    t, pool, is_def = _world()
    got = _select(t, pool, MineConfig(top_k_per_target=10, min_similarity=0.0, max_pass_ratio=1.0),
                  pool_is_defect=is_def)
    assert got.counts["selected_pass"] <= got.counts["selected_defect"] and got.counts["balance_dropped"] > 0


def test_target_weights() -> None:
    assert np.allclose(target_weights(None, 3), 1.0)
    assert np.allclose(target_weights(np.array([0.2, 0.2]), 2), 1.0)
    w = target_weights(np.array([-0.5, 0.0, 0.5]), 3)
    assert 0.0 < w[0] < w[1] < w[2]  # `diverse` orders every target by weakness
    w = kpi_weights(np.array([-0.5, 0.0, 0.5]), 3)
    assert w[0] == 0.0 < w[1] < w[2]  # right at the threshold by a margin: no pull
    w = kpi_weights(np.array([-0.5, -0.2]), 2)
    assert 0.0 < w[0] < w[1]  # every target right: the least safe pulls hardest


def test_auto_encoder_is_shape_on_the_local_backend_only() -> None:
    from deft_aoi.mining.embedders import resolve_encoder

    assert resolve_encoder("auto", "local") == "shape"
    assert resolve_encoder("auto", "docker") == resolve_encoder("auto", "fake") == "builtin"
    assert resolve_encoder("auto", None) == "builtin"
    assert resolve_encoder("siglip", "local") == "siglip"


def test_auto_strategy_is_kpi_where_kpi_can_run() -> None:
    from deft_aoi.mining.params import resolve_strategy

    assert resolve_strategy("auto", engine="builtin", pool_in_memory=True) == "kpi"
    assert resolve_strategy("auto", engine="builtin", pool_in_memory=False) == "knn"  # --mining-memory
    assert resolve_strategy("auto", engine="data_services", pool_in_memory=True) == "knn"
    assert resolve_strategy("diverse", engine="data_services", pool_in_memory=True) == "diverse"
    assert MineConfig(strategy="auto").selection_strategy == "knn"  # `deft mine` outside a run: the plain k-NN


def test_unknown_strategy() -> None:
    with pytest.raises(ValidationError, match="strategy"):
        MineConfig(strategy="magic")  # type: ignore[arg-type]


def test_history_rows_are_never_selected() -> None:
    t, pool, is_def = _world()
    hist = np.zeros(len(pool), bool)
    hist[:6] = True
    for strategy in ("knn", "kpi", "diverse"):
        got = _select(t, pool, MineConfig(strategy=strategy, top_k_per_target=5, min_similarity=0.0),
                      pool_is_defect=is_def, in_history=hist)
        assert not hist[got.knn.mined["pool"].to_numpy()].any(), strategy


@pytest.mark.parametrize("share", [None, 10.0])
def test_mining_is_one_pass_the_knn_runs_once_at_the_selections_cutoff(monkeypatch: pytest.MonkeyPatch,
                                                                       share: float | None) -> None:
    """engine.run_mining: the cut-off is settled first (fixed or pool-calibrated), the k-NN runs once at it, and
    the mined rows are the selection's (kpi here, with the class balance), assembled once."""
    from pathlib import Path

    import deft_aoi.mining.knn as knn_module
    from deft_aoi.mining.engine import run_mining
    from deft_aoi.mining.inputs import MiningTable

    t, pool, is_def = _world()
    calls: list[float] = []
    real = knn_module.mine_neighbours

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args[2].min_similarity)  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(knn_module, "mine_neighbours", counting)
    targets = MiningTable(pd.DataFrame({"filepath": ["/t0", "/t1"], "weakness": [-1.0, 1.0]}), Path("t"), t)
    frame = pd.DataFrame({"filepath": [f"/p{i}" for i in range(len(pool))],
                          "label": np.where(is_def, "short", "PASS")})
    params = MineConfig(strategy="kpi", top_k_per_target=5, min_similarity=0.0, pool_share_pct=share,
                        max_pass_ratio=2.0)
    run = run_mining(targets, MiningTable(frame, Path("p"), pool), params)
    cutoff, _ = selection_cutoff(t, pool, params, np.array([-1.0, 1.0]))
    assert calls == [cutoff]  # one search, at the cut-off the selection used
    assert run.cutoff == cutoff and run.strategy == "kpi"
    expected = _select(t, pool, params, pool_is_defect=is_def, weakness=np.array([-1.0, 1.0]))
    assert run.mined["filepath"].tolist() == [f"/p{i}" for i in expected.knn.mined["pool"]]
    assert run.selection == expected.counts
