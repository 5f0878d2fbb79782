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

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.analysis.leakage import PairReference, key_matches, pair_near_duplicates, row_keys
from deft_aoi.analysis.validation import is_featureless
from deft_aoi.errors import InputError
from deft_aoi.io_utils import atomic_open, atomic_write_csv, atomic_write_text
from deft_aoi.mining.ann import RECALL_SAMPLE
from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache, pair_key
from deft_aoi.mining.embedders.pixels import SIZE, PixelPairEmbedder
from deft_aoi.preflight.manifest import ImageManifest
from deft_aoi.preflight.pool_stream import ChunkExecutor, embed_pairs
from deft_aoi.synth.pairing import pair_stems
from deft_aoi.workspace.changenet_csv import ImageNaming, image_paths, rebase_paths

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.workspace.layout import WorkspaceLayout

KINDS: tuple[str, ...] = ("key", "content", "near_duplicate")
EXCLUDED_SOURCES: tuple[str, ...] = ("mining_pool", "synthetic")
FINDING_COLUMNS: tuple[str, ...] = (
    "source", "file", "row", "input_path", "golden_path", "object_name", "label", "kind",
    "twin_set", "twin_file", "twin_row", "twin_input_path", "twin_object_name", "similarity",
)
_SHOWN = 10
_RESULT_VERSION = "1"  # bump when what a cached pool-chunk result holds or means changes


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
    # The candidate search: kind (exact | ivf), k, and for ivf its measured recall@k on `queries` pool rows.
    index: dict[str, Any] = field(default_factory=dict)

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
    """A CSV's rows (or one chunk of them: `df.index` holds the rows' positions in the file)."""

    first = int(df.index[0]) if len(df) else 0
    frame = rebase_paths(df, images_dir, layout.root).reset_index(drop=True)
    return RowSet(name=name, file=layout.rel(file), frame=frame, written=df.reset_index(drop=True),
                  files=image_paths(frame, layout.root, spec.lights, spec.image_ext),
                  row_ids=[str(first + pos + 2) for pos in range(len(frame))])


def _synthetic_set(layout: WorkspaceLayout, spec: ImageNaming) -> RowSet | None:
    """The customer's NG/OK pairs as rows: NG = input, OK = golden, one file serving every light."""
    import pandas as pd


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

    hits: dict[int, tuple[int, int]] = {}
    for r_idx, ref in enumerate(refs):
        pairs = [(cand.frame, ref.frame)]
        if cand.written is not None and ref.written is not None:
            pairs.append((cand.written, ref.written))
        for left, right in pairs:
            for t, r in key_matches(left, right).itertuples(index=False):
                hits.setdefault(int(t), (r_idx, int(r)))
    return hits


def _ref_digests(refs: Sequence[RowSet], sha: dict[str, str | None]) -> pd.DataFrame:
    """The build side of the content hash join: `digest` → first (`r_idx`, `r_pos`) holding it as an input."""
    import pandas as pd

    parts = []
    for r_idx, ref in enumerate(refs):
        inputs = ref.files[ref.files["side"] == "input"]
        parts.append(pd.DataFrame({"digest": inputs["path"].map(sha).to_numpy(), "r_idx": r_idx,
                                   "r_pos": inputs["row"].to_numpy()}))
    table = pd.concat(parts, ignore_index=True)
    table = table[table["digest"].notna() & (table["digest"] != "")]
    return table.drop_duplicates("digest", keep="first").reset_index(drop=True)


def _content_hits(cand: RowSet, ref_table: pd.DataFrame, sha: dict[str, str | None],
                  featureless: Callable[[str, str], bool]) -> dict[int, tuple[int, int]]:
    """cand position → (ref set index, ref position) sharing an input image's sha256: a hash join of the
    candidate's input digests on `ref_table`, first matching light per row in file order."""
    inputs = cand.files[cand.files["side"] == "input"]
    probe = inputs.assign(digest=inputs["path"].map(sha), order=range(len(inputs)))
    joined = probe.merge(ref_table, on="digest", how="inner").sort_values("order")
    if joined.empty:
        return {}
    # Single-colour images carry no identity (decoded only for the few digests that matched).
    keep = [not featureless(str(d), str(p)) for d, p in zip(joined["digest"], joined["path"], strict=True)]
    joined = joined[keep].drop_duplicates("row", keep="first")
    return {int(pos): (int(r), int(rp)) for pos, r, rp in
            zip(joined["row"].to_numpy(), joined["r_idx"].to_numpy(), joined["r_pos"].to_numpy(), strict=True)}


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


