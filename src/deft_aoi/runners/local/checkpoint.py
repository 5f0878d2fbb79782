"""Local-backend checkpoints: `{"model_config": ..., "state_dict": ..., "epoch", "step"}` in a .pth,
named by tao/outputs.checkpoint_name so the stages find them exactly as they find TAO's."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from deft_aoi.errors import InputError
from deft_aoi.io_utils import atomic_write_bytes
from deft_aoi.runners.local.model import ARCH, ModelConfig, SiameseChangeNet, build_model


def save_checkpoint(path: Path, model: SiameseChangeNet, *, epoch: int, step: int) -> None:
    payload = {
        "model_config": model.config.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "step": step,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, state_dict); an unreadable or foreign file (e.g. a TAO .pth) is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", file=path)
    try:
        # weights_only: a checkpoint is data, never code to unpickle.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise InputError(f"cannot read checkpoint: {exc}", file=path) from exc
    if not isinstance(payload, dict) or "model_config" not in payload or "state_dict" not in payload:
        raise InputError(
            "not a local-backend checkpoint (no model_config/state_dict)",
            file=path,
            hint="checkpoints from the docker (TAO) backend cannot be used with --backend local",
        )
    try:
        config = ModelConfig.model_validate(payload["model_config"])
    except ValidationError as exc:
        raise InputError(f"checkpoint has a malformed model_config: {exc}", file=path) from exc
    if config.arch != ARCH:
        raise InputError(f"checkpoint architecture {config.arch!r} is not {ARCH!r}", file=path)
    return config, payload["state_dict"]


def check_compatible(found: ModelConfig, wanted: ModelConfig, *, file: Path) -> None:
    """Refuse a checkpoint trained for other lights or another input size."""
    problems = []
    if tuple(found.lights) != tuple(wanted.lights):
        problems.append(f"lights {list(found.lights)} vs spec {list(wanted.lights)}")
    if (found.spec_width, found.spec_height) != (wanted.spec_width, wanted.spec_height):
        # As in TAO, a checkpoint belongs to the image size it was trained for, whatever the crops are.
        problems.append(f"trained for image_width/height {found.spec_width}x{found.spec_height} vs spec's "
                        f"{wanted.spec_width}x{wanted.spec_height}")
    elif (found.input_width, found.input_height) != (wanted.input_width, wanted.input_height):
        problems.append(
            f"input {found.input_width}x{found.input_height} px vs spec's "
            f"{wanted.input_width}x{wanted.input_height} px (from image_width/height "
            f"{wanted.spec_width}x{wanted.spec_height})"
        )
    if found.in_channels != wanted.in_channels or found.width != wanted.width:
        problems.append(f"channels {found.in_channels}/{found.width} vs {wanted.in_channels}/{wanted.width}")
    if problems:
        raise InputError(
            "checkpoint does not match the spec: " + "; ".join(problems),
            file=file,
            hint="use a checkpoint trained with the same input_map and image size",
        )


def load_model(path: Path, wanted: ModelConfig) -> SiameseChangeNet:
    config, state = load_checkpoint(path)
    check_compatible(config, wanted, file=path)
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"checkpoint weights do not fit the model: {exc}", file=path) from exc
    return model
