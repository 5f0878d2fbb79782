"""CSV validation before training (CONTRACTS §4-§6 hard stops): columns, images on disk, leakage.

Runs on the freshly mined rows (mid-iteration) and on the assembled training CSV. Every frame here is in
workspace coordinates (images root = workspace root). The maths lives in leakage.py; this module stats
and hashes files and turns findings into a report and, when asked, a HardStop naming the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from deft_aoi.errors import HardStop, InputError
from deft_aoi.io_utils import atomic_write_text, sha256_file
from deft_aoi.workspace.changenet_csv import MANDATORY_COLUMNS, PASS_LABEL

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.layout import WorkspaceLayout

Phase = Literal["mined", "combined"]
_MAX_LISTED_MISSING = 200
_MAX_IN_MESSAGE = 10


class ValidationReport(BaseModel):
    """`merge_validation.json`."""

    ok: bool
    phase: Phase
    rows_file: str
    n_rows: int
    checks: list[dict[str, str]]
    n_missing_images: int = 0
    missing_images: list[str] = Field(default_factory=list)  # first 200
    leaked_rows: list[dict[str, Any]] = Field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = Field(default_factory=list)
    near_duplicate_stop: bool = False
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def check(self, name: str) -> dict[str, str] | None:
        return next((c for c in self.checks if c["name"] == name), None)


def _row_number(pos: int) -> int:
    """Spreadsheet row of a 0-based data position (header = row 1)."""
    return pos + 2


def _check(name: str, status: str, detail: str = "") -> dict[str, str]:
    return {"name": name, "status": status, "detail": detail}


# ---------------------------------------------------------------- hashing


def hash_files(paths: Sequence[str], *, workers: int = 16) -> list[str | None]:
    """sha256 per path (None when unreadable), each distinct path read once."""

    def one(path: str) -> str | None:
        try:
            return sha256_file(Path(path))
        except OSError:
            return None

    unique = list(dict.fromkeys(paths))
    if len(unique) < 64:
        hashed = dict(zip(unique, map(one, unique), strict=True))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            hashed = dict(zip(unique, pool.map(one, unique, chunksize=64), strict=True))
    return [hashed[p] for p in paths]


# ---------------------------------------------------------------- individual checks


def _structure_checks(rows: pd.DataFrame, workspace: WorkspaceLayout, rows_file: str, lights: Sequence[str],
                      image_ext: str) -> list[dict[str, str]]:
    from deft_aoi.workspace.changenet_csv import check_paths_inside

    missing = [c for c in MANDATORY_COLUMNS if c not in rows.columns]
    if missing:
        return [_check("mandatory_columns", "fail", f"missing column(s): {', '.join(missing)}")]
    checks = [_check("mandatory_columns", "pass", ", ".join(MANDATORY_COLUMNS))]
    blanks = []
    for col in MANDATORY_COLUMNS:
        blank = rows[col].fillna("").astype(str).str.strip() == ""
        if blank.any():
            first = int(blank.to_numpy().nonzero()[0][0])
            blanks.append(f"'{col}' blank in {int(blank.sum())} row(s), first at row {_row_number(first)}")
    checks.append(_check("mandatory_values", "fail" if blanks else "pass", "; ".join(blanks)))
    labels = rows["label"].fillna("").astype(str)
    bad = (labels != labels.str.strip()) | ((labels.str.upper() == PASS_LABEL) & (labels != PASS_LABEL)) | (
        (labels.str.upper() != PASS_LABEL) & (labels != labels.str.lower())
    )
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        checks.append(_check("labels_normalised", "fail",
                             f"{int(bad.sum())} label(s) not normalised, first at row {_row_number(first)}: "
                             f"{labels.iloc[first]!r}"))
    else:
        checks.append(_check("labels_normalised", "pass"))
    try:
        check_paths_inside(rows, workspace.root, workspace.root, file=rows_file, lights=lights, image_ext=image_ext)
        checks.append(_check("paths_inside_workspace", "pass"))
    except InputError as exc:
        checks.append(_check("paths_inside_workspace", "fail", exc.render()))
    return checks


def _leak_entry(rows: pd.DataFrame, pos: int, rows_file: str, *, kind: str, reference: str, ref_file: str,
                ref_pos: int, ref_row: pd.Series, light: str = "") -> dict[str, Any]:
    row = rows.iloc[pos]
    return {
        "kind": kind,
        "file": rows_file,
        "row": _row_number(pos),
        "input_path": str(row["input_path"]),
        "object_name": str(row["object_name"]),
        "label": str(row["label"]),
        "reference": reference,
        "reference_file": ref_file,
        "reference_row": _row_number(ref_pos),
        "reference_input_path": str(ref_row["input_path"]),
        "reference_object_name": str(ref_row["object_name"]),
        "light": light,
    }


def _key_leaks(rows: pd.DataFrame, refs: list[tuple[str, str, pd.DataFrame]], rows_file: str) -> list[dict[str, Any]]:
    from deft_aoi.analysis.leakage import key_matches

    pos_rows = rows.reset_index(drop=True)
    out = []
    for name, ref_file, ref in refs:
        ref = ref.reset_index(drop=True)
        for t, r in key_matches(pos_rows, ref).itertuples(index=False):
            out.append(_leak_entry(pos_rows, int(t), rows_file, kind="key", reference=name, ref_file=ref_file,
                                   ref_pos=int(r), ref_row=ref.iloc[int(r)]))
    return out


def _input_image_table(df: pd.DataFrame, images_dir: Path, lights: Sequence[str], image_ext: str) -> pd.DataFrame:
    from deft_aoi.workspace.changenet_csv import image_paths

    table = image_paths(df.reset_index(drop=True), images_dir, lights, image_ext)
    return table[table["side"] == "input"].reset_index(drop=True)


def is_featureless(path: str) -> bool:
    """A single-colour image (blank crop) carries no sample identity, so equal bytes there are not a leak."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            extrema = img.getextrema()
    except OSError:
        return False
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(lo == hi for lo, hi in bands)


