"""The change-shape encoder's numpy features equal the local model's torch ones (the code they replace) to 1e-6."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deft_aoi.mining.embedders.shape import SIZE, _level, shape_features  # noqa: E402
from deft_aoi.runners.local.data import ALIGN_MAX_SHIFT_PX, align_goldens, decode_image  # noqa: E402
from deft_aoi.runners.local.model import SHAPE_FEATURES, change_shape, out_of_tolerance, to_input  # noqa: E402


def torch_features(pairs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        batch = to_input(pairs, torch.device("cpu"))
        features: np.ndarray = change_shape(out_of_tolerance(batch), batch[:, 1]).numpy()
    return features


def synthetic_pairs(seed: int, n: int, size: int = SIZE) -> np.ndarray:
    """Copper-like parts (bright rectangles on dark), the test side with blobs, thin edge lines and noise
    of every strength, so every threshold, erosion and edge zone of the features is crossed both ways."""
    rng = np.random.default_rng(seed)
    pairs = np.zeros((n, 2, 3, size, size), dtype=np.uint8)
    for k in range(n):
        golden = np.full((3, size, size), rng.integers(0, 60), dtype=np.int16)
        for _ in range(rng.integers(1, 6)):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(4, size // 2, 2)
            golden[:, y : y + h, x : x + w] = rng.integers(80, 256)
        test = golden.copy()
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, size - 4, 2)
            h, w = rng.integers(1, 12, 2)
            test[:, y : y + h, x : x + w] += rng.integers(-200, 200)
        test += rng.integers(-rng.integers(1, 40), 40, test.shape, dtype=np.int16)
        pairs[k, 0] = test.clip(0, 255)
        pairs[k, 1] = golden.clip(0, 255)
    return pairs


def test_numpy_features_equal_the_models_on_synthetic_pairs() -> None:
    pairs = synthetic_pairs(0, 48)
    align_goldens(pairs, ALIGN_MAX_SHIFT_PX)
    new, old = shape_features(pairs), torch_features(pairs)
    assert new.shape == (48, SHAPE_FEATURES) and new.dtype == np.float32
    # Not a vacuous match: the pairs span changed and unchanged maps, so most features vary across them.
    assert (old.std(axis=0) > 0.01).sum() >= SHAPE_FEATURES - 2
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-6)


def test_numpy_features_equal_the_models_on_odd_sizes_and_identical_sides() -> None:
    pairs = synthetic_pairs(1, 6, size=37)
    pairs[0, 1] = pairs[0, 0]  # no change at all: every count is 0, every window mean 0
    np.testing.assert_allclose(shape_features(pairs), torch_features(pairs), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("height", "width"), [(2, 2), (2, 3), (9, 2), (5, 7)])
def test_features_equal_the_models_on_maps_narrower_than_a_window(height: int, width: int) -> None:
    # The compiled pass clips every 3x3 window at the map's edges; here almost every pixel is an edge pixel.
    pairs = np.random.default_rng(height * 10 + width).integers(0, 256, (6, 2, 3, height, width), dtype=np.uint8)
    np.testing.assert_allclose(shape_features(pairs), torch_features(pairs), rtol=0, atol=1e-6)


def test_numpy_features_equal_the_models_on_real_crops(deeppcb_dev: Path) -> None:
    tests = sorted(glob.glob(str(deeppcb_dev / "kpi" / "images" / "*" / "test" / "*.jpg")))[:96]
    assert tests
    size = (SIZE, SIZE)
    pairs = np.stack([np.stack([decode_image(t, size), decode_image(t.replace("/test/", "/golden/"), size)])
                      for t in tests])
    align_goldens(pairs, ALIGN_MAX_SHIFT_PX)
    np.testing.assert_allclose(shape_features(pairs), torch_features(pairs), rtol=0, atol=1e-6)


def test_a_threshold_on_an_integer_grey_difference_is_refused() -> None:
    assert _level(0.5, 63.75) == 32  # 31.875 grey levels: 32 is the first difference above it
    assert _level(1.0, 3 * 63.75) == 192
    with pytest.raises(ValueError, match="integer difference"):
        _level(64 / 63.75, 63.75)