class _Hasher:
    """Digests through the image manifest (a warm run stats and reads nothing), misses hashed on the executor."""

    def __init__(self, layout: WorkspaceLayout, executor: ChunkExecutor) -> None:

        self.manifest = ImageManifest(layout.image_manifest)
        self.executor = executor
        self.hashed = 0

    def __call__(self, paths: Sequence[str], *, pixels: int = 0) -> dict[str, str | None]:
        """Digests of `paths`; with `pixels`, the files read now are decoded too (`self.decoded`)."""
        digests, fresh = self.manifest.digests(paths, self.executor.map, batches=self.executor.parts,
                                               pixels=pixels)
        self.hashed += fresh
        return digests

    @property
    def decoded(self) -> dict[str, np.ndarray]:
        return self.manifest.decoded

    def save(self) -> None:
        with contextlib.suppress(OSError):  # a read-only workspace: the manifest is an optimisation
            self.manifest.save()


def _wanted(s: RowSet, light: str) -> list[str]:
    """The files a set's checks read: every input image (content, any light), the first light's goldens."""
    return [*s.files.loc[s.files["side"] == "input", "path"], *_first_light(s.files, "golden", light)["path"]]


def _pairs(s: RowSet, light: str, sha: dict[str, str | None]) -> tuple[list[str], list[str], list[bytes]]:
    """(inputs, goldens, raw pair digests) of a set's first light; an unreadable image is an InputError."""
    ins = _first_light(s.files, "input", light)["path"].tolist()
    gos = _first_light(s.files, "golden", light)["path"].tolist()
    raw: list[bytes] = []
    for i, g in zip(ins, gos, strict=True):
        di, dg = sha.get(i), sha.get(g)
        if not di or not dg:
            raise InputError("image unreadable while checking for near duplicates", file=i if not di else g)
        raw.append(bytes.fromhex(di) + bytes.fromhex(dg))
    return ins, gos, raw


def _pair_vectors(sets: Sequence[RowSet], light: str, sha: dict[str, str | None], layout: WorkspaceLayout
                  ) -> tuple[list[np.ndarray], Any, int, int]:
    """Pixel-pair vectors per set (first light), through the embedding cache keyed like mining's."""
    import numpy as np


    embedder = PixelPairEmbedder()
    inputs: list[str] = []
    goldens: list[str] = []
    keys: list[str] = []
    sizes = []
    for s in sets:
        ins, gos, raw = _pairs(s, light, sha)
        inputs += ins
        goldens += gos
        keys += [pair_key(r[:32], r[32:]) for r in raw]
        sizes.append(len(ins))
    cache = EmbeddingCache(layout.embedding_cache, embedder.fingerprint)
    try:
        vectors, stats = embed_with_cache(inputs, goldens, embedder, cache, keys=keys)
        embedded, cached = stats.embedded, stats.cached
    except OSError:  # a read-only workspace: embed without the cache
        vectors, embedded, cached = embedder.embed(inputs, goldens), len(inputs), 0
    bounds = np.cumsum([0, *sizes])
    return ([vectors[bounds[k] : bounds[k + 1]] for k in range(len(sets))], embedder.fingerprint, embedded, cached)


class _ChunkCache:
    """Per-chunk caches of the streamed pool under `.deft_cache/preflight/`: the chunk's pixel-pair vectors
    (keyed by its pairs' contents and the encoder) and its match results (keyed by the chunk's rows and
    contents, the references and the threshold). A warm run on an unchanged pool reads only the small result
    files; a changed KPI/validation set reuses the vectors. Files this run did not use are pruned at the end,
    so the caches stay the size of the current pool."""

    def __init__(self, root: Path, encoder_id: str) -> None:
        self.vectors = root / "vectors" / encoder_id
        self.results = root / "results"
        self.used: set[Path] = set()
        self.writable = True

    def load_result(self, key: str) -> dict[str, Any] | None:
        import json

        path = self.results / f"{key}.json"
        try:
            doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        self.used.add(path)
        return doc

    def save_result(self, key: str, doc: dict[str, Any]) -> None:
        import json


        path = self.results / f"{key}.json"
        self.used.add(path)
        if self.writable:
            try:
                atomic_write_text(path, json.dumps(doc))
            except OSError:
                self.writable = False  # a read-only workspace: the caches are an optimisation

    def keep_vectors(self, key: str) -> None:
        """The vectors of a chunk whose result was reused stay for a rerun against changed references."""
        self.used.add(self.vectors / f"{key}.npy")

    def load_vectors(self, key: str) -> np.ndarray | None:
        import numpy as np

        path = self.vectors / f"{key}.npy"
        try:
            out: np.ndarray = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        self.used.add(path)
        return out

    def save_vectors(self, key: str, vectors: np.ndarray) -> None:
        import numpy as np


        path = self.vectors / f"{key}.npy"
        self.used.add(path)
        if self.writable:
            try:
                with atomic_open(path, "wb") as fh:
                    np.save(fh, vectors, allow_pickle=False)
            except OSError:
                self.writable = False

    def prune(self) -> None:
        for folder in (self.vectors, self.results):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path not in self.used and path.suffix in (".npy", ".json"):
                    with contextlib.suppress(OSError):
                        path.unlink()