def _content_leaks(rows: pd.DataFrame, refs: list[tuple[str, str, pd.DataFrame]], workspace: WorkspaceLayout,
                   lights: Sequence[str], image_ext: str, rows_file: str,
                   skip_positions: set[int]) -> tuple[list[dict[str, Any]], int]:
    """Same INPUT pixels under another name. Golden references are legitimately shared, so not compared.

    Returns the leak entries and how many rows matched only on featureless images (ignored).
    """
    import pandas as pd

    from deft_aoi.analysis.leakage import hash_leakage

    pos_rows = rows.reset_index(drop=True)
    train = _input_image_table(pos_rows, workspace.root, lights, image_ext)
    train["sha"] = hash_files(train["path"].tolist())
    ref_tables = []
    for name, ref_file, ref in refs:
        table = _input_image_table(ref, workspace.root, lights, image_ext)
        table["reference"], table["reference_file"] = name, ref_file
        ref_tables.append(table)
    if not ref_tables or train.empty:
        return [], 0
    ref_all = pd.concat(ref_tables, ignore_index=True)
    ref_all["sha"] = hash_files(ref_all["path"].tolist())
    hits = train[hash_leakage(train["sha"], ref_all["sha"]).to_numpy()]
    hits = hits[~hits["row"].isin(list(skip_positions))]
    # Decode only the matched contents (usually none or a handful) to set aside blank crops.
    sample_path = hits.drop_duplicates(subset="sha").set_index("sha")["path"]
    blank = {sha for sha, path in sample_path.items() if is_featureless(str(path))}
    blank_rows = set(hits.loc[hits["sha"].isin(blank), "row"].astype(int))
    hits = hits[~hits["sha"].isin(blank)]
    ignored = len(blank_rows - set(hits["row"].astype(int)))
    first_ref = ref_all.dropna(subset=["sha"]).drop_duplicates(subset="sha", keep="first").set_index("sha")
    frames = {name: ref.reset_index(drop=True) for name, _, ref in refs}
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    # Records, not itertuples: a record's values are typed (Any) where a row tuple's are pandas' scalar union.
    for item in hits.to_dict("records"):
        pos = int(item["row"])
        if pos in seen:
            continue
        seen.add(pos)
        hit = first_ref.loc[item["sha"]]
        ref_pos = int(hit["row"])
        out.append(_leak_entry(pos_rows, pos, rows_file, kind="content", reference=str(hit["reference"]),
                               ref_file=str(hit["reference_file"]), ref_pos=ref_pos,
                               ref_row=frames[str(hit["reference"])].iloc[ref_pos], light=str(item["light"])))
    return out, ignored


