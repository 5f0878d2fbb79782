"""Pool hygiene at pre-flight: every foreseeable leak into training, found before any GPU hour is spent.

Real pools are "all of production" and the KPI and validation sets are sampled from production, so pool
twins of held-out rows are the normal case. Checked here, against the validation and KPI rows:
- the mining pool, the synthetic NG/OK pairs and the base training set, by
  `key` (LEAKAGE_KEY in workspace coordinates, or as written in the two CSVs), `content` (sha256 of an input
  image, any light; single-colour images ignored, as in the validate stage) and `near_duplicate`
  (pixel-pair vectors, min(input cosine, golden cosine) ≥ threshold: pair-aware);
- duplicates inside the KPI set (they count twice in FAR);
- rows of the same `boardname` in training (base + pool) and KPI: a warning with the share of KPI rows.

Pool and synthetic findings are EXCLUSIONS: the mine stage drops them from the candidates. Base training
rows cannot be dropped (they are the customer's set): a key or content leak there fails pre-flight, since
the validate stage would hard-stop on it. Hashes go through a path+size+mtime cache and vectors through the
embedding cache, so a rerun on the same workspace re-hashes and re-embeds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.changenet_csv import ImageNaming
    from deft_aoi.workspace.layout import WorkspaceLayout

KINDS: tuple[str, ...] = ("key", "content", "near_duplicate")
EXCLUDED_SOURCES: tuple[str, ...] = ("mining_pool", "synthetic")
FINDING_COLUMNS: tuple[str, ...] = (
    "source", "file", "row", "input_path", "golden_path", "object_name", "label", "kind",
    "twin_set", "twin_file", "twin_row", "twin_input_path", "twin_object_name", "similarity",
)
_SHOWN = 10


@dataclass
class RowSet:
    """Rows of one file: workspace-coordinate frame, as-written frame (None: no meaningful one) and the
    image files per row (`row` position, `light`, `side`, `path`, as `image_paths` returns them)."""

    name: str
    file: str
    frame: pd.DataFrame
    written: pd.DataFrame | None
    files: pd.DataFrame
    row_ids: list[str]


@dataclass
class HygieneResult:
    findings: pd.DataFrame  # FINDING_COLUMNS; source ∈ mining_pool, synthetic, training, kpi
    threshold: float
    encoder: str  # the near-duplicate encoder's fingerprint, described
    encoder_id: str
    n_rows: dict[str, int] = field(default_factory=dict)
    same_board: dict[str, Any] = field(default_factory=dict)
    embedded: int = 0  # pairs embedded now (0 on a rerun: all from the cache)
    cached: int = 0
    hashed: int = 0  # files hashed now (0 on a rerun)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exclusions(self) -> pd.DataFrame:
        return self.findings[self.findings["source"].isin(EXCLUDED_SOURCES)].reset_index(drop=True)

    def counts(self) -> dict[str, dict[str, int]]:
        """{source: {kind: rows}} for every source and kind (zeros included)."""
        out: dict[str, dict[str, int]] = {}
        for source in (*EXCLUDED_SOURCES, "training", "kpi"):
            part = self.findings[self.findings["source"] == source]
            out[source] = {kind: int((part["kind"] == kind).sum()) for kind in KINDS}
        return out

    def config(self) -> dict[str, Any]:
        """What the run config records about these checks."""
        return {"near_duplicate_threshold": self.threshold, "near_duplicate_encoder": self.encoder,
                "near_duplicate_metric": "min(input cosine, golden cosine)", "content": "sha256 of input images",
                "key": "input_path, golden_path, label, object_name, boardname"}


# ---------------------------------------------------------------- row sets


def _csv_set(name: str, df: pd.DataFrame, file: Path, images_dir: Path, layout: WorkspaceLayout,
             spec: ImageNaming) -> RowSet:
    from deft_aoi.workspace.changenet_csv import image_paths, rebase_paths

    frame = rebase_paths(df, images_dir, layout.root).reset_index(drop=True)
    return RowSet(name=name, file=layout.rel(file), frame=frame, written=df.reset_index(drop=True),
                  files=image_paths(frame, layout.root, spec.lights, spec.image_ext),
                  row_ids=[str(pos + 2) for pos in range(len(frame))])


def _synthetic_set(layout: WorkspaceLayout, spec: ImageNaming) -> RowSet | None:
    """The customer's NG/OK pairs as rows: NG = input, OK = golden, one file serving every light."""
    import pandas as pd

    from deft_aoi.synth.pairing import pair_stems

    if not (layout.synth_ng_dir.is_dir() and layout.synth_ok_dir.is_dir()):
        return None
    pairs = pair_stems(layout.synth_ng_dir, layout.synth_ok_dir).pairs
    if not pairs:
        return None
    ng_dir, ok_dir = layout.rel(layout.synth_ng_dir), layout.rel(layout.synth_ok_dir)
    frame = pd.DataFrame({"input_path": ng_dir, "golden_path": ok_dir, "label": "",
                          "object_name": [stem for stem, _, _ in pairs], "boardname": ""})
    files = pd.DataFrame([
        {"row": pos, "light": light, "side": side, "path": str(path)}
        for side, index in (("input", 1), ("golden", 2))
        for light in spec.lights
        for pos, pair in enumerate(pairs)
        for path in [pair[index]]
    ])
    return RowSet(name="synthetic", file=ng_dir, frame=frame, written=None, files=files,
                  row_ids=[layout.rel(ng) for _, ng, _ in pairs])


