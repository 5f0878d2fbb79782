"""Fixtures for the runner tests: a small writable workspace cut from the real DeepPCB data."""

from __future__ import annotations

from pathlib import Path

import pytest

BATCH = 4
ROWS = {"train/base/training_set.csv": 14, "train/base/validation_set.csv": 10, "kpi/testing_set.csv": 12}


@pytest.fixture()
def small_ws(deeppcb_dev: Path, tmp_path: Path) -> Path:
    """A workspace with the real spec and images but only a few CSV rows (fast fake training)."""
    import pandas as pd

    dest = tmp_path / "ws"
    (dest / "specs").mkdir(parents=True)
    spec = (deeppcb_dev / "specs" / "baseline_spec.yaml").read_text(encoding="utf-8")
    # TAO trains nothing from fewer rows than batch_size (drop_last): a small workspace needs a small batch.
    assert "batch_size: 16" in spec
    (dest / "specs" / "baseline_spec.yaml").write_text(spec.replace("batch_size: 16", f"batch_size: {BATCH}"))
    (dest / "kpi").mkdir()
    (dest / "kpi" / "images").symlink_to(deeppcb_dev / "kpi" / "images")
    for rel, n in ROWS.items():
        df = pd.read_csv(deeppcb_dev / rel, dtype=str, keep_default_na=False)
        # both classes in every split, as TAO's sampler needs
        head = pd.concat([df[df["label"] == "PASS"].head(n // 2), df[df["label"] != "PASS"].head(n - n // 2)])
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        head.to_csv(dest / rel, index=False)
    return dest
