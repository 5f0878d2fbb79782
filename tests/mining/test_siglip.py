from __future__ import annotations

import sys
import types

import pytest

from deft_aoi.errors import InputError, UsageError
from deft_aoi.mining.embedders import get_embedder
from deft_aoi.mining.embedders.siglip import SiglipEmbedder


def _fake_transformers(calls: list[dict]) -> types.ModuleType:
    """A stand-in whose from_pretrained behaves like the hub with no cached weights and no network."""

    class _Auto:
        @staticmethod
        def from_pretrained(model_id: str, **kwargs: object) -> object:
            calls.append({"model_id": model_id, **kwargs})
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")

    mod = types.ModuleType("transformers")
    mod.AutoModel = _Auto  # type: ignore[attr-defined]
    mod.AutoProcessor = _Auto  # type: ignore[attr-defined]
    return mod


def test_missing_transformers_is_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(UsageError, match="transformers"):
        _ = SiglipEmbedder().fingerprint


def test_offline_without_cached_weights_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "transformers", _fake_transformers(calls))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    with pytest.raises(InputError) as info:
        _ = get_embedder("siglip").fingerprint
    text = info.value.render()
    assert "not in the local Hugging Face cache" in text and "HF_HUB_OFFLINE" in text
    assert "hf_secret_value_123" not in text
    assert calls and all(c.get("local_files_only") for c in calls)  # never tried the network


def test_no_token_no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "transformers", _fake_transformers(calls))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(InputError, match="HF_TOKEN is not set"):
        _ = SiglipEmbedder().fingerprint
    assert all(c.get("local_files_only") for c in calls)


def test_download_failure_with_token_is_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "transformers", _fake_transformers(calls))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_456")
    with pytest.raises(InputError, match="cannot download") as info:
        _ = SiglipEmbedder().fingerprint
    assert "hf_secret_value_456" not in info.value.render()
    assert any(not c.get("local_files_only") for c in calls)


def test_unknown_encoder_name() -> None:
    with pytest.raises(UsageError, match="unknown encoder"):
        get_embedder("clip")