def _near_duplicate_entries(rows: pd.DataFrame, refs: list[tuple[str, str, pd.DataFrame]],
                            embeddings: tuple[np.ndarray, np.ndarray], rows_file: str) -> list[dict[str, Any]]:
    from deft_aoi.analysis.leakage import near_duplicates

    train_emb, ref_emb = embeddings
    n_ref = sum(len(r) for _, _, r in refs)
    if len(train_emb) != len(rows) or len(ref_emb) != n_ref:
        raise InputError(
            f"embeddings do not line up with the rows: got {len(train_emb)} for {len(rows)} rows and "
            f"{len(ref_emb)} for {n_ref} reference rows (validation then KPI)"
        )
    owners = [(name, ref_file, ref.reset_index(drop=True), pos) for name, ref_file, ref in refs
              for pos in range(len(ref))]
    pos_rows = rows.reset_index(drop=True)
    out = []
    for t, r, cos in near_duplicates(train_emb, ref_emb).itertuples(index=False):
        name, ref_file, ref, ref_pos = owners[int(r)]
        entry = _leak_entry(pos_rows, int(t), rows_file, kind="near_duplicate", reference=name, ref_file=ref_file,
                            ref_pos=ref_pos, ref_row=ref.iloc[ref_pos])
        entry["cosine"] = round(float(cos), 6)
        out.append(entry)
    return out


# ---------------------------------------------------------------- entry points


def validate_rows(
    rows: pd.DataFrame,
    *,
    workspace: WorkspaceLayout,
    lights: Sequence[str],
    image_ext: str,
    validation: pd.DataFrame,
    kpi: pd.DataFrame,
    phase: Phase,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    near_duplicate_stop: bool = False,
    rows_file: str | Path | None = None,
) -> ValidationReport:
    """Check `rows` (workspace coordinates) against the held-out validation and KPI rows.

    `embeddings`, when given, is (one vector per row of `rows`, one per row of validation then KPI).
    """
    from deft_aoi.workspace.changenet_csv import find_missing_images, image_paths

    rows_name = str(rows_file) if rows_file is not None else f"<{phase} rows>"
    report = ValidationReport(ok=True, phase=phase, rows_file=rows_name, n_rows=len(rows), checks=[],
                              near_duplicate_stop=near_duplicate_stop)
    checks = _structure_checks(rows, workspace, rows_name, lights, image_ext)
    report.checks = checks
    if checks[0]["status"] == "fail":
        report.ok = False
        return report

    paths = image_paths(rows.reset_index(drop=True), workspace.root, lights, image_ext)
    missing = find_missing_images(paths["path"].tolist())
    report.n_missing_images = len(missing)
    report.missing_images = missing[:_MAX_LISTED_MISSING]
    checks.append(_check("images_exist", "fail" if missing else "pass",
                         f"{len(missing)} of {paths['path'].nunique()} image file(s) missing" if missing
                         else f"{paths['path'].nunique()} image file(s) for {len(lights)} light(s)"))

    refs = [
        ("validation", workspace.rel(workspace.validation_csv), validation),
        ("kpi", workspace.rel(workspace.kpi_csv), kpi),
    ]
    key_leaks = _key_leaks(rows, refs, rows_name)
    checks.append(_check("leakage_key", "fail" if key_leaks else "pass",
                         f"{len(key_leaks)} row(s) share the key of a validation/KPI row" if key_leaks
                         else "no shared (input_path, golden_path, label, object_name, boardname)"))
    keyed = {entry["row"] - 2 for entry in key_leaks}
    content_leaks, blank_matches = _content_leaks(rows, refs, workspace, lights, image_ext, rows_name, keyed)
    blank_note = (f"; {blank_matches} row(s) match only on single-colour (blank) images, not counted"
                  if blank_matches else "")
    checks.append(_check("leakage_content", "fail" if content_leaks else "pass",
                         (f"{len(content_leaks)} row(s) hold the same input pixels as a validation/KPI row"
                          if content_leaks else "no input image shares its sha256 with a validation/KPI image")
                         + blank_note))
    report.leaked_rows = key_leaks + content_leaks

    if embeddings is not None:
        report.near_duplicates = _near_duplicate_entries(rows, refs, embeddings, rows_name)
        status = "pass" if not report.near_duplicates else ("fail" if near_duplicate_stop else "warn")
        checks.append(_check("near_duplicates", status,
                             f"{len(report.near_duplicates)} row(s) with cosine ≥ 0.99 to a validation/KPI row"))
    else:
        checks.append(_check("near_duplicates", "skip", "no embeddings given"))
    report.ok = all(c["status"] != "fail" for c in checks)
    return report


