"""Stage the customer's pre-generated synthetic pairs ONCE per run, and guard them afterwards.

`stage_synth_pool` lays the pairs out in ChangeNet form under `<run>/synth_pool/` and records every
source file (size, mtime, sha256) in `manifest.json`. `verify_synth_sources` runs before each iteration:
a synthetic pool that changes under a running loop would make iterations incomparable, so any change is
a hard stop (CONTRACTS §5).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deft_aoi.bounded import loads_json
from deft_aoi.errors import HardStop, InputError
from deft_aoi.io_utils import (
    atomic_write_bytes,
    atomic_write_text,
    refuse_special_file,
    sha256_file,
    sha256_text,
)
from deft_aoi.synth.pairing import StemPairing, list_images, pair_stems
from deft_aoi.workspace.catalog import name, stage_dir
from deft_aoi.workspace.changenet_csv import PASS_LABEL, normalise_label
from deft_aoi.workspace.iterations import BASELINE

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout

GENERIC_LABEL = "synthetic_defect"
SYNTH_PROJECT = "synthetic"
SYNTH_BOARD = "synthetic"
SOURCE_COLUMN = "source"
MANIFEST_VERSION = 1
_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
_PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_MAX_LISTED = 20


class SourceFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    rel: str  # workspace-relative
    side: Literal["ng", "ok"]
    stem: str
    size: int
    mtime_ns: int
    sha256: str


class TrackedFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    rel: str
    size: int
    mtime_ns: int
    sha256: str


class SynthManifest(BaseModel):
    """`synth_pool/manifest.json`: what was staged, from which exact source bytes."""

    version: int = MANIFEST_VERSION
    created_at: str
    run_rel: str
    ng_dir: str
    ok_dir: str
    sources: list[SourceFile]
    counts: dict[str, int]
    labels: dict[str, int]
    declared_types: dict[str, int] = Field(default_factory=dict)  # defect_spec.jsonl's per-type counts
    lights: list[str]
    image_ext: str
    lights_note: str
    defect_spec: TrackedFile | None = None
    staging: dict[str, int]


class DefectSpecEntry(BaseModel):
    """One line of `defect_spec.jsonl`. Only `defect_type`, the optional `stems` and the optional `count` (how
    many of the pairs are of this type) matter here."""

    model_config = ConfigDict(extra="allow")

    defect_type: str
    stems: list[str] | None = None
    count: int | None = Field(default=None, ge=0)


# ---------------------------------------------------------------- pure helpers


def load_defect_spec(path: Path) -> list[DefectSpecEntry]:
    """Parse defect_spec.jsonl; a bad line is an InputError naming the file and line."""
    entries: list[DefectSpecEntry] = []
    refuse_special_file(path)
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = DefectSpecEntry.model_validate(loads_json(raw))
        except ValueError as exc:  # malformed, nested too deep, or not an entry (ValidationError)
            detail = str(exc).splitlines()[0]
            raise InputError(f"line {number} is not a defect entry: {detail}", file=path, row=number) from exc
        if not entry.defect_type.strip() or normalise_label(entry.defect_type) == PASS_LABEL:
            raise InputError(
                f"line {number}: defect_type {entry.defect_type!r} is not a defect label", file=path, row=number
            )
        entries.append(entry)
    return entries


def label_stems(stems: Iterable[str], entries: list[DefectSpecEntry]) -> dict[str, str]:
    """Label per stem: an entry listing the stem explicitly, else a defect_type appearing as a
    `_`-separated token of the stem, else by the entries' counts (`by_counts`), else the generic synthetic
    label."""
    explicit: dict[str, str] = {}
    for entry in entries:
        for stem in entry.stems or ():
            label = normalise_label(entry.defect_type)
            if explicit.setdefault(stem, label) != label:
                raise InputError(
                    f"stem '{stem}' is listed under two defect types ({explicit[stem]}, {label})",
                    file="defect_spec.jsonl",
                )
    by_token = {normalise_label(e.defect_type): normalise_label(e.defect_type) for e in entries}
    labels: dict[str, str] = {}
    for stem in stems:
        if stem in explicit:
            labels[stem] = explicit[stem]
            continue
        token_label = next((by_token[t] for t in stem.lower().split("_") if t in by_token), None)
        labels[stem] = token_label or GENERIC_LABEL
    return labels


def declared_types(entries: list[DefectSpecEntry]) -> dict[str, int]:
    """The per-type pair counts `defect_spec.jsonl` declares (entries with a `count`). They describe the pool;
    they do not say WHICH stem is which type, so no stem is labelled from them: a guessed split (by file
    order, say) would put wrong defect types into training rows and RCA's per-type figures."""
    out: dict[str, int] = {}
    for entry in entries:
        if entry.count is not None:
            label = normalise_label(entry.defect_type)
            out[label] = out.get(label, 0) + entry.count
    return dict(sorted(out.items()))


