"""`deft mine`: standalone k-NN mining of a source pool for weak targets, through the front door (api.mine)."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.settings import given_settings, settings_command
from deft_aoi.console import echo_json

# The loop settings `deft mine` shares with `deft run`: same flag, help and default (config.LoopConfig).
MINE_SETTINGS = ("top_k_per_target", "min_similarity", "encoder", "mining_executor", "mining_index", "mining_memory",
                 "mining_cache_dtype", "mining_recall_floor", "allow_low_recall", "mining_engine", "backend")


def register(app: typer.Typer) -> None:
    @app.command("mine", cls=settings_command(MINE_SETTINGS, with_defaults=True))
    def mine(
        ctx: typer.Context,
        targets: Path = typer.Option(..., "--targets", help="Targets: .parquet (embedding, or filepath "
                                     "[+ golden_filepath], or ChangeNet columns) or .csv."),
        pool: Path = typer.Option(..., "--pool", help="Source pool: .parquet or .csv (a ChangeNet CSV such as "
                                  "augmentation/mining_pool/mining_pool.csv: paths relative to its dir)."),
        out: Path = typer.Option(..., "--out", help="Outputs go to OUT/mining_results/<timestamp>/."),
        metric: str = typer.Option("cosine", "--metric", help="k-NN metric: cosine; with --mining-engine "
                                   "data_services also euclidean / manhattan for CLIP or a TAO checkpoint (the "
                                   "cut-off stays cosine)."),
        ds_model: str = typer.Option("SigLIP", "--ds-model", help="--mining-engine data_services: the encoder, "
                                     "SigLIP or CLIP (Hugging Face)."),
        ds_model_path: str | None = typer.Option(None, "--ds-model-path", help="--mining-engine data_services: "
                                                 "the Hugging Face model of --ds-model, or a TAO checkpoint "
                                                 "(.pth/.ckpt) inside the workspace."),
        ds_model_config: Path | None = typer.Option(None, "--ds-model-config", help="The train spec of a TAO "
                                                    "checkpoint given as --ds-model-path (model_config_path)."),
        filter_by_label: bool = typer.Option(False, "--filter-by-label", help="Neighbours must share the "
                                             "target's label."),
        allow_unfiltered: bool = typer.Option(False, "--allow-unfiltered", help="With --filter-by-label: mine "
                                              "unfiltered (with a warning) when a label column is missing."),
        spec: Path | None = typer.Option(None, "--spec", help="ChangeNet spec giving lights and image_ext for "
                                         "ChangeNet-row inputs (default: the workspace's specs/baseline_spec.yaml)."),
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help="Workspace: its spec and its embedding "
                                              "cache (.deft_cache/embeddings) are used."),
        targets_images_dir: Path | None = typer.Option(None, "--targets-images-dir", help="Images root of "
                                                       "ChangeNet-row targets (default: the workspace layout "
                                                       "decides for its own CSVs, e.g. kpi/images for "
                                                       "kpi/testing_set.csv; else the targets file's dir)."),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache dir (default: the "
                                              "workspace's, else OUT/.deft_cache/embeddings)."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Ray actors (default: the cluster's "
                                           "CPUs; GPUs for siglip where present)."),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    ) -> None:
        """Mine the pool for the nearest neighbours of each target (cosine k-NN: exact, or IVF/HNSW with
        measured recall)."""
        import json

        from deft_aoi import api
        from deft_aoi.console import say

        mined = api.mine(targets, pool, out, given_settings(ctx), workspace=workspace, spec=spec,
                         targets_images_dir=targets_images_dir, cache_dir=cache_dir, metric=metric,
                         filter_by_label=filter_by_label, allow_unfiltered=allow_unfiltered, ray_workers=workers,
                         ds_model=ds_model, ds_model_path=ds_model_path,
                         ds_model_config_path=str(ds_model_config.absolute()) if ds_model_config else None)
        result, run_dir = mined.result, mined.out_dir
        run, paths = result.run, result.files
        assert run is not None  # both engines return their run
        c = run.knn.counts
        stats = run.cache_stats
        embedded_pool = stats.embedded if stats is not None else 0
        for warning in run.warnings:
            say(f"warning: {warning}")
        say(f"mined {c['after_dedup']} row(s) for {c['targets']} target(s) from {c['pool']} pool row(s) "
            f"(raw {c['raw']} → cut-off {c['after_cutoff']} → history {c['after_history']} → de-dup "
            f"{c['after_dedup']}); pool images embedded now: {embedded_pool}; outputs: {run_dir}")
        say(f"search: {run.search.describe()}")
        if as_json:
            payload = {
                "out_dir": str(run_dir),
                "counts": c,
                "embedded_pool": embedded_pool,
                "embedded_targets": run.embedded_targets,
                "fingerprint": run.fingerprint.id,
                "files": {k: str(v) for k, v in paths.items()},
                "warnings": run.warnings,
                "search": {"method": run.search.method, "shard_rows": run.search.shard_rows,
                           "shards": run.search.shards, "pool_dtype": run.search.pool_dtype,
                           "recall_k": run.search.recall_k or None, "recall": run.search.recall,
                           "recall_floor": run.search.recall_floor, "executor": run.search.executor,
                           "index_path": str(run.search.index_path) if run.search.index_path else None},
            }
            echo_json(json.dumps(payload, indent=2))
