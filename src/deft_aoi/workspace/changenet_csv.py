"""The 14-column Visual ChangeNet CSV: read, validate, normalise, write, resolve image paths.

`input_path`/`golden_path` are directories; TAO resolves one image per light as
`{images_dir}/{input_path}/{object_name}_{light}{image_ext}` (CONTRACTS §2).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from deft_aoi.errors import InputError
from deft_aoi.io_utils import refuse_special_file

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CHANGENET_COLUMNS: tuple[str, ...] = (
    "input_path",
    "golden_path",
    "label",
    "object_name",
    "project",
    "boardname",
    "comp_type_2",
    "mpass_mfail",
    "is_valid",
    "comp_name",
    "part_type",
    "number_of_pins",
    "description",
    "comp_type_1",
)
MANDATORY_COLUMNS: tuple[str, ...] = CHANGENET_COLUMNS[:4]
LEAKAGE_KEY: tuple[str, ...] = ("input_path", "golden_path", "label", "object_name", "boardname")
PASS_LABEL = "PASS"


def normalise_label(label: str) -> str:
    """`PASS` stays upper case (TAO's class-0 sentinel); every other label is stripped and lower-cased."""
    text = str(label).strip()
    return PASS_LABEL if text.upper() == PASS_LABEL else text.lower()


class ImageNaming(Protocol):
    """What names a row's images (`image_paths`): the lights in input_map order and the extension. The TAO spec
    (runners/tao/changenet_spec.ChangeNetSpec) is one; the data layer needs no more of it."""

    @property
    def lights(self) -> tuple[str, ...]: ...

    @property
    def image_ext(self) -> str: ...


def normalise_labels(labels: pd.Series) -> pd.Series:
    stripped = labels.astype(str).str.strip()
    is_pass = stripped.str.upper() == PASS_LABEL
    return stripped.str.lower().where(~is_pass, PASS_LABEL)


def is_defect_labels(labels: pd.Series) -> np.ndarray:
    """Defect = any label but PASS (after normalise_labels), as a boolean array (CONTRACTS' one label rule)."""
    return (normalise_labels(labels) != PASS_LABEL).to_numpy()


class ChangeNetRow(BaseModel):
    """One CSV row at a boundary (rows we create ourselves, e.g. synthetic pairs)."""

    model_config = ConfigDict(extra="forbid")

    input_path: str
    golden_path: str
    label: str
    object_name: str
    project: str = ""
    boardname: str = ""
    comp_type_2: str = ""
    mpass_mfail: str = ""
    is_valid: str = ""
    comp_name: str = ""
    part_type: str = ""
    number_of_pins: str = ""
    description: str = ""
    comp_type_1: str = ""

    @field_validator("input_path", "golden_path", "label", "object_name")
    @classmethod
    def _mandatory(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        return normalise_label(value)


def empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=str) for c in CHANGENET_COLUMNS})


def rows_to_frame(rows: Iterable[ChangeNetRow]) -> pd.DataFrame:
    import pandas as pd

    records = [r.model_dump() for r in rows]
    return pd.DataFrame.from_records(records, columns=list(CHANGENET_COLUMNS)) if records else empty_frame()


def _data_row_number(index: int) -> int:
    """1-based data row as a spreadsheet shows it (the header is row 1, the first data row is row 2)."""
    return int(index) + 2


def conform(df: pd.DataFrame, *, file: str | Path = "<frame>", first_row: int = 0) -> pd.DataFrame:
    """Validate and normalise a frame in place of a CSV read: mandatory columns present and non-blank,
    optional columns padded with "", labels normalised, the 14 columns first and extras kept after.
    `first_row`: the frame's first data row's position in its file (a chunk of a streamed CSV)."""
    missing = [c for c in MANDATORY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"missing mandatory column(s) {', '.join(missing)}; found: {', '.join(map(str, df.columns))}",
            file=file,
        )
    df = df.copy()
    for col in CHANGENET_COLUMNS:
        if col not in df.columns:
            df[col] = ""
        else:
            df[col] = df[col].fillna("").astype(str)
    for col in MANDATORY_COLUMNS:
        blank = df[col].str.strip() == ""
        if blank.any():
            first = int(blank.to_numpy().nonzero()[0][0])
            raise InputError(
                f"blank '{col}' in {int(blank.sum())} row(s); first at row {_data_row_number(first_row + first)}",
                file=file,
                row=_data_row_number(first_row + first),
            )
    df["label"] = normalise_labels(df["label"])
    extras = [c for c in df.columns if c not in CHANGENET_COLUMNS]
    return df[list(CHANGENET_COLUMNS) + extras].reset_index(drop=True)


def _refuse_unreadable(path: Path) -> None:
    """What must hold before a parse: an existing, regular, non-empty file without a repeated header name."""
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("expected a CSV file, found a directory", file=path)
    refuse_special_file(path)
    if path.stat().st_size == 0:
        raise InputError("file is empty (no header row)", file=path)
    _refuse_duplicate_columns(path)