def _digest_of(*parts: bytes | str) -> str:
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x1e")
    return h.hexdigest()[:40]


def _frame_digest(df: pd.DataFrame) -> bytes:
    import pandas as pd

    return pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()


@dataclass
class _Matches:
    """Findings of one candidate source, by kind, in row order (chunks appended in file order)."""

    key: list[dict[str, Any]] = field(default_factory=list)
    content: list[dict[str, Any]] = field(default_factory=list)
    near: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: _Matches) -> None:
        self.key += other.key
        self.content += other.content
        self.near += other.near

    def rows(self) -> list[dict[str, Any]]:
        return [*self.key, *self.content, *self.near]


@dataclass
class _References:
    """The validation and KPI rows every candidate is matched against, prepared once."""

    sets: list[RowSet]
    sha: dict[str, str | None]
    digests: pd.DataFrame  # _ref_digests
    index: PairReference
    owners: list[tuple[int, int]]
    key: str  # what a cached chunk result depends on besides the chunk itself


def _match(cand: RowSet, vectors: np.ndarray, refs: _References, sha: dict[str, str | None],
           featureless: Callable[[str, str], bool], threshold: float) -> _Matches:
    """One candidate set (or pool chunk) against the references: key join, content hash join, faiss search."""
    keyed = _key_hits(cand, refs.sets) if cand.name != "synthetic" else {}
    content = _content_hits(cand, refs.digests, sha, featureless)
    near = refs.index.search(vectors, threshold)
    out = _Matches()
    for pos in sorted(keyed):
        r_idx, r_pos = keyed[pos]
        out.key.append(_finding(cand, pos, "key", refs.sets[r_idx], r_pos, 1.0))
    for pos in sorted(set(content) - set(keyed)):
        r_idx, r_pos = content[pos]
        out.content.append(_finding(cand, pos, "content", refs.sets[r_idx], r_pos, 1.0))
    for t, r, cos in near.itertuples(index=False):
        if int(t) in keyed or int(t) in content:
            continue
        r_idx, r_pos = refs.owners[int(r)]
        out.near.append(_finding(cand, int(t), "near_duplicate", refs.sets[r_idx], r_pos, float(cos)))
    return out


@dataclass
class _PoolScan:
    """What the streamed pool adds up to."""

    matches: _Matches = field(default_factory=_Matches)
    rows: int = 0
    boards: set[str] = field(default_factory=set)
    embedded: int = 0
    cached: int = 0
    recall: float | None = None
    recall_queries: int = 0


def _boards(frame: pd.DataFrame) -> set[str]:
    values = frame["boardname"].fillna("").astype(str).str.strip()
    return {v for v in values.unique() if v}


