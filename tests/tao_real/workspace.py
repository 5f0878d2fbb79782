"""The tiny workspace the real-TAO tier runs NVIDIA's code on: `deft demo-data` (seeded, 64×64 crops) cut down
to a few rows per CSV, with a FAN-tiny spec, so one CPU epoch of Visual ChangeNet takes about a minute."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

BACKBONE = "augmentation/backbone/fan_tiny_random.safetensors"
# rows kept per CSV: (PASS, defect). Validation/KPI keep ≥ batch_size rows: TAO refuses fewer
# (tao_lightning_module.py `_dataloader_batch_check`, issue 24 point 3).
ROWS = {"train/base/training_set.csv": (4, 4), "train/base/validation_set.csv": (1, 1),
        "kpi/testing_set.csv": (4, 4), "augmentation/mining_pool/mining_pool.csv": (4, 2)}
BATCH = 2
SYNTHETIC = 2  # synthetic pairs kept of the demo's 80 (each one is a training row of the iteration)


def demo_source(cache: Path) -> Path:
    """`deft demo-data --seed 7` once per session (about 30 s)."""
    if not (cache / "specs" / "baseline_spec.yaml").is_file():
        subprocess.run([sys.executable, "-m", "deft_aoi.cli", "demo-data", "--out", str(cache), "--seed", "7"],
                       check=True, capture_output=True)
    return cache


def placeholder_safetensors(path: Path) -> None:
    """A valid safetensors file with one unused tensor: TAO loads backbone weights with `strict=False`
    (classification/models/changenet.py), so the FAN backbone keeps its random init. deft's docker
    preflight wants a staged file; NVIDIA publishes no FAN-tiny ChangeNet backbone we could fetch here."""
    header = json.dumps({"deft_placeholder": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")


def _trim(csv: Path, passes: int, defects: int) -> None:
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    ok = df[df["label"] == "PASS"].head(passes)
    ng = df[df["label"] != "PASS"].head(defects)
    pd.concat([ok, ng]).sort_index().to_csv(csv, index=False)


def _trim_synthetic(anomalygen: Path, keep: int) -> None:
    stems = sorted(p.stem for p in (anomalygen / "original_image").iterdir())[:keep]
    for side in ("original_image", "reconstructed_image"):
        for image in (anomalygen / side).iterdir():
            if image.stem not in stems:
                image.unlink()
    records = []
    for line in (anomalygen / "defect_spec.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record["stems"] = [s for s in record["stems"] if s in stems]
        record["count"] = len(record["stems"])
        if record["stems"]:
            records.append(json.dumps(record))
    (anomalygen / "defect_spec.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")


def tiny_spec(spec: dict[str, object], *, backbone: str = "fan_tiny_8_p4_hybrid", size: int = 64) -> None:
    """The demo spec turned into a cheap one, in place: FAN-tiny (NVIDIA's smallest ChangeNet backbone) with its
    default decode head, 1 epoch, batch 2, no loader workers."""
    model = spec["model"]
    assert isinstance(model, dict)
    model["backbone"] = {"type": backbone, "pretrained_backbone_path": BACKBONE, "freeze_backbone": False}
    if not backbone.startswith("c_radio"):
        model.pop("decode_head", None)  # the ViT feature strides do not apply to FAN
    train = spec["train"]
    assert isinstance(train, dict)
    train.update(num_epochs=1, checkpoint_interval=1, validation_interval=1)
    data = spec["dataset"]
    assert isinstance(data, dict)
    data["classify"].update(batch_size=BATCH, workers=0, image_width=size, image_height=size)


def tiny_workspace(source: Path, dest: Path, image: str, *, train_rows: tuple[int, int] | None = None) -> Path:
    """A writable tiny workspace at `dest` whose versions.yaml names `image` for both TAO images;
    `train_rows` (PASS, defect) cuts the training set further (one batch = one step for the C-RADIO jobs)."""
    shutil.copytree(source, dest)
    for rel, (passes, defects) in ROWS.items():
        if train_rows is not None and rel == "train/base/training_set.csv":
            passes, defects = train_rows
        _trim(dest / rel, passes, defects)
    _trim_synthetic(dest / "augmentation" / "anomalygen", SYNTHETIC)
    spec_path = dest / "specs" / "baseline_spec.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    tiny_spec(spec)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    placeholder_safetensors(dest / BACKBONE)
    (dest / "versions.yaml").write_text(
        f"images:\n  tao_toolkit:\n    pyt: {image}\n    data_services: {image}\n", encoding="utf-8")
    for path in (dest, *dest.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def numeric_input_paths(ws: Path, rel: str = "train/base/training_set.csv") -> None:
    """Give every row of `rel` an all-digit input_path (`0001`, `0002`, ...), copying its images there, so
    pandas' type inference reads the column as integers (issue 24 point 4)."""
    spec = yaml.safe_load((ws / "specs" / "baseline_spec.yaml").read_text(encoding="utf-8"))
    images = ws / spec["dataset"]["classify"]["train_dataset"]["images_dir"]
    df = pd.read_csv(ws / rel, dtype=str, keep_default_na=False)
    names = {old: f"{i:04d}" for i, old in enumerate(sorted(set(df["input_path"])), start=1)}
    for old, new in names.items():
        shutil.copytree(images / old, images / new)
        for path in (images / new, *(images / new).rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
    df["input_path"] = df["input_path"].map(names)
    df.to_csv(ws / rel, index=False)