_READ_ARGS: dict[str, Any] = {"dtype": str, "keep_default_na": False, "na_values": [], "encoding": "utf-8-sig",
                              "skipinitialspace": False}


def read_changenet_csv(path: str | Path, *, allow_empty: bool = False) -> pd.DataFrame:
    """Read a ChangeNet CSV as strings. Accepts a UTF-8 BOM and CRLF line ends.

    Raises InputError naming the file (and row) for a missing/empty file, a parse error, missing
    mandatory columns or blank mandatory cells.
    """
    import pandas as pd

    path = Path(path)
    _refuse_unreadable(path)
    try:
        df = pd.read_csv(path, **_READ_ARGS)
    except pd.errors.EmptyDataError as exc:
        raise InputError("file is empty (no header row)", file=path) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot parse CSV: {exc}", file=path) from exc
    df.columns = [str(c).strip() for c in df.columns]
    df = conform(df, file=path)
    if df.empty and not allow_empty:
        raise InputError("CSV has a header but no data rows", file=path)
    return df


def iter_changenet_csv(path: str | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """`read_changenet_csv` in chunks of `chunk_rows` rows, so a CSV of any size is never held whole: each
    chunk is conformed alike and indexed by its rows' positions in the file (row numbers in errors count from
    the file's start). The same errors, raised when the chunk holding the fault is reached."""
    import pandas as pd

    path = Path(path)
    _refuse_unreadable(path)
    seen = 0
    try:
        reader = pd.read_csv(path, chunksize=max(int(chunk_rows), 1), **_READ_ARGS)
        with reader:
            for chunk in reader:
                chunk.columns = [str(c).strip() for c in chunk.columns]
                out = conform(chunk, file=path, first_row=seen)
                if out.empty:
                    continue  # a header-only file: reported below, after its header is checked
                out.index = pd.RangeIndex(seen, seen + len(out))
                seen += len(out)
                yield out
    except pd.errors.EmptyDataError as exc:
        raise InputError("file is empty (no header row)", file=path) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot parse CSV: {exc}", file=path) from exc
    if not seen:
        header = pd.read_csv(path, nrows=0, **_READ_ARGS)
        header.columns = [str(c).strip() for c in header.columns]
        conform(header, file=path)  # a header lacking mandatory columns says so first, as read_changenet_csv does
        raise InputError("CSV has a header but no data rows", file=path)


def _refuse_duplicate_columns(path: Path) -> None:
    """pandas silently renames a repeated header (`label`, `label.1`) and the loop would read one of the
    two columns; a repeated name is an error in the file, shown with its header row."""
    import csv

    from deft_aoi.bounded import csv_fields_up_to_max_bytes

    csv_fields_up_to_max_bytes()
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (UnicodeDecodeError, csv.Error):
        return  # the full parse below reports it
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"column(s) named more than once in the header: {', '.join(repeated)}", file=path, row=1,
                         hint="keep one column per name")


# Labels that are really a missing value written out by a spreadsheet or a dataframe library: they would
# train as defect classes of their own.
MISSING_LABEL_WORDS: frozenset[str] = frozenset({"nan", "none", "null", "na", "n/a", "nil", "undefined", "-"})


def missing_value_labels(df: pd.DataFrame) -> dict[str, int]:
    """{label: rows} for labels that look like a missing value (after normalisation)."""
    counts = df["label"].astype(str).str.strip().str.lower().value_counts()
    return {str(k): int(v) for k, v in counts.items() if k in MISSING_LABEL_WORDS}


