from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deft_aoi.analysis.leakage import PairReference, hash_leakage, key_leakage, key_matches, near_duplicates
from deft_aoi.errors import InputError
from deft_aoi.workspace.changenet_csv import LEAKAGE_KEY

from .helpers import frame, row


def test_key_leakage_keeps_train_index_and_normalises_cosmetics() -> None:
    train = frame([row("1"), row("2"), row("3", label="PASS")])
    train.index = [10, 11, 12]
    ref = frame([row("2", label=" OPEN "), row("3", label="pass")])
    ref.loc[1, "input_path"] += "/"
    leaked = key_leakage(train, ref)
    assert leaked.index.tolist() == [11, 12]
    assert leaked["object_name"].tolist() == ["d2", "d3"]


def test_key_leakage_needs_every_key_field() -> None:
    train = frame([row("1", board="b1"), row("2", label="short")])
    ref = frame([row("1", board="b2"), row("2", label="open")])
    assert key_leakage(train, ref).empty


def test_key_matches_names_the_reference_row() -> None:
    train = frame([row("5"), row("7")])
    ref = frame([row("7"), row("9"), row("7")])
    assert key_matches(train, ref).values.tolist() == [[1, 0]]


def test_key_leakage_on_empty_frames() -> None:
    assert key_leakage(frame([row("1")]).iloc[0:0], frame([row("1")])).empty
    assert key_leakage(frame([row("1")]), frame([row("1")]).iloc[0:0]).empty


def test_missing_key_column_is_an_input_error() -> None:
    with pytest.raises(InputError, match="boardname"):
        key_leakage(frame([row("1")]).drop(columns="boardname"), frame([row("1")]))


_keys = st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["g", "h"]), st.sampled_from(["PASS", "open"]),
                  st.sampled_from(["o1", "o2", "o3"]), st.sampled_from(["", "x"]))


@settings(max_examples=30, deadline=None)
@given(st.lists(_keys, max_size=25), st.lists(_keys, max_size=25))
def test_key_leakage_matches_a_set_lookup(train_keys: list[tuple], ref_keys: list[tuple]) -> None:
    train = pd.DataFrame(train_keys, columns=list(LEAKAGE_KEY))
    ref = pd.DataFrame(ref_keys, columns=list(LEAKAGE_KEY))
    expected = [i for i, k in enumerate(train_keys) if k in set(ref_keys)]
    assert key_leakage(train, ref).index.tolist() == expected


def test_hash_leakage_mask_ignores_blank_hashes() -> None:
    train = pd.Series(["aa", "bb", "", None, "cc"], index=[3, 4, 5, 6, 7])
    ref = pd.Series(["cc", "", None, "zz"])
    mask = hash_leakage(train, ref)
    assert mask.index.tolist() == [3, 4, 5, 6, 7]
    assert mask.tolist() == [False, False, False, False, True]


def test_near_duplicates_best_match_above_threshold() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    train = np.array([[0.0, 2.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.999, 0.01, 0.0]])
    found = near_duplicates(train, ref, block=2)
    assert found["train_pos"].tolist() == [0, 3]
    assert found["reference_pos"].tolist() == [1, 0]
    assert found["cosine"].iloc[0] == pytest.approx(1.0)


def test_near_duplicates_width_mismatch_is_an_error() -> None:
    with pytest.raises(InputError, match="widths differ"):
        near_duplicates(np.ones((2, 3)), np.ones((2, 4)))


def _pair_rows(halves_in: np.ndarray, halves_gold: np.ndarray) -> np.ndarray:
    def unit(x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)

    return (np.concatenate([unit(halves_in), unit(halves_gold)], axis=1) / np.sqrt(2)).astype(np.float32)


def _brute_twins(q: np.ndarray, r: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Every query row's best reference by min(input, golden) cosine over ALL reference rows (no candidates)."""
    h = q.shape[1] // 2
    c_in, c_gold = 2 * q[:, :h] @ r[:, :h].T, 2 * q[:, h:] @ r[:, h:].T
    b_in = ~q[:, :h].any(1)[:, None] & ~r[:, :h].any(1)[None, :]
    b_gold = ~q[:, h:].any(1)[:, None] & ~r[:, h:].any(1)[None, :]
    sims = np.minimum(np.where(b_in, 1.0, c_in), np.where(b_gold, 1.0, c_gold))
    sims[b_in & b_gold] = -np.inf
    best = sims.argmax(1)
    return {t: (int(best[t]), float(sims[t, best[t]])) for t in range(len(q)) if sims[t, best[t]] >= threshold}


@pytest.mark.parametrize("threshold", [0.998, 0.99, 0.9])
def test_pooled_gate_skips_only_rows_that_cannot_be_twins(threshold: float) -> None:
    # Twins at several noise levels around the threshold, blank sides, and a side whose 4x4-pooled thumbnail is
    # zero (a fine checker: no pooled energy, so the gate must not bound it): the gated candidate search finds
    # exactly the twins an all-pairs search finds.
    rng = np.random.default_rng(7)
    ref = _pair_rows(rng.normal(size=(300, 1024)).cumsum(1), rng.normal(size=(300, 1024)).cumsum(1))
    q = _pair_rows(rng.normal(size=(200, 1024)).cumsum(1), rng.normal(size=(200, 1024)).cumsum(1))
    for j in range(120):
        noisy = ref[j] + rng.normal(0, (0.0005, 0.001, 0.002, 0.004)[j % 4], ref.shape[1]).astype(np.float32)
        q[j] = _pair_rows(noisy[None, :1024], noisy[None, 1024:])[0]
    checker = (np.indices((32, 32)).sum(0) % 2 * 2.0 - 1.0).ravel()
    ref[120:130] = _pair_rows(np.tile(checker, (10, 1)), ref[120:130, 1024:])
    q[120:130] = ref[120:130]
    q[130:135, :1024] = 0
    ref[130:135, :1024] = 0
    q[135:140] = ref[130:135]
    found = PairReference(ref).search(q, threshold)
    got = {int(t): (int(r), c) for t, r, c in found.itertuples(index=False)}
    want = _brute_twins(q, ref, threshold)
    assert got.keys() == want.keys() and len(want) >= 70
    assert all(got[t][0] == want[t][0] and abs(got[t][1] - want[t][1]) < 1e-5 for t in want)
