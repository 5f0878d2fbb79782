"""SigLIP image embeddings (`google/siglip-base-patch16-224`), the encoder TAO Data Services uses.

Optional extra (`pip install deft-aoi[siglip]`). Weights come from the local Hugging Face cache; when
absent they are downloaded only if `HF_TOKEN` is set and `HF_HUB_OFFLINE` is not. Every load is
`local_files_only` first, so a machine without network fails fast with a clear message instead of
hanging on retries. A pair is embedded as [input embedding, input − golden embedding], L2-normalised,
so SigLIP vectors also say what changed, like the built-in encoder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.errors import InputError, UsageError
from deft_aoi.mining.embedders.base import Fingerprint

if TYPE_CHECKING:
    import numpy as np

MODEL_ID = "google/siglip-base-patch16-224"
NAME = "siglip-pair"
VERSION = "1"
_BATCH = 64


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise UsageError(
            "the siglip encoder needs the optional 'transformers' package",
            hint="pip install 'deft-aoi[siglip]', or use --encoder builtin",
        ) from exc
    return transformers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _load(model_id: str) -> tuple[Any, Any, Path]:
    """(model, processor, snapshot dir): local cache first; download only with a token and not offline."""
    transformers = _import_transformers()
    from deft_aoi.secrets import credential

    try:
        model = transformers.AutoModel.from_pretrained(model_id, local_files_only=True)
        processor = transformers.AutoProcessor.from_pretrained(model_id, local_files_only=True)
    except OSError as local_exc:
        token = credential("HF_TOKEN")
        if _offline() or not token:
            reason = "HF_HUB_OFFLINE is set" if _offline() else "HF_TOKEN is not set"
            raise InputError(
                f"SigLIP weights '{model_id}' are not in the local Hugging Face cache and {reason}",
                hint="download once on a machine with network (HF_TOKEN in .env), or use --encoder builtin",
            ) from local_exc
        try:
            model = transformers.AutoModel.from_pretrained(model_id, token=token)
            processor = transformers.AutoProcessor.from_pretrained(model_id, token=token)
        except OSError as exc:
            raise InputError(
                f"cannot download SigLIP weights '{model_id}': {type(exc).__name__}",
                hint="check network access and HF_TOKEN, or use --encoder builtin",
            ) from exc
    snapshot = Path(getattr(model, "name_or_path", model_id))
    return model.eval(), processor, snapshot


def _weights_hash(snapshot: Path, model_id: str) -> str:
    """Hash of the weight files when the snapshot is a local dir, else of the model id and its commit."""
    h = hashlib.sha256(model_id.encode("utf-8"))
    if snapshot.is_dir():
        for f in sorted(snapshot.glob("*.safetensors")) + sorted(snapshot.glob("*.bin")):
            stat = f.stat()
            # Hub snapshots are content-addressed; name+size of the resolved blob identifies the weights.
            h.update(f"{f.name}:{stat.st_size}:{f.resolve().name}".encode())
    return h.hexdigest()[:16]


class SiglipEmbedder:
    def __init__(self, model_id: str = MODEL_ID, *, device: str | None = None) -> None:
        self.model_id = model_id
        self._device = device

    @cached_property
    def _loaded(self) -> tuple[Any, Any, Path]:
        model, processor, snapshot = _load(self.model_id)
        return model.to(self.device), processor, snapshot

    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    @cached_property
    def fingerprint(self) -> Fingerprint:
        model, _, snapshot = self._loaded
        dim = int(model.config.vision_config.hidden_size) * 2
        return Fingerprint(
            name=NAME,
            version=VERSION,
            weights_hash=_weights_hash(snapshot, self.model_id),
            preprocessing=f"{self.model_id} processor,rgb,[input,input-golden]",
            dim=dim,
        )

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        import numpy as np
        import torch
        from PIL import Image

        model, processor, _ = self._loaded
        out = []
        for k in range(0, len(inputs), _BATCH):
            batch_in = list(inputs[k : k + _BATCH])
            batch_gd = [g or i for i, g in zip(batch_in, goldens[k : k + _BATCH], strict=True)]
            images = [Image.open(p).convert("RGB") for p in batch_in + batch_gd]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.no_grad():
                feats = model.get_image_features(pixel_values=pixels).float()
            feats = torch.nn.functional.normalize(feats, dim=1)
            n = len(batch_in)
            pair = torch.cat([feats[:n], feats[:n] - feats[n:]], dim=1)
            out.append(torch.nn.functional.normalize(pair, dim=1).cpu().numpy().astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.fingerprint.dim), dtype=np.float32)
