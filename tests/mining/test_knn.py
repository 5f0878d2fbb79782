from __future__ import annotations

import numpy as np
import pytest

from deft_aoi.mining import knn as knn_mod
from deft_aoi.mining.knn import KnnParams, l2_normalise, mine_neighbours, topk_cosine


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(q: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ p.T.astype(np.float64)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize("use_faiss", [False, True])
def test_topk_matches_brute_force(monkeypatch: pytest.MonkeyPatch, use_faiss: bool) -> None:
    if use_faiss:
        monkeypatch.setattr(knn_mod, "NUMPY_MAX_POOL", 0)
    rng = np.random.default_rng(1)
    q, p = _unit(rng, 300, 32), _unit(rng, 2000, 32)
    sims, idx = topk_cosine(q, p, 7)
    bs, bi = _brute(q, p, 7)
    np.testing.assert_allclose(sims, bs, atol=1e-5)
    assert (idx == bi).mean() > 0.999  # float32 vs float64 may swap exact near-ties only
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


def test_topk_k_larger_than_pool() -> None:
    rng = np.random.default_rng(2)
    sims, idx = topk_cosine(_unit(rng, 3, 4), _unit(rng, 2, 4), 5)
    assert sims.shape == (3, 2)
    assert sorted(idx[0].tolist()) == [0, 1]


def test_l2_normalise_keeps_unit_array_without_copy() -> None:
    rng = np.random.default_rng(3)
    x = _unit(rng, 10, 4)
    assert l2_normalise(x) is x
    y = x * 3
    out = l2_normalise(y)
    assert out is not y
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(y, x * 3)  # caller's array untouched


def _toy() -> tuple[np.ndarray, np.ndarray]:
    # Two targets on the x / y axes; pool rows at known angles.
    t = np.array([[1, 0], [0, 1]], dtype=np.float32)
    angles = np.deg2rad([0, 10, 20, 40, 80, 85, 90])
    p = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    return t, p


def test_cutoff_history_dedup_counts() -> None:
    t, p = _toy()
    hist = np.zeros(len(p), dtype=bool)
    hist[1] = True  # the 10° row was mined before
    cut = float(np.cos(np.deg2rad(15)))
    res = mine_neighbours(t, p, KnnParams(topn=3, min_similarity=cut, filter_by_label=False), pool_in_history=hist)
    c = res.counts
    assert c["raw"] == 6
    # target x: 0° and 10° pass, 20° is cut; target y: 90°, 85°, 80° pass
    assert c["after_cutoff"] == 5
    assert c["after_history"] == 4
    assert c["after_dedup"] == 4
    assert sorted(res.mined["pool"].tolist()) == [0, 4, 5, 6]
    assert (res.mined["similarity"] >= cut - 1e-6).all()
    pt = res.per_target.set_index("target")
    assert pt.loc[0, "candidate_count"] == 3 and pt.loc[0, "after_cutoff"] == 2 and pt.loc[0, "kept_count"] == 1


def test_dedup_keeps_best_target() -> None:
    t = np.array([[1, 0], [np.cos(0.3), np.sin(0.3)]], dtype=np.float32)
    p = np.array([[1, 0], [np.cos(0.3), np.sin(0.3)]], dtype=np.float32)
    res = mine_neighbours(t, p, KnnParams(topn=2, min_similarity=0.0, filter_by_label=False))
    assert res.counts["after_history"] == 4
    assert res.counts["after_dedup"] == 2
    assert res.counts["duplicates_removed"] == 2
    best = dict(zip(res.mined["pool"], res.mined["matched_target"], strict=True))
    assert best == {0: 0, 1: 1}
    assert res.mined["n_targets"].tolist() == [2, 2]
    pt = res.per_target.set_index("target")
    assert pt.loc[0, "kept_count"] == 1 and pt.loc[0, "rejected_count"] == 1


def test_label_filter_restricts_neighbours() -> None:
    rng = np.random.default_rng(4)
    t, p = _unit(rng, 20, 8), _unit(rng, 200, 8)
    tl = np.array(["open", "short"] * 10)
    pl = np.array(["open", "short", "PASS", "spur"] * 50)
    res = mine_neighbours(t, p, KnnParams(topn=4, min_similarity=-1, filter_by_label=True),
                          target_labels=tl, pool_labels=pl)
    cand = res.candidates
    assert (pl[cand["pool"]] == tl[cand["target"]]).all()
    assert res.counts["raw"] == 80
    unfiltered = mine_neighbours(t, p, KnnParams(topn=4, min_similarity=-1, filter_by_label=False),
                                 target_labels=tl, pool_labels=pl)
    assert (pl[unfiltered.candidates["pool"]] != tl[unfiltered.candidates["target"]]).any()


def test_label_filter_notes_starved_label() -> None:
    t = np.eye(2, dtype=np.float32)
    p = np.eye(2, dtype=np.float32)
    res = mine_neighbours(t, p, KnnParams(topn=1, min_similarity=0, filter_by_label=True),
                          target_labels=np.array(["open", "spur"]), pool_labels=np.array(["open", "PASS"]))
    assert res.counts["raw"] == 1
    assert any("'spur'" in n for n in res.notes)


def test_note_when_topn_times_targets_exceeds_pool() -> None:
    rng = np.random.default_rng(5)
    res = mine_neighbours(_unit(rng, 4, 3), _unit(rng, 10, 3),
                          KnnParams(topn=5, min_similarity=0, filter_by_label=False))
    assert any("exceeds" in n for n in res.info) and not res.notes  # expected (NVIDIA's recipe): info, not a warning
    ok = mine_neighbours(_unit(rng, 2, 3), _unit(rng, 10, 3),
                         KnnParams(topn=5, min_similarity=0, filter_by_label=False))
    assert not ok.notes and not ok.info


def test_filter_by_label_without_labels_is_error() -> None:
    with pytest.raises(ValueError):
        mine_neighbours(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32),
                        KnnParams(topn=5, min_similarity=0.9, filter_by_label=True))


