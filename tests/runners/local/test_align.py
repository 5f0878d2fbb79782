"""Golden/test registration of the local backend (data.align_goldens): real pairs are 2–5 px apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deft_aoi.runners.local.argv import DatasetRef
from deft_aoi.runners.local.data import (
    ALIGN_MAX_SHIFT_PX,
    DecodedCache,
    PairImages,
    PairTable,
    align_goldens,
    align_shift_px,
    best_shifts,
    load_pairs,
    shift_candidates,
)
from deft_aoi.runners.local.model import ModelConfig
from deft_aoi.runners.local.runtime import pair_images

from .helpers import subset

SIDE = 64


def _board(rng: np.random.Generator, side: int = SIDE + 16) -> np.ndarray:
    """A 'copper' layout of random rectangles, uint8 (3, side, side), larger than the crop so shifted
    crops of it are genuinely mis-registered views of one part."""
    board = np.full((side, side), 30, dtype=np.uint8)
    for _ in range(14):
        y, x = rng.integers(0, side - 8, 2)
        h, w = rng.integers(3, 14, 2)
        board[y : y + h, x : x + w] = 220
    return np.repeat(board[None], 3, axis=0)


def _crop(board: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The SIDE-px crop whose content is the board moved by (dy, dx)."""
    return board[:, 8 - dy : 8 - dy + SIDE, 8 - dx : 8 - dx + SIDE].copy()


@pytest.mark.parametrize("shift", [(0, 0), (3, -2), (-5, 4), (1, 0), (-6, -6)])
def test_finds_the_shift_that_registers_golden_onto_input(shift: tuple[int, int]) -> None:
    rng = np.random.default_rng(abs(shift[0]) * 13 + abs(shift[1]))
    board = _board(rng)
    pairs = np.stack([_crop(board, *shift), _crop(board, 0, 0)])[None]
    assert best_shifts(pairs, 6).tolist() == [list(shift)]


def test_aligned_golden_equals_input_and_the_uncovered_strip_is_the_input() -> None:
    board = _board(np.random.default_rng(1))
    test = _crop(board, 4, -3)
    pairs = np.stack([test, _crop(board, 0, 0)])[None].copy()
    shifts = align_goldens(pairs, 6)
    assert shifts.tolist() == [[4, -3]]
    # Mis-registration gone: the difference is zero everywhere, strips included.
    np.testing.assert_array_equal(pairs[0, 1], test)


def test_a_defect_survives_registration() -> None:
    board = _board(np.random.default_rng(2))
    test = _crop(board, -2, 5)
    test[:, 30:33, 20:23] = 255 - test[:, 30:33, 20:23]  # a 3x3 px pin-hole/spur
    pairs = np.stack([test, _crop(board, 0, 0)])[None].copy()
    align_goldens(pairs, 6)
    diff = np.abs(pairs[0, 0].astype(int) - pairs[0, 1]).max(axis=0)
    changed = np.argwhere(diff > 0)
    assert changed.min(axis=0).tolist() == [30, 20] and changed.max(axis=0).tolist() == [32, 22]


def test_noise_and_featureless_pairs_stay_put() -> None:
    rng = np.random.default_rng(3)
    flat = np.full((3, SIDE, SIDE), 120, dtype=np.uint8)
    noisy = np.clip(flat + rng.normal(0, 6, flat.shape), 0, 255).astype(np.uint8)
    stripes = np.zeros((3, SIDE, SIDE), dtype=np.uint8)
    stripes[:, :, ::8] = 200  # vertical traces: every vertical shift is as good as none
    pairs = np.stack([np.stack([noisy, flat]), np.stack([stripes, stripes])])
    assert best_shifts(pairs, 6).tolist() == [[0, 0], [0, 0]]


def test_search_order_and_radius_scaling() -> None:
    candidates = shift_candidates(2)
    assert candidates[0] == (0, 0) and len(candidates) == 25
    assert max(abs(dy) + abs(dx) for dy, dx in candidates[:5]) == 1
    assert align_shift_px(128, 128) == ALIGN_MAX_SHIFT_PX
    assert align_shift_px(512, 128) == 2  # 6 px at 512 is 1.5 px at 128, rounded up
    assert align_shift_px(2048, 64) == 1


def test_tiny_images_are_left_as_they_are() -> None:
    pairs = np.random.default_rng(4).integers(0, 255, (2, 2, 3, 16, 16), dtype=np.uint8)
    before = pairs.copy()
    assert align_goldens(pairs, 6).tolist() == [[0, 0], [0, 0]]
    np.testing.assert_array_equal(pairs, before)