# ---------------------------------------------------------------- matching (pure over the tables)


def _first_light(files: pd.DataFrame, side: str, light: str) -> pd.DataFrame:
    part = files[(files["side"] == side) & (files["light"] == light)]
    return part.sort_values("row")


def _key_hits(cand: RowSet, refs: Sequence[RowSet]) -> dict[int, tuple[int, int]]:
    """cand position → (ref set index, ref position), first match wins; both coordinate spaces."""
    from deft_aoi.analysis.leakage import key_matches

    hits: dict[int, tuple[int, int]] = {}
    for r_idx, ref in enumerate(refs):
        pairs = [(cand.frame, ref.frame)]
        if cand.written is not None and ref.written is not None:
            pairs.append((cand.written, ref.written))
        for left, right in pairs:
            for t, r in key_matches(left, right).itertuples(index=False):
                hits.setdefault(int(t), (r_idx, int(r)))
    return hits


def _content_hits(cand: RowSet, refs: Sequence[RowSet], sha: dict[str, str | None],
                  featureless: dict[str, bool]) -> dict[int, tuple[int, int, str]]:
    """cand position → (ref set index, ref position, light) sharing an input image's sha256."""
    ref_by_sha: dict[str, tuple[int, int]] = {}
    for r_idx, ref in enumerate(refs):
        inputs = ref.files[ref.files["side"] == "input"]
        for pos, path in zip(inputs["row"].to_numpy(), inputs["path"].to_numpy(), strict=True):
            digest = sha.get(path)
            if digest:
                ref_by_sha.setdefault(digest, (r_idx, int(pos)))
    hits: dict[int, tuple[int, int, str]] = {}
    inputs = cand.files[cand.files["side"] == "input"]
    for pos, light, path in zip(inputs["row"].to_numpy(), inputs["light"].to_numpy(), inputs["path"].to_numpy(),
                                strict=True):
        digest = sha.get(path)
        if digest and digest in ref_by_sha and int(pos) not in hits and not featureless.get(digest, False):
            r_idx, r_pos = ref_by_sha[digest]
            hits[int(pos)] = (r_idx, r_pos, str(light))
    return hits


