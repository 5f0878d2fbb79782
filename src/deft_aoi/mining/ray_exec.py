"""Pool embedding on Ray Data (`--executor ray`, loop `mining_executor: ray`).

The rows the embedding cache lacks become a Ray Dataset of (key, input, golden); `map_batches` runs them
through an actor pool, one encoder per actor (a GPU per actor for SigLIP when the cluster has GPUs).
Each actor writes every finished batch as one cache shard itself, atomically (cache.write_shard), and
returns only its keys. So a worker killed mid-run loses at most its in-flight batch, and a rerun finds
the finished shards in the cache and embeds only the rest. The driver reads the embeddings back from
the cache, exactly as the in-process path reads its own shards.

Connects to the cluster named by `RAY_ADDRESS` when set (image paths must then be readable on every
node, e.g. a shared mount, and deft-aoi installed there), else starts a local Ray and stops it after.
`ray[data]` is an optional dependency (`pip install 'deft-aoi[ray]'`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deft_aoi.errors import UsageError

if TYPE_CHECKING:
    from deft_aoi.mining.cache import EmbeddingCache, ProgressFn
    from deft_aoi.mining.embedders.base import Embedder

EmbedderFactory = Callable[[], "Embedder"]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise UsageError("--executor ray needs Ray Data", hint="pip install 'deft-aoi[ray]' (ray[data])") from exc
    return ray


class _EmbedActor:
    """One Ray Data actor: builds its encoder once, embeds a batch, writes it as one cache shard."""

    def __init__(self, factory: EmbedderFactory, cache_root: str, fingerprint_json: str, dtype: str) -> None:
        from pathlib import Path

        from deft_aoi.mining.cache import EmbeddingCache
        from deft_aoi.mining.embedders.base import Fingerprint, require_same_fingerprint

        self.embedder = factory()
        expected = Fingerprint.from_json(fingerprint_json)
        # A node with other weights would write vectors of another space under this fingerprint's dir.
        require_same_fingerprint(self.embedder.fingerprint, "Ray worker's encoder", expected, "driver's encoder")
        self.cache = EmbeddingCache(Path(cache_root), expected, dtype=dtype)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = [str(k) for k in batch["key"]]
        goldens = [str(g) or None for g in batch["golden"]]
        emb = self.embedder.embed([str(i) for i in batch["input"]], goldens)
        self.cache.write_shard(keys, emb)
        return {"key": batch["key"]}


class RayEmbedding:
    """`embed_missing` for `cache.embed_with_cache`, on Ray Data."""

    def __init__(self, encoder: str, cache: EmbeddingCache, *, workers: int | None = None,
                 embedder_factory: EmbedderFactory | None = None, batch_size: int | None = None) -> None:
        import functools

        from deft_aoi.mining.embedders import get_embedder

        self.encoder = encoder
        self.cache = cache
        self.workers = workers
        self.factory = embedder_factory or functools.partial(get_embedder, encoder)
        self.batch_size = batch_size

    def embed_missing(self, items: list[tuple[str, str, str | None]], on_progress: ProgressFn | None) -> None:
        import pyarrow as pa

        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            _init_ray(ray, self.workers)
        try:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            per_actor_gpu = 1.0 if self.encoder == "siglip" and gpus >= 1 else 0.0
            size = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            if per_actor_gpu:
                size = min(size, int(gpus))
            table = pa.table({"key": [k for k, _, _ in items], "input": [i for _, i, _ in items],
                              "golden": [g or "" for _, _, g in items]})
            # At least two batches per actor (at most a cache shard each), one block per batch: every actor
            # gets work from the start.
            batch = self.batch_size or max(1, min(self.cache.shard_size, -(-len(items) // (2 * size))))
            blocks = [table.slice(s, batch) for s in range(0, len(table), batch)]
            ds = ray.data.from_arrow(blocks).map_batches(
                _EmbedActor,
                fn_constructor_args=(self.factory, str(self.cache.dir.parent), self.cache.fingerprint.to_json(),
                                     self.cache.dtype),
                batch_size=batch,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
                num_cpus=1,
                num_gpus=per_actor_gpu,
            )
            done = 0
            if on_progress:
                on_progress(0, len(items))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                done += len(batch["key"])
                if on_progress:
                    on_progress(done, len(items))
        finally:
            if started_here:
                ray.shutdown()


def _init_ray(ray: Any, workers: int | None) -> None:
    import logging

    # Ray Data logs a progress block every few seconds; deft shows its own progress bar.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    # A local Ray: as many CPUs as workers asked for (default: the machine's), no dashboard.
    ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
