"""Mining at scale (issue 14): the pool on disk searched in shards under a memory budget, float16 cache,
approximate indexes with measured recall and a recall floor."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from deft_aoi.config import parse_memory
from deft_aoi.errors import DeftError, UsageError
from deft_aoi.mining import ann
from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache
from deft_aoi.mining.embedders.base import Fingerprint
from deft_aoi.mining.engine import MineConfig, run_mining
from deft_aoi.mining.fingerprint import write_embedding_parquet
from deft_aoi.mining.inputs import load_table
from deft_aoi.mining.knn import KnnParams, mine_neighbours
from deft_aoi.mining.pool_file import NpyBlocks, NpyWriter

from ._mining_util import CountingEmbedder, make_pairs
from .test_cli import _mine, small  # noqa: F401 - the fixture is used by name

FP = Fingerprint(name="synthetic", version="1", weights_hash="-", preprocessing="-", dim=32)


def _clustered(rng: np.random.Generator, n: int, d: int, centres: int = 50) -> np.ndarray:
    """Unit rows around a few centres: the structure real embeddings have (and IVF/HNSW rely on)."""
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def emb_inputs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    pool = _clustered(rng, 6000, 32)
    targets = pool[rng.choice(6000, 40, replace=False)] + 0.05 * rng.normal(size=(40, 32)).astype(np.float32)
    labels = np.where(rng.random(6000) < 0.5, "PASS", "NG")
    write_embedding_parquet(pd.DataFrame({"filepath": [f"/p/{i}.jpg" for i in range(6000)], "label": labels}),
                            pool, FP, tmp_path / "pool.parquet")
    write_embedding_parquet(pd.DataFrame({"filepath": [f"/t/{i}.jpg" for i in range(40)],
                                          "label": np.where(np.arange(40) % 2 == 0, "PASS", "NG")}),
                            targets, FP, tmp_path / "targets.parquet")
    return {"pool": tmp_path / "pool.parquet", "targets": tmp_path / "targets.parquet", "cache": tmp_path / "cache"}


def _run(inputs: dict[str, Path], **config: object):  # type: ignore[no-untyped-def]
    return run_mining(load_table(inputs["targets"]), load_table(inputs["pool"]),
                      MineConfig(min_similarity=0.3, **config), cache_root=inputs["cache"])  # type: ignore[arg-type]


# --- pool matrix on disk ----------------------------------------------------------------------------------

def test_npy_writer_and_blocks_roundtrip_in_any_row_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 8)).astype(np.float32)
    w = NpyWriter(tmp_path / "m.npy", 1000, 8)
    order = rng.permutation(1000)
    for part in np.array_split(order, 7):
        w.put(part, x[part])
    blocks = NpyBlocks(w.close())
    assert blocks.shape == (1000, 8)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), x)
    got = np.concatenate([b.copy() for _, b in blocks.blocks(300)])
    np.testing.assert_allclose(got, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)


def test_npy_blocks_reject_a_truncated_file(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", np.ones((100, 4), np.float32))
    data = (tmp_path / "m.npy").read_bytes()
    (tmp_path / "m.npy").write_bytes(data[:-40])
    with pytest.raises(DeftError, match="truncated"):
        list(NpyBlocks(tmp_path / "m.npy").blocks(64))


def test_spilled_cache_matrix_equals_in_memory_one_and_is_reused(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 30)
    inputs, goldens = [*inputs, inputs[3]], [*goldens, goldens[3]]  # one content listed twice
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path / "cache", emb.fingerprint, shard_size=7)
    whole, _ = embed_with_cache(inputs, goldens, emb, cache)
    spill = tmp_path / "pool.npy"
    blocks, stats = embed_with_cache(inputs, goldens, emb, cache, spill=spill)
    assert isinstance(blocks, NpyBlocks) and stats.embedded == 0
    np.testing.assert_array_equal(np.load(spill), whole)
    again, stats2 = embed_with_cache(inputs, goldens, emb, cache, spill=spill)
    assert isinstance(again, NpyBlocks) and stats2.cached == stats2.unique == 30


def test_cli_memory_budget_streams_the_pool_with_identical_results(small: dict[str, Path]) -> None:  # noqa: F811
    whole = _mine(small, "--min-similarity", "0.5", "--index", "exact")
    assert whole.exit_code == 0, whole.output
    sharded = _mine(small, "--min-similarity", "0.5", "--index", "exact", "--memory", "64M")
    assert sharded.exit_code == 0, sharded.output
    a, b = json.loads(whole.stdout), json.loads(sharded.stdout)
    assert a["counts"] == b["counts"]
    assert b["search"]["shard_rows"] and a["search"]["shard_rows"] is None
    pd.testing.assert_frame_equal(pd.read_parquet(Path(a["out_dir"]) / "mined.parquet"),
                                  pd.read_parquet(Path(b["out_dir"]) / "mined.parquet"))
    report = (Path(b["out_dir"]) / "Mining_Report.md").read_text()
    assert "streamed from" in report and "budget 0.06 GiB" in report
    assert list((small["out"] / ".deft_cache" / "embeddings").glob("*/pools/*.npy"))


def test_memory_budget_too_small_is_a_clear_error(small: dict[str, Path]) -> None:  # noqa: F811
    result = _mine(small, "--index", "exact", "--memory", "1M")
    assert result.exit_code != 0
    assert "memory budget" in result.exception.render()  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "value"), [("2G", 2 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29),
                                             ("4096", 4096)])
def test_parse_memory(text: str, value: int) -> None:
    assert parse_memory(text) == value


def test_parse_memory_rejects_garbage() -> None:
    with pytest.raises(UsageError, match="memory size"):
        parse_memory("lots")


# --- float16 cache ----------------------------------------------------------------------------------------

def test_float16_cache_halves_storage_and_keeps_neighbours(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 40)
    emb = CountingEmbedder(dim=64)
    c32 = EmbeddingCache(tmp_path / "c32", emb.fingerprint)
    c16 = EmbeddingCache(tmp_path / "c16", emb.fingerprint, dtype="float16")
    m32, _ = embed_with_cache(inputs, goldens, emb, c32)
    m16, _ = embed_with_cache(inputs, goldens, emb, c16)
    assert m16.dtype == np.float16 and m32.dtype == np.float32
    assert str(pq.read_schema(c16.shards()[0]).field("embedding").type.value_type) == "halffloat"
    np.testing.assert_allclose(m16.astype(np.float32), m32, atol=1e-3)
    q = m32[:10]
    a = mine_neighbours(q, m32, KnnParams(topn=3, min_similarity=-1, filter_by_label=False))
    b = mine_neighbours(q, m16, KnnParams(topn=3, min_similarity=-1, filter_by_label=False), shard_rows=16)
    np.testing.assert_allclose(a.candidates["similarity"], b.candidates["similarity"], atol=2e-3)
    # A float32 reader of the float16 cache gets the same rows (the option never invalidates a cache).
    back, stats = embed_with_cache(inputs, goldens, emb, EmbeddingCache(tmp_path / "c16", emb.fingerprint))
    assert stats.embedded == 0
    np.testing.assert_array_equal(back, m16.astype(np.float32))


# --- approximate indexes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_is_cached_and_reports_recall(emb_inputs: dict[str, Path], kind: str) -> None:
    exact = _run(emb_inputs, mining_index="exact")
    first = _run(emb_inputs, mining_index=kind)
    assert first.search.method == kind and not first.search.index_reused
    assert first.search.recall is not None and first.search.recall >= 0.99
    assert first.search.index_path is not None and first.search.index_path.is_file()
    assert first.search.index_path.parent.parent == emb_inputs["cache"] / FP.id
    second = _run(emb_inputs, mining_index=kind)
    assert second.search.index_reused and second.search.recall == first.search.recall
    overlap = len(set(first.mined["filepath"]) & set(exact.mined["filepath"])) / len(exact.mined)
    assert overlap >= 0.95
    from deft_aoi.mining.report import report_markdown, summary_text

    assert f"recall@5 vs exact on 40 sampled target(s): {first.search.recall:.4f}" in report_markdown(first,
                                                                                                      outputs={})
    assert "approximate" in summary_text(first)


def test_label_filter_holds_with_an_approximate_index(emb_inputs: dict[str, Path]) -> None:
    run = _run(emb_inputs, mining_index="hnsw", filter_by_label=True)
    assert (run.mined["label"] == run.mined["matched_target_label"]).all()
    assert run.search.recall is not None and run.search.recall >= 0.99


def test_low_recall_is_refused_unless_allowed(emb_inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # One probed list out of many: a poor index on purpose.
    monkeypatch.setattr(ann, "AnnParams", functools.partial(ann.AnnParams, nprobe=1, nlist=128))
    with pytest.raises(DeftError, match=r"recall@5 0\.\d+ .* below the floor 0\.99"):
        _run(emb_inputs, mining_index="ivf")
    kept = _run(emb_inputs, mining_index="ivf", allow_low_recall=True)
    assert kept.search.recall is not None and kept.search.recall < 0.99
    assert any("below the floor" in w for w in kept.warnings)
    lowered = _run(emb_inputs, mining_index="ivf", mining_recall_floor=0.0)
    assert not any("below the floor" in w for w in lowered.warnings)


@pytest.mark.parametrize(("n", "nlist", "nprobe"), [
    (1_000, 25, 8), (1_000_000, 1000, 8), (5_000_000, 2236, 17), (100_000_000, 10_000, 78), (200, 5, 5)])
def test_ivf_defaults_scan_a_constant_share_of_the_pool(n: int, nlist: int, nprobe: int) -> None:
    """nlist √n (≥ 16, ≤ n/39) and nprobe nlist/128 (≥ 8, ≤ nlist): the rule bench/RESULTS.md measured."""
    params = ann.AnnParams(kind="ivf")
    assert (params.resolved_nlist(n), params.resolved_nprobe(n)) == (nlist, nprobe)
    assert ann.AnnParams(kind="ivf", nprobe=64, nlist=20).resolved_nprobe(n) == 20  # never more than nlist


def test_auto_searches_exactly_below_the_threshold(emb_inputs: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(emb_inputs).search.method == "exact"
    monkeypatch.setattr(ann, "AUTO_MIN_POOL", 1000)
    assert _run(emb_inputs).search.method == "ivf"


def test_changed_pool_content_builds_a_new_index(emb_inputs: dict[str, Path]) -> None:
    first = _run(emb_inputs, mining_index="hnsw")
    table = pq.read_table(emb_inputs["pool"])
    pq.write_table(table.slice(0, 5000).replace_schema_metadata(table.schema.metadata), emb_inputs["pool"])
    second = _run(emb_inputs, mining_index="hnsw")
    assert not second.search.index_reused and second.search.index_path != first.search.index_path
