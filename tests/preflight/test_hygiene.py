"""Pure pieces of pool hygiene: the pixel-pair vectors, pair-aware near duplicates, the exclusion filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deft_aoi.analysis.leakage import excluded_mask, pair_near_duplicates
from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.pixels import PixelPairEmbedder, side_vectors

THRESHOLD = 0.998


def _vectors(inputs: np.ndarray, goldens: np.ndarray) -> np.ndarray:
    """Pixel-pair vectors of (n, s, s) arrays, built the way the embedder builds them."""
    return np.concatenate([side_vectors(inputs), side_vectors(goldens)], axis=1) / np.float32(np.sqrt(2.0))


def _images(n: int, seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)


def test_twin_needs_input_and_golden_alike() -> None:
    x, g = _images(6, 0), _images(6, 1)
    ref = _vectors(x, g)
    other_golden = _vectors(x[:3], _images(3, 2))  # same inputs, other goldens
    other_input = _vectors(_images(3, 3), g[3:])  # same goldens (shared references), other inputs
    noisy = _vectors(np.clip(x[:3] + 0.002 * _images(3, 4), 0, 1), g[:3])
    query = np.concatenate([other_golden, other_input, noisy])
    found = pair_near_duplicates(query, ref, THRESHOLD)
    assert found["train_pos"].tolist() == [6, 7, 8]
    assert found["reference_pos"].tolist() == [0, 1, 2]
    assert (found["cosine"] >= THRESHOLD).all() and (found["cosine"] < 1.0).all()


def test_within_one_set_a_row_is_not_its_own_twin() -> None:
    x, g = _images(5, 0), _images(5, 1)
    vec = _vectors(np.concatenate([x, x[[1]]]), np.concatenate([g, g[[1]]]))
    found = pair_near_duplicates(vec, vec, THRESHOLD, exclude_self=True)
    assert sorted(zip(found["train_pos"], found["reference_pos"], strict=True)) == [(1, 5), (5, 1)]


def test_blank_sides_never_match() -> None:
    flat = np.full((2, 32, 32), 0.5, dtype=np.float32)
    assert not side_vectors(flat).any()
    vec = _vectors(flat, flat)
    assert pair_near_duplicates(vec, vec, THRESHOLD).empty


def test_a_side_blank_in_both_rows_lets_the_other_side_decide() -> None:
    x, flat = _images(2, 0), np.full((2, 32, 32), 0.5, dtype=np.float32)
    ref = _vectors(x, flat)  # textured inputs over blank goldens
    query = _vectors(np.concatenate([x[[0]], _images(1, 9)]), flat)
    found = pair_near_duplicates(query, ref, THRESHOLD)
    assert found["train_pos"].tolist() == [0] and found["reference_pos"].tolist() == [0]
    one_blank = _vectors(x[[1]], _images(1, 7))  # same input, but a textured golden where the twin has a blank
    assert pair_near_duplicates(one_blank, ref, THRESHOLD).empty


def test_twin_is_found_in_a_large_reference_through_candidates() -> None:
    ref = _vectors(_images(3000, 5), _images(3000, 6))
    query = ref[[17, 2999]] * 1.0
    found = pair_near_duplicates(query, ref, THRESHOLD, block=1)
    assert found["reference_pos"].tolist() == [17, 2999]


def test_widths_must_be_two_even_square_images() -> None:
    with pytest.raises(InputError, match="not two square images"):
        pair_near_duplicates(np.ones((1, 18), np.float32), np.ones((1, 18), np.float32), THRESHOLD)


def _crop(path: Path) -> Image.Image:
    rng = np.random.default_rng(abs(hash(path.name)) % 1000)
    base = (rng.random((16, 16)) > 0.5).astype(np.uint8) * 200 + 20
    return Image.fromarray(np.kron(base, np.ones((8, 8), dtype=np.uint8)))


def test_jpeg_reencode_stays_above_the_threshold_and_other_crops_below(tmp_path: Path) -> None:
    files = {}
    for name in ("a_in", "a_gold", "b_in", "b_gold"):
        files[name] = tmp_path / f"{name}.jpg"
        _crop(files[name]).save(files[name], quality=95)
    for name in ("a_in", "a_gold"):
        with Image.open(files[name]) as img:
            img.save(tmp_path / f"{name}_q30.jpg", quality=30)
    emb = PixelPairEmbedder()
    vec = emb.embed([str(files["a_in"]), str(tmp_path / "a_in_q30.jpg"), str(files["b_in"])],
                    [str(files["a_gold"]), str(tmp_path / "a_gold_q30.jpg"), str(files["b_gold"])])
    assert vec.shape == (3, emb.fingerprint.dim) and np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    found = pair_near_duplicates(vec[1:], vec[:1], THRESHOLD)
    assert found["train_pos"].tolist() == [0]
    assert emb.fingerprint.name == "pixel-pair"


def test_exclusion_filter_matches_pool_rows_and_synthetic_stems() -> None:
    pool = pd.DataFrame({
        "input_path": ["augmentation/mining_pool/a/test", "augmentation/mining_pool/a/test", "results/r/synth_ng"],
        "golden_path": ["augmentation/mining_pool/a/golden", "augmentation/mining_pool/a/golden", "results/r/ok"],
        "object_name": ["d00", "d01", "sdg_00001"],
        "source": ["mining_pool", "mining_pool", "synthetic"],
    })
    exclusions = pd.DataFrame({
        "source": ["mining_pool", "synthetic"],
        "input_path": ["augmentation/mining_pool/a/test/", "augmentation/anomalygen/reconstructed_image"],
        "golden_path": ["augmentation/mining_pool/a/golden", "augmentation/anomalygen/original_image"],
        "object_name": ["d01", "sdg_00001"],
    })
    assert excluded_mask(pool, exclusions).tolist() == [False, True, True]
    assert excluded_mask(pool, exclusions.iloc[0:0]).tolist() == [False, False, False]