def label_counts_text(labels: dict[str, int], declared: dict[str, int] | None = None) -> str:
    """`open 30, short 21` — the labels of the staged synthetic pairs; where they are generic and
    defect_spec.jsonl declares per-type counts, those too (`synthetic_defect 150; declared: copper 29, …`)."""
    text = ", ".join(f"{label} {n}" for label, n in sorted(labels.items()))
    if declared and GENERIC_LABEL in labels:
        text += "; defect_spec.jsonl declares " + ", ".join(f"{t} {n}" for t, n in declared.items()) + \
            " (no stem names its type)"
    return text


def synth_rows(stems: list[str], labels: dict[str, str], run_rel: str) -> pd.DataFrame:
    """ChangeNet rows of the staged pool, in workspace coordinates."""
    from deft_aoi.workspace.changenet_csv import ChangeNetRow, rows_to_frame

    base = f"{run_rel}/synth_pool/images"
    return rows_to_frame(
        ChangeNetRow(
            input_path=f"{base}/synth_ng",
            golden_path=f"{base}/synth_ok",
            label=labels[stem],
            object_name=stem,
            project=SYNTH_PROJECT,
            boardname=SYNTH_BOARD,
        )
        for stem in stems
    )


def build_source_pool(mining_pool_ws: pd.DataFrame, sdg: pd.DataFrame) -> pd.DataFrame:
    """Real pool rows (already in workspace coordinates) + synthetic rows, tagged by `source`."""
    import pandas as pd

    real = mining_pool_ws.copy()
    real[SOURCE_COLUMN] = "mining_pool"
    synthetic = sdg.copy()
    synthetic[SOURCE_COLUMN] = "synthetic"
    pool = pd.concat([real, synthetic], ignore_index=True)
    return pool.fillna("").astype(str)


# ---------------------------------------------------------------- file placement


def _same_format(src_suffix: str, image_ext: str) -> bool:
    a, b = src_suffix.lower(), image_ext.lower()
    return a == b or (a in _JPEG_SUFFIXES and b in _JPEG_SUFFIXES)


def _link_or_copy(src: Path, dest: Path) -> str:
    try:
        os.link(src, dest)
        return "hardlinked"
    except OSError:
        # Cross-device or a filesystem without hard links.
        shutil.copy2(src, dest)
        return "copied"


def _reencode(src: Path, dest: Path, image_ext: str) -> None:
    from PIL import Image

    fmt = _PIL_FORMATS.get(image_ext.lower())
    if fmt is None:
        raise InputError(f"cannot re-encode synthetic images to '{image_ext}' (spec image_ext)", file=src)
    try:
        with Image.open(src) as img:
            img.load()
            out: Image.Image = img.convert("RGB") if fmt == "JPEG" and img.mode not in ("RGB", "L") else img
            buf = io.BytesIO()
            out.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    except OSError as exc:
        raise InputError(f"cannot decode synthetic image: {exc}", file=src) from exc
    atomic_write_bytes(dest, buf.getvalue())


