"""Reading mining targets and pools: embedding parquets, filepath parquets/CSVs, or ChangeNet CSVs.

A table either carries an `embedding` column (fingerprint in the parquet metadata) or image paths to embed:
`filepath` (+ optional `golden_filepath`), or the ChangeNet columns `input_path`/`golden_path`/
`object_name`, resolved per CONTRACTS §2 relative to the file's own directory with the spec's first light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError, UsageError
from deft_aoi.mining.embedders.base import Fingerprint
from deft_aoi.mining.fingerprint import EMBEDDING_COLUMN

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.layout import WorkspaceLayout

CHANGENET_PATH_COLUMNS = ("input_path", "golden_path", "object_name")


@dataclass
class MiningTable:
    """Rows to mine with (`frame` always has `filepath`); `embeddings`/`fingerprint` when precomputed."""

    frame: pd.DataFrame
    source: Path
    embeddings: np.ndarray | None = None
    fingerprint: Fingerprint | None = None
    converted_from_csv: bool = False

    @property
    def has_labels(self) -> bool:
        return "label" in self.frame.columns


@dataclass(frozen=True)
class Lights:
    """Which light's image represents a ChangeNet row, and the image extension."""

    light: str
    image_ext: str


def find_workspace_spec(path: Path) -> Path | None:
    """`specs/baseline_spec.yaml` of the workspace holding `path` (searched upwards), if any."""
    for parent in Path(path).resolve().parents:
        candidate = parent / "specs" / "baseline_spec.yaml"
        if candidate.is_file():
            return candidate
    return None


def resolve_changenet(df: pd.DataFrame, images_dir: Path, lights: Lights) -> pd.DataFrame:
    """Add `filepath`/`golden_filepath` (absolute, one light) to ChangeNet rows, keeping every column."""
    from deft_aoi.workspace.changenet_csv import image_paths

    paths = image_paths(df, images_dir, [lights.light], lights.image_ext)
    out = df.copy()
    out["filepath"] = paths.loc[paths["side"] == "input", "path"].to_numpy()
    out["golden_filepath"] = paths.loc[paths["side"] == "golden", "path"].to_numpy()
    return out


def _check_filepaths(df: pd.DataFrame, file: Path) -> pd.DataFrame:
    import os

    df = df.copy()
    fp = df["filepath"].fillna("").astype(str)
    blank = fp.str.strip() == ""
    if blank.any():
        first = int(blank.to_numpy().nonzero()[0][0])
        raise InputError(f"blank 'filepath' in {int(blank.sum())} row(s)", file=file, row=first + 2)
    base = str(file.parent)
    # Relative paths are read relative to the table's own directory, like the ChangeNet CSVs.
    df["filepath"] = fp.where(fp.str.startswith("/"), base + os.sep + fp)
    if "golden_filepath" in df.columns:
        gp = df["golden_filepath"].fillna("").astype(str)
        rel = ~gp.str.startswith("/") & (gp != "")
        df["golden_filepath"] = gp.where(~rel, base + os.sep + gp)
    return df


def default_images_dir(path: Path, workspace: WorkspaceLayout | None) -> Path | None:
    """Where a ChangeNet CSV's paths resolve when no images dir is given: the workspace layout decides for
    its own CSVs (`--workspace`, else the workspace the file sits in), otherwise None (the file's dir)."""
    from deft_aoi.workspace.layout import WorkspaceLayout

    for ws in (workspace, WorkspaceLayout.holding(path)):
        root = ws.images_root_for(path) if ws is not None else None
        if root is not None:
            return root
    return None


_MISSING_HINT = {
    "targets": "ChangeNet paths resolve against --targets-images-dir, else the workspace layout for its own CSVs "
               "(kpi/images for kpi/testing_set.csv), else the file's own directory; 'filepath' columns against "
               "the file's own directory",
    "pool": "ChangeNet paths resolve against the workspace layout for its own CSVs (kpi/images for the training "
            "CSV, the pool's own directory for mining_pool.csv), else the file's own directory; 'filepath' "
            "columns against the file's own directory",
}


