from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deft_aoi.errors import InputError
from deft_aoi.runners.local.argv import DatasetRef
from deft_aoi.runners.local.data import (
    DecodedCache,
    PairImages,
    decode_image,
    internal_size,
    labels_to_targets,
    load_pairs,
)
from deft_aoi.runners.local.infer import defect_probability, evaluation_metrics
from deft_aoi.runners.local.model import ModelConfig, build_model, to_input
from deft_aoi.runners.local.train import flip_pairs

from .helpers import subset


@pytest.fixture()
def pairs_ref(deeppcb_dev: Path, tmp_path: Path) -> DatasetRef:
    csv = tmp_path / "few.csv"
    subset(deeppcb_dev / "train/base/training_set.csv", 3, 3).to_csv(csv, index=False)
    return DatasetRef(name="train", csv_path=csv, images_dir=deeppcb_dev / "kpi/images")


def test_internal_size_downscales_only_large_inputs() -> None:
    # The crop's own resolution up to 128 px (deeppcb-dev's 128 px crops are no longer halved).
    assert internal_size(128, 128) == (128, 128)
    assert internal_size(256, 128) == (128, 64)
    assert internal_size(48, 40) == (48, 40)


def test_labels_pass_is_zero_everything_else_one() -> None:
    targets = labels_to_targets(pd.Series(["PASS", "open", "short", "PASS", "missing"]))
    assert targets.tolist() == [0, 1, 1, 0, 1]


def test_load_pairs_resolves_input_and_golden_per_light(pairs_ref: DatasetRef) -> None:
    table = load_pairs(pairs_ref, ["SolderLight"], ".jpg")
    assert table.paths.shape == (6, 2, 1)
    row = table.rows.iloc[0]
    assert table.paths[0, 0, 0] == f"{pairs_ref.images_dir}/{row['input_path']}/{row['object_name']}_SolderLight.jpg"
    assert table.paths[0, 1, 0] == f"{pairs_ref.images_dir}/{row['golden_path']}/{row['object_name']}_SolderLight.jpg"
    assert table.targets.sum() == 3


def test_missing_light_names_file_row_and_path(pairs_ref: DatasetRef) -> None:
    with pytest.raises(InputError) as info:
        load_pairs(pairs_ref, ["SolderLight", "TopLight"], ".jpg")
    assert info.value.row == 2
    assert "_TopLight.jpg" in info.value.message
    assert str(pairs_ref.csv_path) in str(info.value)


def test_cache_decodes_each_image_once(pairs_ref: DatasetRef) -> None:
    table = load_pairs(pairs_ref, ["SolderLight"], ".jpg")
    cache = DecodedCache(budget_bytes=1 << 30)
    first = PairImages(table, (32, 32), workers=2, cache=cache)
    assert first.preloaded is not None and first.preloaded.shape == (6, 2, 3, 32, 32)
    misses = cache.misses
    second = PairImages(table, (32, 32), workers=2, cache=cache)
    assert cache.misses == misses and cache.hits >= misses
    np.testing.assert_array_equal(first.preloaded, second.preloaded)


def test_streaming_mode_matches_preloaded(pairs_ref: DatasetRef) -> None:
    table = load_pairs(pairs_ref, ["SolderLight"], ".jpg")
    preloaded = PairImages(table, (32, 32), workers=2, cache=DecodedCache(1 << 30))
    streaming = PairImages(table, (32, 32), workers=1, cache=DecodedCache(budget_bytes=0))
    assert streaming.preloaded is None
    idx = np.array([4, 1])
    np.testing.assert_array_equal(streaming.batch(idx), preloaded.batch(idx))


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x_SolderLight.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot decode") as info:
        decode_image(str(bad), (32, 32))
    assert info.value.file == str(bad)


def test_flip_moves_input_and_golden_together() -> None:
    generator = torch.Generator().manual_seed(0)
    batch = torch.arange(64 * 2 * 3 * 4 * 4, dtype=torch.float32).reshape(64, 2, 3, 4, 4)
    batch[:, 1] = batch[:, 0]  # golden == input: any independent flip would break the equality
    flipped = flip_pairs(batch, generator)
    assert torch.equal(flipped[:, 0], flipped[:, 1])
    assert not torch.equal(flipped, batch)


def test_model_outputs_two_logits_per_pair() -> None:
    config = ModelConfig(lights=("A", "B"), in_channels=6, input_width=48, input_height=32,
                         spec_width=48, spec_height=32)
    model = build_model(config).eval()
    pairs = np.random.default_rng(0).integers(0, 255, (5, 2, 6, 32, 48), dtype=np.uint8)
    with torch.inference_mode():
        logits = model(to_input(pairs, torch.device("cpu")))
    assert logits.shape == (5, 2)


def test_defect_probability_is_a_stable_softmax() -> None:
    logits = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [np.log(3.0), 0.0]])
    np.testing.assert_allclose(defect_probability(logits), [0.5, 0.0, 1.0, 0.25], atol=1e-12)


def test_evaluation_metrics_confusion_and_weighted_loss() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
    targets = np.array([0, 1, 0, 1, 1])
    metrics = evaluation_metrics(logits, targets, (1.0, 2.0))
    # A score of exactly 0.5 is not > 0.5: the last defect is missed.
    assert metrics["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 2}
    assert metrics["accuracy"] == pytest.approx(2 / 5)
    nll = -np.log(defect_probability(logits))
    nll_pass = -np.log(1 - defect_probability(logits))
    per_row = np.where(targets == 1, nll, nll_pass)
    weights = np.where(targets == 1, 2.0, 1.0)
    assert metrics["loss"] == pytest.approx(float((per_row * weights).sum() / weights.sum()))


def test_fine_tune_runs_at_a_third_of_the_effective_lr() -> None:
    from deft_aoi.runners.local.train import MIN_LOCAL_LR, effective_lr

    assert effective_lr(1e-5, fine_tune=False) == MIN_LOCAL_LR
    assert effective_lr(1e-5, fine_tune=True) == pytest.approx(MIN_LOCAL_LR / 3)
    assert effective_lr(3e-3, fine_tune=True) == pytest.approx(1e-3)
    assert effective_lr(3e-3, fine_tune=False) == pytest.approx(3e-3)