def _real_table(deeppcb_dev: Path, tmp_path: Path, csv_name: str, n: int) -> PairTable:
    """n PASS and n defect rows of one of deeppcb-dev's CSVs."""
    csv = tmp_path / "few.csv"
    subset(deeppcb_dev / csv_name, n, n).to_csv(csv, index=False)
    ref = DatasetRef(name="infer", csv_path=csv, images_dir=deeppcb_dev / "kpi/images")
    return load_pairs(ref, ["SolderLight"], ".jpg")


def test_pair_images_register_real_pairs_the_same_preloaded_or_streaming(
    deeppcb_dev: Path, tmp_path: Path
) -> None:
    table = _real_table(deeppcb_dev, tmp_path, "kpi/testing_set.csv", 4)
    raw = PairImages(table, (128, 128), workers=1, cache=DecodedCache(1 << 30)).preloaded
    preloaded = PairImages(table, (128, 128), workers=1, align_px=6, cache=DecodedCache(1 << 30))
    streaming = PairImages(table, (128, 128), workers=1, align_px=6, cache=DecodedCache(0))
    assert raw is not None and preloaded.preloaded is not None and streaming.preloaded is None
    idx = np.arange(len(table))
    np.testing.assert_array_equal(streaming.batch(idx), preloaded.batch(idx))
    # Registration never makes a pair differ more than it did as decoded.
    before = np.abs(raw[:, 0].astype(int) - raw[:, 1]).mean(axis=(1, 2, 3))
    after = np.abs(preloaded.preloaded[:, 0].astype(int) - preloaded.preloaded[:, 1]).mean(axis=(1, 2, 3))
    assert (after <= before + 1e-9).all()


def _config(internal: int, spec: int) -> ModelConfig:
    return ModelConfig(lights=("SolderLight",), in_channels=3, input_width=internal, input_height=internal,
                       spec_width=spec, spec_height=spec)


def test_the_search_radius_is_measured_in_the_crops_own_pixels(deeppcb_dev: Path, tmp_path: Path) -> None:
    table = _real_table(deeppcb_dev, tmp_path, "train/base/training_set.csv", 1)
    # deeppcb-dev's crops are 128 px: seen at 64 px, their 6 px radius is 3 internal px, whatever the spec says.
    for spec in (64, 256):
        images = pair_images(table, _config(64, spec), workers=1)
        assert images.size == (64, 64) and images.align_px == ALIGN_MAX_SHIFT_PX and images.align_shift == 3


def test_a_spec_larger_than_the_crops_changes_nothing_the_local_model_sees(deeppcb_dev: Path,
                                                                           tmp_path: Path) -> None:
    # TAO upsamples 128 px crops to C-RADIO's 224 px; the local model sees them at their own 128 px either way.
    table = _real_table(deeppcb_dev, tmp_path, "kpi/testing_set.csv", 6)
    at_128 = pair_images(table, _config(128, 128), workers=1).batch(np.arange(len(table)))
    at_224 = pair_images(table, _config(128, 224), workers=1).batch(np.arange(len(table)))
    np.testing.assert_array_equal(at_128, at_224)