@pytest.mark.parametrize("use_faiss", [False, True])
def test_history_slot_is_backfilled_with_next_fresh_row(monkeypatch: pytest.MonkeyPatch, use_faiss: bool) -> None:
    if use_faiss:
        monkeypatch.setattr(knn_mod, "NUMPY_MAX_POOL", 0)
    t, p = _toy()
    hist = np.zeros(len(p), dtype=bool)
    hist[0] = True  # the 0° row was mined in an earlier iteration
    params = KnnParams(topn=2, min_similarity=float(np.cos(np.deg2rad(30))), filter_by_label=False)
    res = mine_neighbours(t[:1], p, params, pool_in_history=hist)
    c = res.counts
    assert (c["raw"], c["after_cutoff"], c["after_history"], c["backfilled"], c["after_dedup"]) == (2, 2, 1, 1, 2)
    assert sorted(res.mined["pool"].tolist()) == [1, 2]  # 10° kept, 20° back-filled for the lost 0° slot
    pt = res.per_target.iloc[0]
    assert pt["candidate_count"] == 2 and pt["backfilled"] == 1 and pt["kept_count"] == 2
    assert pt["rejected_count"] == 1  # the history row


def test_backfill_respects_cutoff() -> None:
    t, p = _toy()
    hist = np.zeros(len(p), dtype=bool)
    hist[0] = True
    params = KnnParams(topn=2, min_similarity=float(np.cos(np.deg2rad(15))), filter_by_label=False)
    res = mine_neighbours(t[:1], p, params, pool_in_history=hist)
    assert res.counts["backfilled"] == 0  # the next fresh row (20°) is below the cut-off
    assert res.mined["pool"].tolist() == [1]


# --- sharded exact search (issue 14) ---------------------------------------------------------------------

from deft_aoi.mining.knn import ArrayBlocks, exact_search, merge_topk, shard_rows_for_budget  # noqa: E402


@pytest.mark.parametrize("n_pool", [3000, 60_000])  # numpy kernel, faiss kernel
def test_sharded_exact_search_is_identical_to_whole(n_pool: int) -> None:
    rng = np.random.default_rng(11)
    p, q = _unit(rng, n_pool, 24), _unit(rng, 40, 24)
    p[n_pool - 1] = p[7]  # an exact tie across shards: the lower index must win, as in the whole search
    q[0] = p[7]
    (ws, wi), = exact_search(q, p, 9)
    for rows in (1, 1000, 1024, n_pool - 1, n_pool * 2):
        (ss, si), = exact_search(q, p, 9, shard_rows=rows)
        np.testing.assert_array_equal(si, wi)
        np.testing.assert_array_equal(ss, ws)
    assert wi[0, 0] == 7 and wi[0, 1] == n_pool - 1


def test_sharded_mining_identical_with_labels_and_history() -> None:
    rng = np.random.default_rng(12)
    p, q = _unit(rng, 5000, 16), _unit(rng, 60, 16)
    tl, pl = rng.integers(0, 3, 60).astype(str), rng.integers(0, 3, 5000).astype(str)
    hist = rng.random(5000) < 0.05
    params = KnnParams(topn=4, min_similarity=0.2, filter_by_label=True)
    whole = mine_neighbours(q, p, params, target_labels=tl, pool_labels=pl, pool_in_history=hist)
    sharded = mine_neighbours(q, p, params, target_labels=tl, pool_labels=pl, pool_in_history=hist, shard_rows=333)
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(whole.candidates, sharded.candidates)
    pd_testing.assert_frame_equal(whole.mined, sharded.mined)
    assert whole.counts == sharded.counts


def test_sharded_search_converts_float16_per_shard() -> None:
    rng = np.random.default_rng(13)
    p, q = _unit(rng, 2000, 16), _unit(rng, 10, 16)
    half = p.astype(np.float16)
    (s16, i16), = exact_search(q, ArrayBlocks(half), 5, shard_rows=256)
    (s32, i32), = exact_search(q, p, 5)
    np.testing.assert_allclose(s16, s32, atol=2e-3)
    assert (i16 == i32).mean() > 0.9


def test_merge_topk_breaks_ties_by_index() -> None:
    s, i = merge_topk(np.array([[0.5, 0.4]], np.float32), np.array([[9, 3]]),
                      np.array([[0.5, 0.1]], np.float32), np.array([[2, 4]]), 3)
    assert i.tolist() == [[2, 9, 3]]
    assert s[0].tolist() == pytest.approx([0.5, 0.5, 0.4])


def test_shard_rows_follow_the_budget() -> None:
    small = shard_rows_for_budget(256 * 2**20, 512, 1000, 5)
    big = shard_rows_for_budget(2 * 2**30, 512, 1000, 5)
    assert small % 1024 == 0 and big % 1024 == 0
    assert 1024 <= small < big
    assert big * 512 * 4 <= 2 * 2**30
    with pytest.raises(ValueError, match="memory budget"):
        shard_rows_for_budget(20 * 2**20, 512, 1000, 5)


def test_l2_normalise_copies_a_read_only_non_unit_array() -> None:
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    x.flags.writeable = False  # as pyarrow hands out parquet columns
    out = l2_normalise(x)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    assert out.flags.writeable and not np.shares_memory(out, x)