def _finding(cand: RowSet, pos: int, kind: str, ref: RowSet, ref_pos: int, similarity: float) -> dict[str, Any]:
    row, twin = cand.frame.iloc[pos], ref.frame.iloc[ref_pos]
    return {
        "source": cand.name, "file": cand.file, "row": cand.row_ids[pos], "input_path": row["input_path"],
        "golden_path": row["golden_path"], "object_name": row["object_name"], "label": row["label"],
        "kind": kind, "twin_set": ref.name, "twin_file": ref.file, "twin_row": ref.row_ids[ref_pos],
        "twin_input_path": twin["input_path"], "twin_object_name": twin["object_name"],
        "similarity": round(float(similarity), 6),
    }


# ---------------------------------------------------------------- I/O: hashing and embedding


def _hash_all(paths: list[str], layout: WorkspaceLayout) -> tuple[dict[str, str | None], int]:
    from deft_aoi.analysis.validation import hash_files, load_hash_cache, save_hash_cache
    from deft_aoi.workspace.stored_paths import resolve_path, store_path

    # Keyed workspace-relative on disk: a copied workspace never looks up (or names) the original's files.
    cache = {resolve_path(k, layout.root): v for k, v in load_hash_cache(layout.hash_cache).items()}
    before = dict(cache)
    unique = list(dict.fromkeys(paths))
    digests = dict(zip(unique, hash_files(unique, cache), strict=True))
    fresh = sum(1 for p in unique if before.get(p) != cache.get(p))
    if fresh:
        try:
            layout.hash_cache.parent.mkdir(parents=True, exist_ok=True)
            save_hash_cache({store_path(k, layout.root): v for k, v in cache.items()}, layout.hash_cache)
        except OSError:
            pass  # a read-only workspace: the cache is an optimisation, the check still runs
    return digests, fresh


def _pair_vectors(sets: Sequence[RowSet], light: str, sha: dict[str, str | None], layout: WorkspaceLayout
                  ) -> tuple[list[np.ndarray], Any, int, int]:
    """Pixel-pair vectors per set (first light), through the embedding cache keyed like mining's."""
    import numpy as np

    from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache, pair_key
    from deft_aoi.mining.embedders.pixels import PixelPairEmbedder

    embedder = PixelPairEmbedder()
    inputs: list[str] = []
    goldens: list[str] = []
    keys: list[str] = []
    sizes = []
    for s in sets:
        ins = _first_light(s.files, "input", light)["path"].tolist()
        gos = _first_light(s.files, "golden", light)["path"].tolist()
        for i, g in zip(ins, gos, strict=True):
            di, dg = sha.get(i), sha.get(g)
            if not di or not dg:
                raise InputError("image unreadable while checking for near duplicates", file=i if not di else g)
            inputs.append(i)
            goldens.append(g)
            keys.append(pair_key(bytes.fromhex(di), bytes.fromhex(dg)))
        sizes.append(len(ins))
    cache = EmbeddingCache(layout.embedding_cache, embedder.fingerprint)
    try:
        vectors, stats = embed_with_cache(inputs, goldens, embedder, cache, keys=keys)
        embedded, cached = stats.embedded, stats.cached
    except OSError:  # a read-only workspace: embed without the cache
        vectors, embedded, cached = embedder.embed(inputs, goldens), len(inputs), 0
    bounds = np.cumsum([0, *sizes])
    return ([vectors[bounds[k] : bounds[k + 1]] for k in range(len(sets))], embedder.fingerprint, embedded, cached)


# ---------------------------------------------------------------- entry point