def write_validation(report: ValidationReport, path: Path) -> None:
    atomic_write_text(Path(path), report.model_dump_json(indent=2) + "\n")


def _describe(entry: dict[str, Any]) -> str:
    how = {"key": "same key", "content": f"same {entry.get('light') or 'input'} image pixels",
           "near_duplicate": f"embedding cosine {entry.get('cosine', '')}"}[entry["kind"]]
    return (f"{entry['file']} row {entry['row']} (input_path={entry['input_path']}, "
            f"object_name={entry['object_name']}) = {entry['reference']} {entry['reference_file']} row "
            f"{entry['reference_row']} (input_path={entry['reference_input_path']}, "
            f"object_name={entry['reference_object_name']}) by {how}")


def _listing(entries: list[dict[str, Any]]) -> str:
    shown = "\n  ".join(_describe(e) for e in entries[:_MAX_IN_MESSAGE])
    more = f"\n  (+{len(entries) - _MAX_IN_MESSAGE} more in merge_validation.json)" if len(entries) > _MAX_IN_MESSAGE \
        else ""
    return f"\n  {shown}{more}"


def missed_by(leaks: list[dict[str, Any]]) -> str:
    """The pre-flight checks that should have kept these rows out: this stop is the last line of defence."""
    from deft_aoi.checks import HYGIENE_CHECK, TRAINING_LEAK_CHECK

    what = {"key": "same key", "content": "same input pixels (sha256)", "near_duplicate": "near duplicate"}
    kinds = ", ".join(dict.fromkeys(what[e["kind"]] for e in leaks))
    return (f"Pre-flight should have caught this ({kinds}): check '{HYGIENE_CHECK}' for mining-pool and synthetic "
            f"rows (they are excluded from mining; see pool_exclusions.csv in the run dir), '{TRAINING_LEAK_CHECK}' "
            f"for base training rows. A row that reached this stop slipped past them: please report it.")


def raise_if_failed(report: ValidationReport) -> None:
    """HardStop naming the offending rows; leakage outranks missing images, which outrank CSV problems."""
    if report.ok:
        return
    leaks = list(report.leaked_rows)
    if report.near_duplicate_stop:
        leaks += report.near_duplicates
    if leaks:
        raise HardStop("leakage", f"{len(leaks)} training row(s) leak validation/KPI data ({report.phase} check):"
                                  f"{_listing(leaks)}\n{missed_by(leaks)}", file=report.rows_file)
    if report.n_missing_images:
        shown = "\n  ".join(report.missing_images[:_MAX_IN_MESSAGE])
        more = f"\n  (+{report.n_missing_images - _MAX_IN_MESSAGE} more)" \
            if report.n_missing_images > _MAX_IN_MESSAGE else ""
        raise HardStop("missing_images", f"{report.n_missing_images} referenced image file(s) do not exist:"
                                         f"\n  {shown}{more}", file=report.rows_file)
    failures = [f"{c['name']}: {c['detail']}" for c in report.checks if c["status"] == "fail"]
    raise HardStop("csv_validation", "CSV validation failed: " + "; ".join(failures), file=report.rows_file)
