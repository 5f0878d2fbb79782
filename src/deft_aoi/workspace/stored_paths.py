"""Paths a run keeps in its artefacts: stored relative to the workspace root, resolved where it is now.

The loop's tables carry image paths (`filepath`, `golden_filepath`, `matched_target`, `target_filepath`: the
Data Services shape of RCA gaps, routing, embeddings and mined rows), and some of its text files name files of
the workspace. Absolute paths would tie a run to where its workspace was when they were written: a moved
workspace would look for images that are gone, and a copy would silently read the original's images. So every
artefact stores them workspace-relative (`kpi/images/B1/test/R1_SolderLight.jpg`) and readers resolve them
against the workspace's current root; in memory (embedding, k-NN, thumbnails) paths stay absolute. A path
outside the root (`deft mine` on files anywhere) is kept as written: there is nothing to be relative to.

The ONE place that converts: writers call `store_*`/`write_*`, readers `resolve_*`/`read_*`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Columns of a run's tables that hold image paths (CONTRACTS: `filepath` is the input image of one light).
PATH_COLUMNS: tuple[str, ...] = ("filepath", "golden_filepath", "matched_target", "target_filepath")


def _prefixes(root: Path) -> tuple[str, ...]:
    """`root` as written and with symlinks resolved: paths are built from the former, but a caller may hand
    the latter (the workspace root is resolved once, a tmp dir may sit behind a link)."""
    spelled = os.path.normpath(str(root))
    real = os.path.realpath(spelled)
    return (spelled,) if real == spelled else (spelled, real)


def store_path(path: str | Path, root: Path) -> str:
    """`path` relative to `root` when it lies under it (lexically), else unchanged. The rest of the text is
    kept as written (no normalising), so `resolve_path` gives back the very string: paths are also keys."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    for prefix in _prefixes(root):
        if text == prefix:
            return "."
        if text.startswith(prefix.rstrip(os.sep) + os.sep):
            return text[len(prefix.rstrip(os.sep)) + 1:]
    return text


def resolve_path(path: str, root: Path) -> str:
    """A stored path as an absolute path under `root` (absolute ones, from older runs or outside the workspace,
    are returned as they are). Empty stays empty: a missing golden image is not the workspace root. Joined as
    text: `Path` would drop a `./` and change a key."""
    if not path or os.path.isabs(path):
        return path
    if path == ".":
        return str(root)
    return os.path.join(str(root), path)


def store_text(text: str, root: Path) -> str:
    """`text` (a report, a log line, a YAML dump) with every mention of `root` made relative: `<root>/a` → `a`,
    `<root>` itself → `.`; a sibling that only shares the prefix (`<root>2/a`) is left alone."""
    for prefix in sorted(_prefixes(root), key=len, reverse=True):
        mention = re.compile(re.escape(prefix.rstrip(os.sep)) + r"(/|(?![\w.\-]))")
        text = mention.sub(lambda m: "" if m.group(1) == "/" else ".", text)
    return text


def _map(df: pd.DataFrame, columns: Iterable[str], fn: Callable[[str], str]) -> pd.DataFrame:
    todo = [c for c in columns if c in df.columns]
    if not todo:
        return df
    out = df.copy()
    for column in todo:
        values = out[column]
        out[column] = [v if missing else fn(str(v)) for v, missing in zip(values.tolist(), values.isna().tolist(),
                                                                          strict=True)]
    return out


def store_frame(df: pd.DataFrame, root: Path, columns: Iterable[str] = PATH_COLUMNS) -> pd.DataFrame:
    """A copy of `df` whose path columns are workspace-relative (pure)."""
    return _map(df, columns, lambda v: store_path(v, root))


def resolve_frame(df: pd.DataFrame, root: Path, columns: Iterable[str] = PATH_COLUMNS) -> pd.DataFrame:
    """A copy of `df` whose stored path columns are absolute under `root` (pure)."""
    return _map(df, columns, lambda v: resolve_path(v, root))


def write_parquet(df: pd.DataFrame, path: Path, root: Path) -> None:
    from deft_aoi.io_utils import atomic_write_parquet

    atomic_write_parquet(store_frame(df, root), path)


def write_csv(df: pd.DataFrame, path: Path, root: Path) -> None:
    from deft_aoi.io_utils import atomic_write_csv

    atomic_write_csv(store_frame(df, root), path)


def read_parquet(path: Path, root: Path, columns: list[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    return resolve_frame(pd.read_parquet(path, columns=columns), root)


# Text files a stage leaves for people and tools (TAO specs and their experiment.yaml, job logs, summaries,
# reports, JSON records). CSVs are left out: their path columns mean "relative to images_dir" (ChangeNet), so
# a table is converted by its writer (`write_csv`), never by text.
TEXT_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json", ".log", ".txt", ".md")


def store_text_files(directory: Path, root: Path) -> list[Path]:
    """Rewrite (atomically) every text file under `directory` that names `root`, with those paths made relative
    (`store_text`); returns the files rewritten. Run on a stage's outputs before they are hashed and committed:
    a job's spec and log name the workspace as it was, and a copy of the workspace must not point back at it.
    A file that is not UTF-8 is left as it is (nothing of ours)."""
    from deft_aoi.io_utils import atomic_write_bytes

    needles = [p.rstrip(os.sep).encode() for p in _prefixes(root)]
    rewritten = []
    for path in sorted(directory.rglob("*")):
        if path.suffix not in TEXT_SUFFIXES or path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if not any(n in data for n in needles):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        atomic_write_bytes(path, store_text(text, root).encode("utf-8"))
        rewritten.append(path)
    return rewritten


def store_parquet_files(directory: Path, root: Path) -> list[Path]:
    """Rewrite (atomically, schema metadata kept) every parquet under `directory` whose path columns name
    places under `root`, with those made relative; returns the files rewritten. For tables a tool wrote with
    the absolute paths it needed (a container's inputs and outputs), once they have been read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deft_aoi.io_utils import atomic_open

    rewritten = []
    for path in sorted(directory.rglob("*.parquet")):
        if path.is_symlink() or not path.is_file():
            continue
        table = pq.read_table(path)
        changed = False
        for column in (c for c in PATH_COLUMNS if c in table.column_names):
            values = table.column(column).to_pylist()
            stored = [v if v is None else store_path(str(v), root) for v in values]
            if stored != values:
                table = table.set_column(table.schema.get_field_index(column), column, pa.array(stored, pa.string()))
                changed = True
        if changed:
            with atomic_open(path, "wb", encoding=None) as fh:
                pq.write_table(table, fh)
            rewritten.append(path)
    return rewritten
