"""A tiny random SigLIP in the Hugging Face cache layout, for deft's real-TAO test image (docker/tao-real).

deft's Data Services jobs name `model_path: google/siglip-base-patch16-224` (runners/tao/commands.py); NVIDIA's
`embedding image_embeddings` loads it with `SiglipModel.from_pretrained` / `SiglipProcessor.from_pretrained`
(nvidia_tao_ds/mining/embedding/scripts/image_embeddings.py, 7.3.0). The image has no network: this model,
saved under that id in $HF_HOME with HF_HUB_OFFLINE=1, answers instead. Random weights, 32-wide, one layer:
the test checks the plumbing, not the embedding quality.

Usage: python make_tiny_siglip.py HF_HOME
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel,
                          SiglipProcessor)

REPO = "google/siglip-base-patch16-224"
REVISION = "0" * 40  # the cache's snapshot name; refs/main points at it


def main(hf_home: Path) -> None:
    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = SiglipConfig(text_config={**small, "vocab_size": 64, "max_position_embeddings": 16},
                          vision_config={**small, "image_size": 32, "patch_size": 16})
    model = SiglipModel(config)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    word = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=16)
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=tokenizer)
    cache = hf_home / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = cache / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (cache / "refs").mkdir(exist_ok=True)
    (cache / "refs" / "main").write_text(REVISION)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