def _place(src: Path, dests: list[Path], image_ext: str) -> str:
    """Put one source image at every light's path; re-encode once when the format differs."""
    if _same_format(src.suffix, image_ext):
        modes = [_link_or_copy(src, d) for d in dests]
        return "copied" if "copied" in modes else "hardlinked"
    _reencode(src, dests[0], image_ext)
    for extra in dests[1:]:
        _link_or_copy(dests[0], extra)
    return "reencoded"


def _workers() -> int:
    return min(16, (os.cpu_count() or 2) * 2)


# ---------------------------------------------------------------- staging


def synth_pool_dir(run_root: Path) -> Path:
    return Path(run_root) / stage_dir("stage_synth", BASELINE)


def manifest_path(run_root: Path) -> Path:
    return synth_pool_dir(run_root) / name("stage_synth.manifest")


def _check_sources(workspace: WorkspaceLayout) -> StemPairing:
    for folder in (workspace.synth_ng_dir, workspace.synth_ok_dir):
        if not folder.is_dir():
            raise HardStop("synth_missing", f"synthetic image directory not found: {folder}")
    pairing = pair_stems(workspace.synth_ng_dir, workspace.synth_ok_dir)
    for folder, side_empty in (
        (workspace.synth_ng_dir, not pairing.pairs and not pairing.unpaired_ng),
        (workspace.synth_ok_dir, not pairing.pairs and not pairing.unpaired_ok),
    ):
        if side_empty:
            raise HardStop("synth_missing", f"synthetic image directory is empty (no *.jpg|*.jpeg|*.png): {folder}")
    if pairing.unpaired_ng or pairing.unpaired_ok:
        raise HardStop(
            "synth_unpaired",
            f"synthetic NG/OK images are not paired 1-to-1 by stem — {pairing.describe_unpaired()}",
        )
    return pairing


def _tracked(path: Path, rel: str) -> TrackedFile:
    st = path.stat()
    return TrackedFile(rel=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256_file(path))