def _scan_pool(chunks: Iterable[pd.DataFrame], layout: WorkspaceLayout, spec: ImageNaming, refs: _References,
               hasher: _Hasher, executor: ChunkExecutor, featureless: Callable[[str, str], bool],
               threshold: float, timings: dict[str, float]) -> _PoolScan:
    """Stream the pool chunk by chunk: hash (manifest), embed (chunk vector cache), match (chunk result cache)."""
    import numpy as np


    encoder_id = PixelPairEmbedder().fingerprint.id
    cache = _ChunkCache(layout.preflight_cache, encoder_id)
    scan = _PoolScan()
    light = spec.lights[0]
    it = iter(chunks)
    while True:
        start = time.perf_counter()
        df = next(it, None)
        if df is None:
            break
        pool = _csv_set("mining_pool", df, layout.mining_pool_csv, layout.mining_pool_dir, layout, spec)
        timings["read_s"] = timings.get("read_s", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        # One read per new image: hashed for the manifest and decoded for the pixel-pair vectors together.
        sha = hasher(_wanted(pool, light), pixels=SIZE)
        ins, gos, raw = _pairs(pool, light, sha)
        timings["hash_s"] += time.perf_counter() - start
        scan.rows += len(pool.frame)
        scan.boards |= _boards(pool.frame)
        pair_digests = b"".join(raw)
        vec_key = _digest_of(encoder_id, pair_digests)
        # only the checked light's files are hashed: another light's input (num_input >= 2) counts as "-" (a
        # Series.map over the dict gave NaN there, a float that broke the join)
        all_inputs = "".join(sha.get(p) or "-" for p in pool.files.loc[pool.files["side"] == "input", "path"])
        result_key = _digest_of(refs.key, vec_key, all_inputs, _frame_digest(df), pool.file,
                                layout.rel(layout.mining_pool_dir))
        unique = len(set(raw))
        done = cache.load_result(result_key)
        if done is not None:
            scan.matches.extend(_Matches(done["key"], done["content"], done["near"]))
            scan.cached += unique
            cache.keep_vectors(vec_key)
            if done.get("recall") is not None and scan.recall is None:
                scan.recall, scan.recall_queries = float(done["recall"]), int(done["recall_queries"])
            continue
        start = time.perf_counter()
        vectors = cache.load_vectors(vec_key)
        if vectors is None or vectors.shape != (len(ins), refs.index.dim):
            codes, first = np.unique(np.asarray(raw, dtype="S64"), return_index=True, return_inverse=True)[1:]
            vectors = embed_pairs(executor, [ins[j] for j in codes], [gos[j] for j in codes],
                                  decoded=hasher.decoded)[first]
            cache.save_vectors(vec_key, vectors)
            scan.embedded += unique
        else:
            scan.cached += unique
        timings["embed_s"] += time.perf_counter() - start
        start = time.perf_counter()
        doc: dict[str, Any] = {}
        if scan.recall is None and (recall := refs.index.measure_recall(vectors)) is not None:
            # IVF candidates: recall@k against the exact search on a sample of this chunk, as mining measures it.
            scan.recall, scan.recall_queries = recall, min(len(vectors), RECALL_SAMPLE)
            doc = {"recall": recall, "recall_queries": scan.recall_queries}
        found = _match(pool, vectors, refs, sha, featureless, threshold)
        scan.matches.extend(found)
        cache.save_result(result_key, {"key": found.key, "content": found.content, "near": found.near, **doc})
        timings["match_s"] += time.perf_counter() - start
    cache.prune()
    return scan


# ---------------------------------------------------------------- entry point


def check_hygiene(
    layout: WorkspaceLayout,
    spec: ImageNaming,
    frames: dict[str, pd.DataFrame],
    *,
    threshold: float,
    pool_chunks: Callable[[], Iterable[pd.DataFrame]] | None = None,
    executor: str = "inprocess",
    index: str = "auto",
    ivf_min_rows: int | None = None,
) -> HygieneResult:
    """Find every leak of validation/KPI rows into what the loop may train on (see the module doc).

    `frames` are the small CSVs as pre-flight read them: `training`, `validation`, `kpi`. The mining pool
    streams from `pool_chunks` (e.g. `iter_changenet_csv(pool_csv, chunk_rows_for_budget(budget))`), or is
    `frames["mining_pool"]` taken as one chunk. `executor`: the mining executor hashing and decoding run on.
    `index`/`ivf_min_rows`: the candidate search over the references (`analysis.leakage.PairReference`).
    """
    import numpy as np
    import pandas as pd


    if not 0.0 < threshold <= 1.0:
        raise InputError(f"near-duplicate threshold {threshold} must be in (0, 1]")
    for needed in ("validation", "kpi"):
        if needed not in frames:
            raise InputError(f"the {needed} CSV is unreadable: nothing to check leakage against")
    if pool_chunks is None and "mining_pool" in frames:
        whole = frames["mining_pool"].reset_index(drop=True)
        pool_chunks = lambda: [whole]  # noqa: E731 - the in-memory pool is its own single chunk
    timings: dict[str, float] = {"hash_s": 0.0, "featureless_s": 0.0, "embed_s": 0.0, "match_s": 0.0}
    memo: dict[str, bool] = {}

    def featureless(digest: str, path: str) -> bool:
        # Decoded only for contents that occur in two places (a match), usually few.
        if digest not in memo:
            begin = time.perf_counter()
            memo[digest] = is_featureless(path)
            timings["featureless_s"] += time.perf_counter() - begin
        return memo[digest]

    with ChunkExecutor(executor) as run_on:
        hasher = _Hasher(layout, run_on)
        start = time.perf_counter()
        ref_sets = [
            _csv_set("validation", frames["validation"], layout.validation_csv, layout.kpi_images, layout, spec),
            _csv_set("kpi", frames["kpi"], layout.kpi_csv, layout.kpi_images, layout, spec)]
        small: list[RowSet] = []
        synthetic = _synthetic_set(layout, spec)
        if synthetic is not None:
            small.append(synthetic)
        if "training" in frames:
            small.append(_csv_set("training", frames["training"], layout.train_csv, layout.kpi_images, layout, spec))
        light = spec.lights[0]
        sha = hasher([p for s in (*ref_sets, *small) for p in _wanted(s, light)])
        timings["hash_s"] += time.perf_counter() - start

        start = time.perf_counter()
        vectors, fingerprint, embedded, cached = _pair_vectors([*ref_sets, *small], light, sha, layout)
        timings["embed_s"] += time.perf_counter() - start
        start = time.perf_counter()
        ref_vectors = np.concatenate(vectors[:2])
        ref_files = "".join(d or "-" for s in ref_sets for d in map(sha.get, _wanted(s, light)))
        refs = _References(
            sets=ref_sets, sha=sha, digests=_ref_digests(ref_sets, sha),
            index=PairReference(ref_vectors, index=index, ivf_min_rows=ivf_min_rows),
            owners=[(r_idx, pos) for r_idx, ref in enumerate(ref_sets) for pos in range(len(ref.frame))],
            key="")
        refs.key = _digest_of(_RESULT_VERSION, fingerprint.id, repr(threshold), refs.index.kind, ref_files,
                              *(_frame_digest(s.frame) for s in ref_sets), *(s.file for s in ref_sets))
        timings["match_s"] += time.perf_counter() - start

        scan = _PoolScan()
        if pool_chunks is not None:
            scan = _scan_pool(pool_chunks(), layout, spec, refs, hasher, run_on, featureless, threshold, timings)
        start = time.perf_counter()
        found: dict[str, _Matches] = {}
        for s, vec in zip(small, vectors[2:], strict=True):
            found[s.name] = _match(s, vec, refs, sha, featureless, threshold)
        rows = scan.matches.rows()
        for name in ("synthetic", "training"):
            rows += found[name].rows() if name in found else []
        rows += _kpi_duplicates(ref_sets[1], vectors[1], sha, featureless, threshold)
        timings["match_s"] += time.perf_counter() - start
        hasher.save()

    n_rows = {s.name: len(s.frame) for s in ref_sets}
    if pool_chunks is not None:
        n_rows["mining_pool"] = scan.rows
    n_rows.update({s.name: len(s.frame) for s in small})
    boards = set(scan.boards)
    if "training" in found:
        boards |= _boards(next(s for s in small if s.name == "training").frame)
    result = HygieneResult(
        findings=pd.DataFrame(rows, columns=list(FINDING_COLUMNS)).astype({"similarity": float}),
        threshold=threshold, encoder_id=fingerprint.id,
        encoder=f"{fingerprint.name} v{fingerprint.version} ({fingerprint.id}, dim {fingerprint.dim})",
        n_rows=n_rows, embedded=embedded + scan.embedded, cached=cached + scan.cached, hashed=hasher.hashed,
        timings=timings,
        index={"kind": refs.index.kind, "k": refs.index.k, "recall": scan.recall, "queries": scan.recall_queries},
    )
    result.same_board = _same_board(ref_sets[1], boards)
    return result


def _kpi_duplicates(kpi: RowSet, vectors: np.ndarray, sha: dict[str, str | None],
                    featureless: Callable[[str, str], bool], threshold: float) -> list[dict[str, Any]]:
    """Later KPI rows that repeat an earlier one (by key, input pixels, or near duplicate)."""

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
        if not digest or (digest in first_by_sha and featureless(digest, str(path))):
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


def _same_board(kpi: RowSet, boards: set[str]) -> dict[str, Any]:
    """KPI rows whose `boardname` also occurs in the base training set or the mining pool (a warning)."""
    kpi_boards = kpi.frame["boardname"].fillna("").astype(str).str.strip()
    affected = kpi_boards.isin(list(boards)) & (kpi_boards != "")
    n = len(kpi_boards)
    return {"kpi_rows": int(affected.sum()), "kpi_total": n, "share": (float(affected.sum()) / n) if n else 0.0,
            "boards": sorted(set(kpi_boards[affected])), "unnamed_kpi_rows": int((kpi_boards == "").sum())}


# ---------------------------------------------------------------- the list and its use


def write_findings(result: HygieneResult, path: Path) -> None:
    """The exclusion list (pool and synthetic rows only): one row per excluded row, with its twin."""

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