def check_images_exist(table: MiningTable, what: str) -> None:
    """Every image a table will embed exists; else name the table file, its row and the column."""
    from deft_aoi.workspace.changenet_csv import find_missing_images

    if table.embeddings is not None:
        return  # precomputed: nothing is read from disk
    frame = table.frame
    columns = [c for c in ("filepath", "golden_filepath") if c in frame.columns]
    wanted = [str(p) for c in columns for p in frame[c] if isinstance(p, str) and p]
    missing = set(find_missing_images(wanted))
    if not missing:
        return
    for idx in frame.index:
        for col in columns:
            value = frame.at[idx, col]
            if value in missing:
                # CSV rows count like a spreadsheet (header = row 1); parquet rows from 1.
                row = int(idx) + (2 if table.converted_from_csv else 1)
                source = _source_field(frame, idx, col)
                raise InputError(
                    f"{what}: {source}image not found: {value} ({len(missing)} missing in all)",
                    file=table.source, row=row, hint=_MISSING_HINT.get(what, _MISSING_HINT["pool"]),
                )


def _source_field(frame: pd.DataFrame, idx: object, col: str) -> str:
    """For ChangeNet rows, the cells the missing path was built from."""
    side = "input_path" if col == "filepath" else "golden_path"
    if side in frame.columns and "object_name" in frame.columns:
        return f"{side} '{frame.at[idx, side]!s}', object_name '{frame.at[idx, 'object_name']!s}': "
    return f"'{col}': "


def load_table(
    path: Path, *, lights: Lights | None = None, what: str = "table", images_dir: Path | None = None
) -> MiningTable:
    """Read targets or pool from .parquet or .csv (see module doc). `lights` is needed for ChangeNet rows;
    their paths resolve against `images_dir` (default: the file's own directory)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from deft_aoi.io_utils import refuse_special_file
    from deft_aoi.mining.fingerprint import column_to_matrix, read_fingerprint

    path = Path(path)
    refuse_special_file(path)
    if not path.is_file():
        raise InputError(f"{what} file not found", file=path)
    suffix = path.suffix.lower()
    embeddings = fingerprint = None
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read parquet: {exc}", file=path) from exc
        if EMBEDDING_COLUMN in table.column_names:
            embeddings = column_to_matrix(table.column(EMBEDDING_COLUMN), file=path)
            fingerprint = read_fingerprint(table.schema.metadata, embeddings.shape[1], file=path)
            table = table.drop_columns([EMBEDDING_COLUMN])
        df = table.to_pandas()
    elif suffix == ".csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot parse CSV: {exc}", file=path) from exc
        df.columns = [str(c).strip() for c in df.columns]
    else:
        raise UsageError(f"{what} must be a .parquet or .csv file, got {path.name}")
    if df.empty:
        raise InputError(f"{what} has no rows", file=path)

    if "filepath" not in df.columns:
        if all(c in df.columns for c in CHANGENET_PATH_COLUMNS):
            from deft_aoi.workspace.changenet_csv import conform

            if lights is None:
                raise UsageError(
                    f"{what} {path} holds ChangeNet rows; which light's image to embed is unknown",
                    hint="pass --spec specs/baseline_spec.yaml (lights, image_ext) or --workspace",
                )
            df = resolve_changenet(conform(df, file=path), images_dir or path.parent, lights)
        elif embeddings is None:
            raise InputError(
                f"{what} needs an 'embedding' column, a 'filepath' column, or the ChangeNet columns "
                f"{', '.join(CHANGENET_PATH_COLUMNS)}; found: {', '.join(map(str, df.columns))}",
                file=path,
            )
        else:
            df["filepath"] = [f"{path.name}#{i}" for i in range(len(df))]
    else:
        df = _check_filepaths(df, path)
    if "label" in df.columns:
        from deft_aoi.workspace.changenet_csv import normalise_labels

        df["label"] = normalise_labels(df["label"].fillna(""))
    return MiningTable(df.reset_index(drop=True), path, embeddings, fingerprint, converted_from_csv=suffix == ".csv")