def check_hygiene(
    layout: WorkspaceLayout,
    spec: ImageNaming,
    frames: dict[str, pd.DataFrame],
    *,
    threshold: float,
) -> HygieneResult:
    """Find every leak of validation/KPI rows into what the loop may train on (see the module doc).

    `frames` are the CSVs as pre-flight read them: `training`, `validation`, `kpi`, `mining_pool`.
    """
    import numpy as np
    import pandas as pd

    from deft_aoi.analysis.leakage import pair_near_duplicates
    from deft_aoi.analysis.validation import is_featureless

    if not 0.0 < threshold <= 1.0:
        raise InputError(f"near-duplicate threshold {threshold} must be in (0, 1]")
    for needed in ("validation", "kpi"):
        if needed not in frames:
            raise InputError(f"the {needed} CSV is unreadable: nothing to check leakage against")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    refs = [_csv_set("validation", frames["validation"], layout.validation_csv, layout.kpi_images, layout, spec),
            _csv_set("kpi", frames["kpi"], layout.kpi_csv, layout.kpi_images, layout, spec)]
    cands: list[RowSet] = []
    if "mining_pool" in frames:
        cands.append(_csv_set("mining_pool", frames["mining_pool"], layout.mining_pool_csv, layout.mining_pool_dir,
                              layout, spec))
    synthetic = _synthetic_set(layout, spec)
    if synthetic is not None:
        cands.append(synthetic)
    if "training" in frames:
        cands.append(_csv_set("training", frames["training"], layout.train_csv, layout.kpi_images, layout, spec))
    every = [*refs, *cands]
    light = spec.lights[0]
    wanted = [p for s in every for p in s.files.loc[s.files["side"] == "input", "path"]]
    wanted += [p for s in every for p in _first_light(s.files, "golden", light)["path"]]
    sha, hashed = _hash_all(wanted, layout)
    timings["hash_s"] = time.perf_counter() - start

    # Decode only contents that occur in two places (usually few) to set single-colour images aside.
    start = time.perf_counter()
    counts = pd.Series([d for s in every for d in (sha.get(p) for p in s.files.loc[s.files["side"] == "input", "path"])
                        if d]).value_counts()
    shared = set(counts[counts > 1].index)
    first_path: dict[str, str] = {}
    for path, digest in sha.items():
        if digest is not None and digest in shared:
            first_path.setdefault(digest, path)
    featureless = {digest: is_featureless(path) for digest, path in first_path.items()}
    timings["featureless_s"] = time.perf_counter() - start

    start = time.perf_counter()
    vectors, fingerprint, embedded, cached = _pair_vectors(every, light, sha, layout)
    timings["embed_s"] = time.perf_counter() - start
    ref_vectors = np.concatenate(vectors[: len(refs)])
    owners = [(r_idx, pos) for r_idx, ref in enumerate(refs) for pos in range(len(ref.frame))]

    start = time.perf_counter()
    findings: list[dict[str, Any]] = []
    for c_idx, cand in enumerate(cands):
        keyed = _key_hits(cand, refs) if cand.name != "synthetic" else {}
        content = _content_hits(cand, refs, sha, featureless)
        near = pair_near_duplicates(vectors[len(refs) + c_idx], ref_vectors, threshold)
        for pos in sorted(keyed):
            r_idx, r_pos = keyed[pos]
            findings.append(_finding(cand, pos, "key", refs[r_idx], r_pos, 1.0))
        for pos in sorted(set(content) - set(keyed)):
            r_idx, r_pos, _ = content[pos]
            findings.append(_finding(cand, pos, "content", refs[r_idx], r_pos, 1.0))
        for t, r, cos in near.itertuples(index=False):
            if int(t) in keyed or int(t) in content:
                continue
            r_idx, r_pos = owners[int(r)]
            findings.append(_finding(cand, int(t), "near_duplicate", refs[r_idx], r_pos, float(cos)))
    findings += _kpi_duplicates(refs[1], vectors[1], sha, featureless, threshold)
    timings["match_s"] = time.perf_counter() - start

    result = HygieneResult(
        findings=pd.DataFrame(findings, columns=list(FINDING_COLUMNS)).astype({"similarity": float}),
        threshold=threshold, encoder_id=fingerprint.id,
        encoder=f"{fingerprint.name} v{fingerprint.version} ({fingerprint.id}, dim {fingerprint.dim})",
        n_rows={s.name: len(s.frame) for s in every}, embedded=embedded, cached=cached, hashed=hashed,
        timings=timings,
    )
    result.same_board = _same_board(refs[1], [c for c in cands if c.name in ("mining_pool", "training")])
    return result


