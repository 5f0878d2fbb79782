"""The local model's shape head: fixed morphology descriptors of the change, fitted exactly on the training
set (train.fit_comparator), and the change-shape mining encoder that sees pairs the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deft_aoi.runners.local.checkpoint import save_checkpoint
from deft_aoi.runners.local.model import (
    SHAPE_FEATURES,
    SHAPE_RADII,
    SHAPE_WINDOWS,
    ModelConfig,
    build_model,
    change_shape,
    to_input,
)
from deft_aoi.runners.local.train import fit_comparator, start_model

SIDE = 48


def _config() -> ModelConfig:
    return ModelConfig(lights=("SolderLight",), in_channels=3, input_width=SIDE, input_height=SIDE,
                       spec_width=SIDE, spec_height=SIDE, width=8)


def _board(rng: np.random.Generator) -> np.ndarray:
    board = np.zeros((SIDE, SIDE), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(4, SIDE - 16, 2)
        board[y : y + int(rng.integers(6, 12)), x : x + int(rng.integers(6, 12))] = 255
    return board


def _flip(image: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
    out = image.copy()
    out[ys, xs] = 255 - out[ys, xs]
    return out


def _nuisance_and_defects(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """PASS: a long 2 px wide flipped line (an edge that moved: etch width, a slight rotation); defect:
    a small 2x2 flipped blob. The comparator's smoothed peak ranks the line ABOVE the blob (2 px wide
    beats 2x2 under a 3x3 mean), so only the shape separates them."""
    pairs, targets = [], []
    for i in range(n):
        golden = _board(rng)
        y, x = (int(v) for v in rng.integers(4, SIDE - 8, 2))
        if i % 2:
            test = _flip(golden, slice(y, y + 2), slice(x, x + 2))
        else:
            length = int(rng.integers(20, 36))
            x0 = min(x, SIDE - length - 1)
            test = _flip(golden, slice(y, y + 2), slice(x0, x0 + length))
        pairs.append(np.stack([np.repeat(test[None], 3, 0), np.repeat(golden[None], 3, 0)]))
        targets.append(i % 2)
    return np.stack(pairs), np.asarray(targets, dtype=np.int64)


class _Images:
    """PairImages' one method fit_comparator uses."""

    def __init__(self, pairs: np.ndarray) -> None:
        self.pairs = pairs

    def batch(self, indices: np.ndarray) -> np.ndarray:
        return self.pairs[indices]


def _auc(model: torch.nn.Module, pairs: np.ndarray, targets: np.ndarray) -> float:
    with torch.inference_mode():
        scores = model(to_input(pairs, torch.device("cpu")))[:, 1].numpy()
    pos, neg = scores[targets == 1], scores[targets == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def test_change_shape_tells_a_thin_line_from_a_solid_blob() -> None:
    changed = torch.zeros(2, 1, SIDE, SIDE)
    changed[0, 0, 20, 5:45] = 4.0  # a 1 px line, 40 px long
    changed[1, 0, 20:25, 20:25] = 4.0  # a 5x5 blob
    features = change_shape(changed, torch.zeros(2, 3, SIDE, SIDE))
    assert features.shape == (2, SHAPE_FEATURES)
    first = len(SHAPE_WINDOWS)  # per threshold: area, then (eroded, opened) per radius
    area, eroded_1 = features[:, first], features[:, first + 1]
    assert area[0] > area[1]  # the line changes more pixels...
    assert eroded_1[0] == 0.0 < eroded_1[1]  # ...but no 3x3 block of it is solid
    eroded_2 = features[:, first + 1 + 2 * (len(SHAPE_RADII) - 1)]
    assert eroded_2[1] > 0.0  # a 5x5 block fits the blob


def test_fit_comparator_learns_the_shape_the_comparator_cannot_see() -> None:
    rng = np.random.default_rng(0)
    train_x, train_y = _nuisance_and_defects(rng, 64)
    test_x, test_y = _nuisance_and_defects(rng, 40)
    torch.manual_seed(0)
    model = build_model(_config()).eval()
    assert _auc(model, test_x, test_y) < 0.2  # comparator alone: the lines outrank the blobs
    line = fit_comparator(model, _Images(train_x), train_y, (1.0, 10.0))  # type: ignore[arg-type]
    assert "comparator fit on 64 rows" in line
    assert _auc(model.eval(), test_x, test_y) > 0.95


def test_fit_comparator_without_both_classes_leaves_the_model_as_is() -> None:
    rng = np.random.default_rng(1)
    pairs, _ = _nuisance_and_defects(rng, 8)
    model = build_model(_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    line = fit_comparator(model, _Images(pairs), np.zeros(8, dtype=np.int64), (1.0, 10.0))  # type: ignore[arg-type]
    assert "skipped" in line
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_fine_tune_keeps_its_checkpoints_comparator_and_a_fresh_model_fits_one(tmp_path: Path) -> None:
    # The rows a fine-tune sees (here: only the 2 px lines the base fit learnt to pass, all labelled
    # defect) would refit the head to the opposite ranking; the fine-tune must keep the checkpoint's head.
    rng = np.random.default_rng(2)
    train_x, train_y = _nuisance_and_defects(rng, 64)
    torch.manual_seed(0)
    fresh, line = start_model(None, _config(), _Images(train_x), train_y, (1.0, 10.0))  # type: ignore[arg-type]
    assert "comparator fit on 64 rows" in line
    checkpoint = tmp_path / "base.pth"
    save_checkpoint(checkpoint, fresh, epoch=0, step=1)
    flipped_y = 1 - train_y
    tuned, line = start_model(checkpoint, _config(), _Images(train_x), flipped_y, (1.0, 10.0))  # type: ignore[arg-type]
    assert f"fine-tuning from {checkpoint}" in line and "kept" in line
    assert torch.equal(tuned.prior, fresh.prior)
    assert torch.equal(tuned.shape_head.weight, fresh.shape_head.weight)
    assert float(fresh.shape_head.weight.detach().norm()) > 0  # the fresh fit did move the head


def _save_pair(root: Path, name: str, test: np.ndarray, golden: np.ndarray) -> tuple[str, str]:
    paths = []
    for side, image in (("test", test), ("golden", golden)):
        path = root / f"{name}_{side}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths[0], paths[1]


def test_shape_encoder_puts_alike_changes_together(tmp_path: Path) -> None:
    from deft_aoi.mining.embedders import get_embedder

    rng = np.random.default_rng(2)
    big = 128
    golden = np.zeros((big, big), dtype=np.uint8)
    golden[40:90, 30:100] = 255
    line_a = _flip(golden, slice(40, 42), slice(30, 100))  # an edge moved along its whole length
    line_b = _flip(golden, slice(88, 90), slice(35, 95))
    blob = _flip(golden, slice(60, 66), slice(60, 66))
    pairs = [_save_pair(tmp_path, n, t, golden) for n, t in (("a", line_a), ("b", line_b), ("blob", blob))]
    noisy = (golden.astype(np.int16) + rng.integers(-3, 4, golden.shape)).clip(0, 255).astype(np.uint8)
    pairs.append(_save_pair(tmp_path, "clean", noisy, golden))
    embedder = get_embedder("shape")
    vectors = embedder.embed([p[0] for p in pairs], [*[p[1] for p in pairs][:3], None])
    assert vectors.shape == (4, embedder.fingerprint.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > 0.9  # line ~ line, not line ~ blob
    # No golden: the input is compared with itself, i.e. "no change", like every unchanged pair.
    assert sims[3, 3] == np.float32(sims[3, 3]) and sims[3, 0] < sims[0, 1]