def write_changenet_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write atomically with the 14 columns first (extras such as `siamese_score` kept after)."""
    from deft_aoi.io_utils import atomic_write_csv

    extras = [c for c in df.columns if c not in CHANGENET_COLUMNS]
    out = df.copy()
    for col in CHANGENET_COLUMNS:
        if col not in out.columns:
            out[col] = ""
    atomic_write_csv(out[list(CHANGENET_COLUMNS) + extras], Path(path))


def check_paths_inside(
    df: pd.DataFrame,
    images_dir: str | Path,
    workspace: str | Path,
    *,
    file: str | Path,
    lights: Sequence[str] = (),
    image_ext: str = "",
    first_row: int = 0,
    positions: Sequence[int] | None = None,
) -> None:
    """Refuse a row any of whose paths resolves outside where it may point: `../` in `input_path`,
    `golden_path` or `object_name`, a foreign absolute path, or a symlinked folder or image leading out.

    Every path is resolved as TAO would open it (joined to images_dir, symlinks followed). A relative path
    must stay under the images root it is relative to; an absolute one inside the workspace (the containers
    see only the workspace mount). With `lights`, every image file of every light is checked too.
    Rows are numbered from `first_row`, or by their 0-based data `positions` in the file (a subset of rows).
    """
    root = os.path.realpath(workspace)
    base = os.path.realpath(images_dir)
    if not _inside(base, root):
        raise InputError(f"the images root {images_dir} resolves outside the workspace ({base})", file=file,
                         hint="keep images inside the workspace; a symlink may not lead out of it")
    frame = df.reset_index(drop=True)
    objects = frame["object_name"].astype(str)
    for col in ("input_path", "golden_path"):
        dirs = frame[col].astype(str).map(os.path.expanduser)
        absolute = dirs.map(os.path.isabs).to_numpy()
        real_dir = {d: os.path.realpath(os.path.join(base, d)) for d in dirs.unique()}
        candidates = [(i, col, real_dir[d]) for i, d in enumerate(dirs)]
        for light in lights:
            names = objects + f"_{light}{image_ext}"
            reals = _resolve_files([real_dir[d] for d in dirs], names.tolist())
            candidates += [(i, "object_name", r) for i, r in enumerate(reals)]
        for i, field, real in candidates:
            fence = root if absolute[i] else base
            if _inside(real, fence):
                continue
            value = str(frame.at[i, field])
            if field == "object_name" and not ("/" in value or "\\" in value):
                field, value = col, str(frame.at[i, col])  # the image itself is a symlink leading out
            where = "the workspace" if absolute[i] else f"the images root {base}"
            raise InputError(
                f"'{field}' = '{value}' resolves outside {where} ({real})",
                file=file,
                row=_data_row_number(positions[i] if positions is not None else first_row + i),
                hint="paths must be relative to the images directory and stay inside the workspace; "
                     "symlinks may not lead out of it",
            )


def _inside(path: str, fence: str) -> bool:
    return os.path.commonpath([fence, path]) == fence


def _resolve_files(folders: Sequence[str], names: Sequence[str], *, workers: int = 16) -> list[str]:
    """Each image path fully resolved. Its folder is already resolved, so a plain name needs one lstat (is the
    file itself a symlink?); a name with a `/` (an `object_name` reaching into other folders) is resolved whole."""
    from concurrent.futures import ThreadPoolExecutor

    def real(item: tuple[str, str]) -> str:
        folder, name = item
        path = os.path.join(folder, name)
        if "/" in name or os.sep in name or os.path.islink(path):
            return os.path.realpath(path)
        return path

    items = list(zip(folders, names, strict=True))
    if len(items) < 2000:
        return [real(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(real, items, chunksize=512))


def image_paths(
    df: pd.DataFrame, images_dir: str | Path, lights: Sequence[str], image_ext: str
) -> pd.DataFrame:
    """Every image file a frame references: columns `row`, `light`, `side` (input|golden), `path`.

    Vectorised string building, so 100k-row CSVs resolve in well under a second.
    """
    import pandas as pd

    base = str(images_dir).rstrip("/")
    parts = []
    for side, col in (("input", "input_path"), ("golden", "golden_path")):
        dirs = df[col].astype(str).str.rstrip("/")
        absolute = dirs.str.startswith("/")
        prefix = dirs.where(absolute, base + "/" + dirs)
        for light in lights:
            paths = prefix + "/" + df["object_name"].astype(str) + f"_{light}{image_ext}"
            parts.append(
                pd.DataFrame({"row": df.index.to_numpy(), "light": light, "side": side, "path": paths.to_numpy()})
            )
    if not parts:
        return pd.DataFrame(columns=["row", "light", "side", "path"])
    return pd.concat(parts, ignore_index=True)


def find_missing_images(paths: Sequence[str], *, workers: int = 16) -> list[str]:
    """Existence by stat (no decoding), parallel because network filesystems make stat latency-bound."""
    from concurrent.futures import ThreadPoolExecutor

    unique = list(dict.fromkeys(paths))
    if len(unique) < 2000:
        return [p for p in unique if not os.path.isfile(p)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        exists = list(pool.map(os.path.isfile, unique, chunksize=512))
    return [p for p, ok in zip(unique, exists, strict=True) if not ok]


def rebase_paths(df: pd.DataFrame, images_dir: str | Path, workspace: str | Path) -> pd.DataFrame:
    """Re-express `input_path`/`golden_path` relative to the workspace root.

    Assembled training CSVs mix base rows (under kpi/images), mining-pool rows and synthetic rows; they
    must share one images root, so every row is rewritten into workspace-relative coordinates.
    """
    root = Path(workspace).resolve()
    base = Path(images_dir).resolve()
    try:
        prefix = str(base.relative_to(root))
    except ValueError as exc:
        raise InputError(f"images directory {base} is outside the workspace {root}") from exc
    out = df.copy()
    for col in ("input_path", "golden_path"):
        values = out[col].astype(str).str.rstrip("/")
        absolute = values.str.startswith("/")
        rel = values if prefix == "." else prefix + "/" + values
        if absolute.any():
            rel = rel.where(~absolute, values.map(lambda v: os.path.relpath(v, root)))
        out[col] = rel.map(os.path.normpath)
    return out
