"""Shared builders for the analysis, synth and pre-flight tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec, load_spec
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, read_changenet_csv, rebase_paths
from deft_aoi.workspace.layout import WorkspaceLayout

RUN_NAME = "run_20250101_000000"
_IMAGE_ROOTS = ("kpi/images", "augmentation/mining_pool/images")


def light_copy(source: Path, dest: Path) -> Path:
    """A writable workspace copy in well under a second: CSVs, specs and the synthetic pairs are copied;
    the images of kpi/images and the mining pool are hard links to the read-only originals (a symlinked
    folder would lead out of the workspace, which validation refuses), plain copies across filesystems.

    Tests must never write into those images in place (delete or add images instead, or edit frames).
    """
    import os

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    skip = {source / r for r in _IMAGE_ROOTS}
    shutil.copytree(source, dest, ignore=lambda d, names: [n for n in names if Path(d) / n in skip])
    for rel in _IMAGE_ROOTS:
        shutil.copytree(source / rel, dest / rel, copy_function=link_or_copy)
    return dest


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in CHANGENET_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    return df


def row(i: str, label: str = "open", board: str = "b1", **extra: str) -> dict[str, str]:
    return {"input_path": f"kpi/images/{i}/test", "golden_path": f"kpi/images/{i}/golden", "label": label,
            "object_name": f"d{i}", "boardname": board, **extra}


class Workspace:
    """A writable deeppcb-dev copy with its frames in workspace coordinates."""

    def __init__(self, root: Path) -> None:
        self.layout = WorkspaceLayout.at(root)
        self.spec: ChangeNetSpec = load_spec(self.layout.spec_file)
        self.run_root = self.layout.results_root / RUN_NAME
        self.run_root.mkdir(parents=True)

    def base(self, which: str) -> pd.DataFrame:
        path = {"train": self.layout.train_csv, "validation": self.layout.validation_csv,
                "kpi": self.layout.kpi_csv}[which]
        return rebase_paths(read_changenet_csv(path), self.layout.kpi_images, self.layout.root)

    def mining_pool(self) -> pd.DataFrame:
        return read_changenet_csv(self.layout.mining_pool_csv)