def stage_synth_pool(
    workspace: WorkspaceLayout, run_root: Path, spec: ChangeNetSpec, mining_pool: pd.DataFrame
) -> SynthManifest:
    """Stage the synthetic pairs and the source pool under `<run_root>/synth_pool/`.

    `mining_pool` is the pool as read from `augmentation/mining_pool/mining_pool.csv` (paths relative to
    that directory); it is rebased to workspace coordinates here. Re-staging replaces an earlier attempt.
    """
    from deft_aoi.io_utils import atomic_write_parquet
    from deft_aoi.workspace.changenet_csv import conform, rebase_paths, write_changenet_csv

    pairing = _check_sources(workspace)
    if len(mining_pool) == 0:
        raise HardStop("mining_pool_empty", f"the mining pool has no rows: {workspace.mining_pool_csv}")
    entries: list[DefectSpecEntry] = []
    defect_spec: TrackedFile | None = None
    if workspace.defect_spec.is_file():
        entries = load_defect_spec(workspace.defect_spec)
        defect_spec = _tracked(workspace.defect_spec, workspace.rel(workspace.defect_spec))

    try:
        run_rel = workspace.rel(run_root)
    except ValueError as exc:
        raise InputError(f"the run directory {run_root} is not inside the workspace {workspace.root}") from exc
    pool_dir = synth_pool_dir(run_root)
    manifest_path(run_root).unlink(missing_ok=True)  # a manifest only ever describes a finished staging
    images = pool_dir / "images"
    if images.exists():
        shutil.rmtree(images)
    ng_out, ok_out = images / "synth_ng", images / "synth_ok"
    ng_out.mkdir(parents=True)
    ok_out.mkdir(parents=True)

    lights, ext = list(spec.lights), spec.image_ext

    def stage_pair(pair: tuple[str, Path, Path]) -> tuple[SourceFile, SourceFile, str, str]:
        stem, ng, ok = pair
        records = []
        sides: tuple[tuple[Literal["ng", "ok"], Path], ...] = (("ng", ng), ("ok", ok))
        for side, src in sides:
            st = src.stat()
            records.append(
                SourceFile(rel=workspace.rel(src), side=side, stem=stem, size=st.st_size,
                           mtime_ns=st.st_mtime_ns, sha256=sha256_file(src))
            )
        ng_mode = _place(ng, [ng_out / f"{stem}_{light}{ext}" for light in lights], ext)
        ok_mode = _place(ok, [ok_out / f"{stem}_{light}{ext}" for light in lights], ext)
        return records[0], records[1], ng_mode, ok_mode

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        staged = list(pool.map(stage_pair, pairing.pairs))
    sources = [rec for ng_rec, ok_rec, _, _ in staged for rec in (ng_rec, ok_rec)]
    modes = Counter(mode for _, _, ng_mode, ok_mode in staged for mode in (ng_mode, ok_mode))

    stems = [stem for stem, _, _ in pairing.pairs]
    labels = label_stems(stems, entries)
    sdg = synth_rows(stems, labels, run_rel)
    real = rebase_paths(conform(mining_pool, file=workspace.mining_pool_csv), workspace.mining_pool_dir,
                        workspace.root)
    source_pool = build_source_pool(real, sdg)
    write_changenet_csv(sdg, pool_dir / name("stage_synth.sdg_rows"))
    write_changenet_csv(source_pool, pool_dir / name("stage_synth.source_pool_csv"))
    atomic_write_parquet(source_pool, pool_dir / name("stage_synth.source_pool"))

    note = (
        f"one synthetic image per pair serves every light ({', '.join(lights)})"
        if len(lights) > 1
        else f"single light {lights[0]}"
    )
    manifest = SynthManifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_rel=run_rel,
        ng_dir=workspace.rel(workspace.synth_ng_dir),
        ok_dir=workspace.rel(workspace.synth_ok_dir),
        sources=sources,
        counts={
            "pairs": len(stems),
            "sdg_rows": len(sdg),
            "mining_pool_rows": len(real),
            "source_pool_rows": len(source_pool),
            "images_per_side": len(stems) * len(lights),
        },
        labels=dict(sorted(Counter(labels.values()).items())),
        declared_types=declared_types(entries),
        lights=lights,
        image_ext=ext,
        lights_note=note,
        defect_spec=defect_spec,
        staging={k: modes.get(k, 0) for k in ("hardlinked", "copied", "reencoded")},
    )
    atomic_write_text(manifest_path(run_root), manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_manifest(run_root: Path) -> SynthManifest:
    path = manifest_path(run_root)
    if not path.is_file():
        raise HardStop("synth_missing", f"the synthetic pool was never staged for this run: {path} not found")
    try:
        return SynthManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise InputError(f"not a synthetic-pool manifest: {str(exc).splitlines()[0]}", file=path) from exc


# ---------------------------------------------------------------- verification


def _changed(path: Path, size: int, mtime_ns: int, sha256: str) -> bool:
    """Size decides; an mtime change alone is only a doubt, settled by the content hash."""
    st = path.stat()
    if st.st_size != size:
        return True
    if st.st_mtime_ns == mtime_ns:
        return False
    return sha256_file(path) != sha256


def source_changes(workspace: WorkspaceLayout, manifest: SynthManifest) -> list[str]:
    """Human-readable differences between the source folders now and the manifest (empty = unchanged)."""
    current: dict[str, Path] = {}
    changes: list[str] = []
    for folder in (workspace.root / manifest.ng_dir, workspace.root / manifest.ok_dir):
        if not folder.is_dir():
            changes.append(f"directory removed: {workspace.rel(folder) if folder.exists() else folder}")
            continue
        current.update({workspace.rel(p): p for p in list_images(folder).values()})
    recorded = {s.rel: s for s in manifest.sources}
    changes += [f"added: {rel}" for rel in sorted(current.keys() - recorded.keys())]
    changes += [f"removed: {rel}" for rel in sorted(recorded.keys() - current.keys())]
    common = sorted(current.keys() & recorded.keys())

    def check(rel: str) -> bool:
        s = recorded[rel]
        return _changed(current[rel], s.size, s.mtime_ns, s.sha256)

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        flags = list(pool.map(check, common))
    changes += [f"modified: {rel}" for rel, flag in zip(common, flags, strict=True) if flag]

    spec_now = workspace.defect_spec
    recorded_spec = manifest.defect_spec
    if recorded_spec is None and spec_now.is_file():
        changes.append(f"added: {workspace.rel(spec_now)}")
    elif recorded_spec is not None:
        spec_then = workspace.root / recorded_spec.rel
        if not spec_then.is_file():
            changes.append(f"removed: {recorded_spec.rel}")
        elif _changed(spec_then, recorded_spec.size, recorded_spec.mtime_ns, recorded_spec.sha256):
            changes.append(f"modified: {recorded_spec.rel}")
    return changes


def verify_synth_sources(workspace: WorkspaceLayout, run_root: Path) -> None:
    """Hard stop when the synthetic sources differ from what was staged for this run."""
    changes = source_changes(workspace, load_manifest(run_root))
    if changes:
        shown = "; ".join(changes[:_MAX_LISTED])
        more = f" (+{len(changes) - _MAX_LISTED} more)" if len(changes) > _MAX_LISTED else ""
        raise HardStop(
            "synth_changed",
            f"the synthetic pool changed on disk since it was staged ({len(changes)} change(s)): {shown}{more}",
            hint="start a fresh run to use the new synthetic images",
        )


# ---------------------------------------------------------------- per-iteration record and readers


def write_ingest_summary(run_root: Path, out_path: Path, iteration: str) -> dict[str, Any]:
    """`iterN/anomalygen/ingest_summary.json`: which staged pool this iteration consumed (no generator)."""
    manifest = load_manifest(run_root)
    mpath = manifest_path(run_root)
    pool_dir = synth_pool_dir(run_root)
    summary: dict[str, Any] = {
        "iteration": iteration,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator_launched": False,
        "manifest": str(mpath),
        "manifest_sha256": sha256_file(mpath),
        "manifest_created_at": manifest.created_at,
        "content_fingerprint": manifest_fingerprint(manifest),
        "sdg_rows_csv": str(pool_dir / name("stage_synth.sdg_rows")),
        "source_pool_parquet": str(pool_dir / name("stage_synth.source_pool")),
        "counts": manifest.counts,
        "labels": manifest.labels,
        "declared_types": manifest.declared_types,
        "lights": manifest.lights,
        "image_ext": manifest.image_ext,
    }
    atomic_write_text(Path(out_path), json.dumps(summary, indent=2) + "\n")
    return summary


def source_pool_path(run_root: Path) -> Path:
    return synth_pool_dir(run_root) / name("stage_synth.source_pool")


def load_source_pool(run_root: Path) -> pd.DataFrame:
    """The staged source pool (real + synthetic, workspace coordinates, `source` column)."""
    import pandas as pd

    path = source_pool_path(run_root)
    if not path.is_file():
        raise InputError("staged source pool not found (was the synthetic pool staged?)", file=path)
    df = pd.read_parquet(path)
    if SOURCE_COLUMN not in df.columns:
        raise InputError(f"no '{SOURCE_COLUMN}' column in the staged source pool", file=path)
    return df.fillna("").astype(str)


def manifest_fingerprint(manifest: SynthManifest) -> str:
    """A short identity of the staged content (independent of timestamps)."""
    digest_input = "\n".join(f"{s.rel}:{s.sha256}" for s in manifest.sources)
    return sha256_text(digest_input)[:16]

