from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deft_aoi.errors import InputError
from deft_aoi.runners.local.checkpoint import load_checkpoint, save_checkpoint
from deft_aoi.runners.local.model import (
    ARCH,
    RESIDUAL_BOUND,
    ModelConfig,
    build_model,
    to_input,
    tolerant_difference,
)

SIDE = 32


def _config(**overrides: object) -> ModelConfig:
    values: dict[str, object] = {"lights": ("SolderLight",), "in_channels": 3, "input_width": SIDE,
                                 "input_height": SIDE, "spec_width": SIDE, "spec_height": SIDE, "width": 8}
    values.update(overrides)
    return ModelConfig(**values)  # type: ignore[arg-type]


def _boards(rng: np.random.Generator, n: int) -> np.ndarray:
    """Binary 'copper' layouts: a few random rectangles per image, uint8 (n, 3, SIDE, SIDE)."""
    out = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    for board in out:
        for _ in range(4):
            y, x = rng.integers(0, SIDE - 6, 2)
            h, w = rng.integers(3, 10, 2)
            board[y : y + h, x : x + w] = 255
    return np.repeat(out[:, None], 3, axis=1)


def _pairs_with_small_defects(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Golden == input, except that half the inputs carry a 2x2 px flipped blob (a pin-hole/spur)."""
    golden = _boards(rng, n)
    test = golden.copy()
    targets = (np.arange(n) % 2).astype(np.int64)
    for i in np.flatnonzero(targets):
        y, x = rng.integers(2, SIDE - 4, 2)
        test[i, :, y : y + 2, x : x + 2] = 255 - test[i, :, y : y + 2, x : x + 2]
    return np.stack([test, golden], axis=1), targets


def test_identical_pairs_score_the_same_whatever_the_part() -> None:
    # The decision rests on |f_in - f_gold| only: two different parts, each compared with itself, are
    # indistinguishable. A model that also looked at raw features would score them differently.
    torch.manual_seed(0)
    model = build_model(_config()).eval()
    boards = _boards(np.random.default_rng(1), 2)
    pairs = np.stack([boards, boards], axis=1)
    with torch.inference_mode():
        logits = model(to_input(pairs, torch.device("cpu")))
    torch.testing.assert_close(logits[0], logits[1])


@pytest.mark.slow  # real training: `make test-slow`
def test_learns_a_two_pixel_change_it_has_not_seen_before() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train_x, train_y = _pairs_with_small_defects(rng, 128)
    test_x, test_y = _pairs_with_small_defects(rng, 64)
    model = build_model(_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    device = torch.device("cpu")
    for _ in range(6):
        model.train()
        for start in range(0, len(train_y), 16):
            x = to_input(train_x[start : start + 16], device)
            loss = nn.functional.cross_entropy(model(x), torch.from_numpy(train_y[start : start + 16]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.inference_mode():
        scores = torch.softmax(model(to_input(test_x, device)), dim=1)[:, 1].numpy()
    # Ranking quality on unseen boards and unseen defect positions (AUC from the Mann-Whitney count).
    pos, neg = scores[test_y == 1], scores[test_y == 0]
    auc = float((pos[:, None] > neg[None, :]).mean())
    assert auc > 0.9, auc


def test_checkpoint_round_trip_and_foreign_arch_is_refused(tmp_path: Path) -> None:
    model = build_model(_config())
    path = tmp_path / "model_epoch_000_step_1.pth"
    save_checkpoint(path, model, epoch=0, step=1)
    config, state = load_checkpoint(path)
    assert config.arch == ARCH and config == model.config
    assert state.keys() == model.state_dict().keys()

    old = {"model_config": {**model.config.model_dump(mode="json"), "arch": "deft_local_siamese_cnn_v1"},
           "state_dict": {}, "epoch": 0, "step": 1}
    buffer = io.BytesIO()
    torch.save(old, buffer)
    old_path = tmp_path / "old.pth"
    old_path.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="deft_local_siamese_cnn_v1") as info:
        load_checkpoint(old_path)
    assert str(old_path) in str(info.value)


def _as_pairs(test: np.ndarray, golden: np.ndarray) -> torch.Tensor:
    return to_input(np.stack([test, golden])[None], torch.device("cpu"))


def test_comparator_ignores_a_one_pixel_offset_but_not_a_small_defect() -> None:
    board = _boards(np.random.default_rng(5), 1)[0]
    offset = np.roll(board, 1, axis=2)  # residual ±1 px after integer registration
    pinhole = board.copy()
    pinhole[:, 10:13, 10:13] = 255 - pinhole[:, 10:13, 10:13]
    assert float(tolerant_difference(_as_pairs(offset, board))) == 0.0
    assert float(tolerant_difference(_as_pairs(board, board))) == 0.0
    # A 3x3 flip is a near full-contrast change (4 normalised units = 255 grey levels).
    assert float(tolerant_difference(_as_pairs(pinhole, board))) > 2.0
    missing = board.copy()
    missing[:] = 0  # copper gone: caught the other way round (golden outside the input's range)
    assert float(tolerant_difference(_as_pairs(missing, board))) > 2.0


def test_a_fresh_model_ranks_an_unseen_change_above_a_mis_registered_pass() -> None:
    # Untrained, the learned correction is zero: the comparator alone ranks, and a 1 px offset scores
    # below a 2x2 px defect whatever the weights' random init.
    torch.manual_seed(0)
    model = build_model(_config()).eval()
    board = _boards(np.random.default_rng(6), 1)[0]
    defect = board.copy()
    defect[:, 20:22, 20:22] = 255 - defect[:, 20:22, 20:22]
    pairs = np.stack([np.stack([np.roll(board, 1, axis=1), board]), np.stack([defect, board])])
    with torch.inference_mode():
        scores = torch.softmax(model(to_input(pairs, torch.device("cpu"))), dim=1)[:, 1]
    assert float(scores[1]) > float(scores[0])


def test_learned_correction_is_bounded() -> None:
    torch.manual_seed(0)
    model = build_model(_config()).eval()
    rng = np.random.default_rng(7)
    pairs = to_input(np.stack([_boards(rng, 4), _boards(rng, 4)], axis=1), torch.device("cpu"))
    with torch.no_grad():
        nn.init.normal_(model.classifier.weight, std=50.0)
        logits = model(pairs)
        prior = model.prior[0] * model.log_change(pairs) + model.prior[1]
    assert (logits[:, 0] == 0).all()
    assert ((logits[:, 1] - prior).abs() <= RESIDUAL_BOUND + 1e-4).all()
    assert (logits[:, 1] - prior).abs().max() > 1.0  # the correction does act