def _kpi_duplicates(kpi: RowSet, vectors: np.ndarray, sha: dict[str, str | None], featureless: dict[str, bool],
                    threshold: float) -> list[dict[str, Any]]:
    """Later KPI rows that repeat an earlier one (by key, input pixels, or near duplicate)."""
    from deft_aoi.analysis.leakage import pair_near_duplicates, row_keys

    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    keys = row_keys(kpi.frame)
    first_by_key: dict[str, int] = {}
    for pos, key in enumerate(keys):
        if key in first_by_key:
            out.append(_finding(kpi, pos, "key", kpi, first_by_key[key], 1.0))
            seen.add(pos)
        else:
            first_by_key[key] = pos
    first_by_sha: dict[str, int] = {}
    inputs = kpi.files[kpi.files["side"] == "input"]
    for pos, path in zip(inputs["row"].to_numpy(), inputs["path"].to_numpy(), strict=True):
        digest, pos = sha.get(path), int(pos)
        if not digest or featureless.get(digest, False):
            continue
        if digest in first_by_sha and first_by_sha[digest] != pos:
            if pos not in seen:
                out.append(_finding(kpi, pos, "content", kpi, first_by_sha[digest], 1.0))
                seen.add(pos)
        else:
            first_by_sha.setdefault(digest, pos)
    near = pair_near_duplicates(vectors, vectors, threshold, exclude_self=True)
    for t, r, cos in near.itertuples(index=False):
        # Each twin pair shows up from both sides: report the later row only.
        if int(t) > int(r) and int(t) not in seen:
            out.append(_finding(kpi, int(t), "near_duplicate", kpi, int(r), float(cos)))
            seen.add(int(t))
    return out


def _same_board(kpi: RowSet, training: Sequence[RowSet]) -> dict[str, Any]:
    """KPI rows whose `boardname` also occurs in the base training set or the mining pool (a warning)."""
    boards: set[str] = set()
    for s in training:
        values = s.frame["boardname"].fillna("").astype(str).str.strip()
        boards.update(v for v in values if v)
    kpi_boards = kpi.frame["boardname"].fillna("").astype(str).str.strip()
    affected = kpi_boards.isin(list(boards)) & (kpi_boards != "")
    n = len(kpi_boards)
    return {"kpi_rows": int(affected.sum()), "kpi_total": n, "share": (float(affected.sum()) / n) if n else 0.0,
            "boards": sorted(set(kpi_boards[affected])), "unnamed_kpi_rows": int((kpi_boards == "").sum())}


# ---------------------------------------------------------------- the list and its use


def write_findings(result: HygieneResult, path: Path) -> None:
    """The exclusion list (pool and synthetic rows only): one row per excluded row, with its twin."""
    from deft_aoi.io_utils import atomic_write_csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(result.exclusions, Path(path))


def read_exclusions(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the pool exclusion list: {exc}", file=path) from exc
    missing = [c for c in ("source", "input_path", "golden_path", "object_name") if c not in df.columns]
    if missing:
        raise InputError(f"pool exclusion list lacks column(s) {', '.join(missing)}", file=path)
    return df


def describe_finding(row: pd.Series | dict[str, Any]) -> str:
    how = {"key": "same key", "content": "same input pixels",
           "near_duplicate": f"near duplicate, cosine {float(row['similarity']):.4f}"}[str(row["kind"])]
    where = f"row {row['row']}" if row["source"] != "synthetic" else f"{row['row']}"
    return (f"{row['file']} {where} ({row['input_path']}/{row['object_name']}) = {row['twin_set']} "
            f"{row['twin_file']} row {row['twin_row']} ({row['twin_input_path']}/{row['twin_object_name']}) "
            f"by {how}")


def listing(findings: pd.DataFrame, limit: int = _SHOWN) -> str:
    shown = "; ".join(describe_finding(r) for _, r in findings.head(limit).iterrows())
    more = f"; (+{len(findings) - limit} more)" if len(findings) > limit else ""
    return shown + more
