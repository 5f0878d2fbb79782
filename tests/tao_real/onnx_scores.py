"""Run INSIDE the real-TAO image (tests/tao_real/test_export.py): score the rows of a `visual_changenet inference`
job with the ONNX file `visual_changenet export` wrote, through onnxruntime, and print one JSON list of scores.

The rows are batched by NVIDIA's own data module (OIDataModule over the inference job's spec.yaml, built as
scripts/inference.py builds it), so the
tensors are exactly those TAO's PyTorch inference scored; the score is TAO's (cn_pl_model.py `_forward_pass`:
softmax over the learnable difference module's two logits, class 1). Rows go one at a time: an ONNX exported
with a fixed batch of 1 and a dynamic one both take that.

usage: python3 onnx_scores.py <inference spec.yaml> <model.onnx>
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from nvidia_tao_pytorch.config.visual_changenet.default_config import ExperimentConfig
from nvidia_tao_pytorch.cv.optical_inspection.dataloader.pl_oi_data_module import OIDataModule
from omegaconf import OmegaConf


def main(spec_path: str, onnx_path: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(spec_path))
    data = OIDataModule(cfg, changenet=True)  # as scripts/inference.py builds it
    data.setup("predict")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    scores: list[float] = []
    for test, golden, _label in data.predict_dataloader():
        for row in range(test.shape[0]):
            (logits,) = session.run(None, {names[0]: test[row:row + 1].numpy(), names[1]: golden[row:row + 1].numpy()})
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores.append(float((e / e.sum(axis=1, keepdims=True))[0, 1]))
    print(json.dumps({"inputs": names, "scores": scores}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
