"""Pool embedding on a real local Ray (issue 14): same embeddings and neighbours as in-process, finished
batches survive a failure, a killed worker costs at most its in-flight batch."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache
from deft_aoi.mining.ray_exec import RayEmbedding

from ._mining_util import CountingEmbedder, make_pairs
from .test_cli import _mine, small  # noqa: F401 - the fixture is used by name

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]
# `make test-slow` (CI runs it): a local Ray cluster per module, minutes on a loaded 2-core box.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    # Workers import this test module (the embedders below) by name: give them the repo root.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


class LoggedEmbedder(CountingEmbedder):
    """Appends one line per batch to `log`; with `die_on_call`, the first instance to reach that call
    kills its own process (once per `marker`), like a node lost mid-run."""

    def __init__(self, log: str, marker: str | None = None, die_on_call: int | None = None,
                 raise_on_call: int | None = None) -> None:
        super().__init__()
        self.log, self.marker, self.die_on_call, self.raise_on_call = log, marker, die_on_call, raise_on_call

    def embed(self, inputs: Sequence[str], goldens: Sequence[str | None]) -> np.ndarray:
        n = self.calls + 1
        if self.raise_on_call is not None and n >= self.raise_on_call:
            raise RuntimeError("encoder failed")
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()} {len(inputs)}\n")
        if self.die_on_call == n and self.marker and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().embed(inputs, goldens)


def test_ray_and_inprocess_give_identical_embeddings_and_neighbours(small: dict[str, Path],  # noqa: F811
                                                                    deeppcb_dev: Path) -> None:
    pool = deeppcb_dev / "augmentation" / "mining_pool" / "mining_pool.csv"
    base = _mine(small, "--min-similarity", "0.5", "--index", "exact", pool=pool)
    assert base.exit_code == 0, base.output
    cache = small["out"] / "ray_cache"
    on_ray = _mine(small, "--min-similarity", "0.5", "--index", "exact", "--executor", "ray", "--workers", "2",
                   "--cache-dir", str(cache), pool=pool)
    assert on_ray.exit_code == 0, on_ray.output
    a, b = json.loads(base.stdout), json.loads(on_ray.stdout)
    assert b["embedded_pool"] == a["embedded_pool"] > 1000 and b["search"]["executor"] == "ray"
    ea = pd.read_parquet(Path(a["out_dir"]) / "source_embeddings.parquet")
    eb = pd.read_parquet(Path(b["out_dir"]) / "source_embeddings.parquet")
    np.testing.assert_array_equal(np.stack(ea["embedding"]), np.stack(eb["embedding"]))
    pd.testing.assert_frame_equal(pd.read_parquet(Path(a["out_dir"]) / "mined.parquet"),
                                  pd.read_parquet(Path(b["out_dir"]) / "mined.parquet"))
    assert a["counts"] == b["counts"]
    assert len(list(cache.glob("*/shard_*.parquet"))) >= 1
    again = _mine(small, "--index", "exact", "--executor", "ray", "--cache-dir", str(cache), pool=pool)
    assert json.loads(again.stdout)["embedded_pool"] == 0  # cached pairs are never re-embedded


def _pairs_and_cache(tmp_path: Path, n: int) -> tuple[list[str], list[str], EmbeddingCache]:
    inputs, goldens = make_pairs(tmp_path / "img", n)
    return inputs, goldens, EmbeddingCache(tmp_path / "cache", CountingEmbedder().fingerprint, shard_size=5)


def test_killed_worker_loses_at_most_its_in_flight_batch(tmp_path: Path) -> None:
    inputs, goldens, cache = _pairs_and_cache(tmp_path, 30)
    log = tmp_path / "calls.log"
    factory = lambda: LoggedEmbedder(str(log), marker=str(tmp_path / "died"), die_on_call=3)  # noqa: E731
    run = RayEmbedding("counting", cache, workers=1, embedder_factory=factory)
    matrix, stats = embed_with_cache(inputs, goldens, CountingEmbedder(), cache, embed_missing=run.embed_missing)
    assert (tmp_path / "died").exists()
    assert stats.embedded == 30 and len(cache.shards()) == 6
    batches = log.read_text().splitlines()
    assert len(batches) == 7  # six batches + the one that was in flight when the worker died
    expected, _ = embed_with_cache(inputs, goldens, CountingEmbedder(),
                                   EmbeddingCache(tmp_path / "ref", CountingEmbedder().fingerprint))
    np.testing.assert_array_equal(matrix, expected)


def test_failed_run_keeps_finished_batches_and_a_rerun_completes(tmp_path: Path) -> None:
    inputs, goldens, cache = _pairs_and_cache(tmp_path, 30)
    log = tmp_path / "calls.log"
    failing = RayEmbedding("counting", cache, workers=1,
                           embedder_factory=lambda: LoggedEmbedder(str(log), raise_on_call=3))
    with pytest.raises(Exception, match="encoder failed"):
        embed_with_cache(inputs, goldens, CountingEmbedder(), cache, embed_missing=failing.embed_missing)
    finished = len(cache.shards())
    assert 2 <= finished < 6
    ok = RayEmbedding("counting", cache, workers=2, embedder_factory=lambda: LoggedEmbedder(str(log)))
    _, stats = embed_with_cache(inputs, goldens, CountingEmbedder(), cache, embed_missing=ok.embed_missing)
    assert stats.cached == finished * 5 and stats.embedded == 30 - finished * 5
