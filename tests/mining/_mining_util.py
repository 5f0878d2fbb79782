"""Shared helpers for the mining tests: tiny synthetic image pairs and a counting embedder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deft_aoi.mining.embedders.base import Fingerprint


def trace_image(seed: int, size: int = 64) -> np.ndarray:
    """A PCB-like binary crop: dark traces on a light background."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 235, dtype=np.uint8)
    for _ in range(3):
        y = int(rng.integers(8, size - 8))
        img[y : y + 5, :] = 20
        x = int(rng.integers(8, size - 8))
        img[:, x : x + 5] = 20
    return img


def save(img: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return str(path)


def make_pairs(root: Path, n: int, start: int = 0) -> tuple[list[str], list[str]]:
    """n distinct (input, golden) PNG pairs; every third one carries a blob defect."""
    inputs, goldens = [], []
    for i in range(start, start + n):
        golden = trace_image(i)
        test = golden.copy()
        if i % 3 == 0:
            test[20:26, 30:36] = 20
        goldens.append(save(golden, root / f"{i:05d}" / "golden.png"))
        inputs.append(save(test, root / f"{i:05d}" / "test.png"))
    return inputs, goldens


class CountingEmbedder:
    """Deterministic embedder over file bytes that records how many pairs it embedded."""

    def __init__(self, dim: int = 8, fail_after_calls: int | None = None, name: str = "counting") -> None:
        self.dim = dim
        self.calls = 0
        self.embedded = 0
        self.fail_after_calls = fail_after_calls
        self._fp = Fingerprint(name=name, version="1", weights_hash="x", preprocessing="bytes", dim=dim)

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fp

    @property
    def device(self) -> str:
        return "cpu"

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.embedded += len(inputs)
        rows = []
        for i, g in zip(inputs, goldens, strict=True):
            data = Path(i).read_bytes() + (Path(g).read_bytes() if g else b"")
            rng = np.random.default_rng(int.from_bytes(__import__("hashlib").sha256(data).digest()[:8], "little"))
            v = rng.normal(size=self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


# Mining_Report.md's counts, as its Mining Run section writes them (mining/report.py).
CHAIN = re.compile(r"raw neighbours (\d+) → after cut-off (\d+) → after history (\d+) \+ back-filled (\d+) → "
                   r"after de-dup (\d+) \((\d+) duplicates removed\)")
SELECTION = re.compile(r"selection \((\w+)\): (\d+) of the (\d+) rows above \((\d+) PASS : (\d+) defect, "
                       r"(\d+) synthetic\)")
MINED = re.compile(r"^- mined: (\d+) row", re.M)
VERDICT = re.compile(r"\*\*(PASS|WARN|FAIL)\*\* — (\d+) row")


def check_report_adds_up(text: str) -> dict[str, int]:
    """Parse the counts of a Mining_Report.md and check that each follows from the ones before it."""
    chain = CHAIN.search(text)
    assert chain, text
    raw, cutoff, history, backfilled, dedup, dups = map(int, chain.groups())
    assert cutoff <= raw and history <= cutoff
    assert history + backfilled - dups == dedup
    mined_match = MINED.search(text)
    assert mined_match, text
    mined = int(mined_match[1])
    found = {"raw": raw, "after_cutoff": cutoff, "after_dedup": dedup, "mined": mined}
    selection = SELECTION.search(text)
    if selection:
        _, taken, budget, n_pass, n_defect, synthetic = selection.groups()
        assert int(budget) == dedup  # the selection chooses among the k-NN's rows above it
        assert int(n_pass) + int(n_defect) == int(taken) == mined
        assert int(synthetic) <= mined
        found.update(selected=int(taken), synthetic=int(synthetic))
    else:
        assert mined == dedup
    verdict = VERDICT.search(text)
    if verdict and mined:
        assert int(verdict[2]) == mined
    return found