def test_pairs_of_different_resolutions_are_registered_with_their_own_radius(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(7)
    rows = []
    for name, side, shift in (("small", 64, 3), ("large", 256, 12)):  # both mis-registered by 3/64 of a side
        board = np.kron(rng.integers(0, 255, (side // 8 + 4, side // 8 + 4)), np.ones((8, 8))).astype(np.uint8)
        for kind, (dy, dx) in (("test", (0, 0)), ("golden", (shift, 0))):
            (tmp_path / name / kind).mkdir(parents=True)
            crop = board[16 + dy : 16 + dy + side, 16 + dx : 16 + dx + side]
            Image.fromarray(np.stack([crop] * 3, axis=-1)).save(tmp_path / name / kind / "c1_L.png")
        rows.append({"input_path": f"{name}/test", "golden_path": f"{name}/golden", "label": "PASS",
                     "object_name": "c1"})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    table = load_pairs(DatasetRef(name="infer", csv_path=tmp_path / "pairs.csv", images_dir=tmp_path), ["L"], ".png")
    images = PairImages(table, (128, 128), workers=1, align_px=6, cache=DecodedCache(1 << 30))
    # The 64 px crop's 6 px are 12 px at 128; the 256 px crop's 6 px are 3 px at 128: the small pair's 6 px
    # (3 own px) shift is found, the large pair's 6 px (12 own px) lies outside its radius and is clipped.
    assert images.align_shift == 12
    registered = images.batch(np.arange(2)).astype(int)
    small_residual, large_residual = (np.abs(registered[i, 0] - registered[i, 1])[:, 12:-12, 12:-12].mean()
                                      for i in (0, 1))
    assert small_residual < 1.0 < large_residual


@pytest.mark.parametrize("channels", [3, 6, 40])  # 40: wider than int16 channel sums hold at half size
def test_shift_costs_are_the_mean_absolute_difference_of_the_channel_means(channels: int) -> None:
    from deft_aoi.runners.local.shift_cost import candidate_costs

    rng = np.random.default_rng(channels)
    pairs = rng.integers(0, 256, (5, 2, channels, 40, 40), dtype=np.uint8)
    gray = pairs.astype(np.float64).mean(axis=2)
    candidates = shift_candidates(2)
    costs = candidate_costs(pairs.sum(axis=2, dtype=np.int32), candidates, 3, channels)
    for k, (dy, dx) in enumerate(candidates):
        expected = np.abs(gray[:, 0, 3:37, 3:37] - gray[:, 1, 3 - dy : 37 - dy, 3 - dx : 37 - dx]).mean(axis=(1, 2))
        np.testing.assert_allclose(costs[k], expected, rtol=1e-6)
    # A golden rolled by (2, −1) is registered back by the opposite shift, at every channel width.
    shifted = pairs.copy()
    shifted[:, 1] = np.roll(pairs[:, 0], (2, -1), axis=(-2, -1))
    assert best_shifts(shifted, 2).tolist() == [[-2, 1]] * 5


def _reference_best_shifts(pairs: np.ndarray, max_shift: int) -> np.ndarray:
    """best_shifts as it was before its cost loop was compiled (numpy, one pass per shift): the reference the
    compiled search must reproduce exactly."""
    from deft_aoi.runners.local.data import ALIGN_TOLERANCE

    def _pick(costs: np.ndarray) -> np.ndarray:
        best = costs.min(axis=0)
        picked: np.ndarray = (costs <= best * (1 + ALIGN_TOLERANCE[0]) + ALIGN_TOLERANCE[1]).argmax(axis=0)
        return picked

    def costs_of(sums: np.ndarray, candidates: list[tuple[int, int]], margin: int, scale: int) -> np.ndarray:
        n, _, height, width = sums.shape
        test = sums[:, 0, margin : height - margin, margin : width - margin]
        costs = np.empty((len(candidates), n), dtype=np.float32)
        for k, (dy, dx) in enumerate(candidates):
            golden = sums[:, 1, margin - dy : height - margin - dy, margin - dx : width - margin - dx]
            diff = np.abs(test.astype(np.int64) - golden)
            costs[k] = diff.reshape(n, -1).sum(axis=1) / (test.shape[1] * test.shape[2] * scale)
        return costs

    n, _, channels, height, width = pairs.shape
    gray = pairs.sum(axis=2, dtype=np.int32)
    radius = -(-max_shift // 2)
    half = gray[:, :, : height // 2 * 2, : width // 2 * 2]
    half = half.reshape(n, 2, height // 2, 2, width // 2, 2).sum(axis=(3, 5))
    coarse = shift_candidates(radius)
    shifts = np.asarray(coarse, dtype=np.int64)[_pick(costs_of(half, coarse, radius, 4 * channels))] * 2
    for estimate in {tuple(row) for row in shifts.tolist()}:
        members = np.flatnonzero((shifts == estimate).all(axis=1))
        around = [(estimate[0] + dy, estimate[1] + dx) for dy, dx in shift_candidates(1)]
        picked = _pick(costs_of(gray[members], around, 2 * radius + 1, channels))
        shifts[members] = np.asarray(around, dtype=np.int64)[picked]
    return np.clip(shifts, -max_shift, max_shift)


def test_the_compiled_search_finds_the_reference_shifts_on_real_pairs(deeppcb_dev: Path) -> None:
    import glob

    from deft_aoi.runners.local.data import decode_image

    tests = sorted(glob.glob(str(deeppcb_dev / "kpi" / "images" / "*" / "test" / "*.jpg")))[:240]
    assert tests
    pairs = np.stack([np.stack([decode_image(t, (128, 128)), decode_image(t.replace("/test/", "/golden/"),
                                                                           (128, 128))]) for t in tests])
    expected = _reference_best_shifts(pairs, ALIGN_MAX_SHIFT_PX)
    assert (np.abs(expected).sum(axis=1) > 0).sum() > 50  # not vacuous: many real pairs do move
    np.testing.assert_array_equal(best_shifts(pairs, ALIGN_MAX_SHIFT_PX), expected)
    # The shape encoder's layout: channels last, each side its own buffer, seen through a transposed view.
    sides = np.ascontiguousarray(pairs.transpose(1, 0, 3, 4, 2))
    np.testing.assert_array_equal(best_shifts(sides.transpose(1, 0, 4, 2, 3), ALIGN_MAX_SHIFT_PX), expected)
