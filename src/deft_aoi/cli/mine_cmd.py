"""`deft mine`: standalone k-NN mining of a source pool for weak targets."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.settings import given_settings, settings_command
from deft_aoi.console import echo_json

# The loop settings `deft mine` shares with `deft run`: same flag, help and default (config.LoopConfig).
MINE_SETTINGS = ("top_k_per_target", "min_similarity", "encoder", "mining_executor", "mining_index", "mining_memory",
                 "mining_cache_dtype", "mining_recall_floor", "allow_low_recall")


def register(app: typer.Typer) -> None:
    @app.command("mine", cls=settings_command(MINE_SETTINGS, with_defaults=True))
    def mine(
        ctx: typer.Context,
        targets: Path = typer.Option(..., "--targets", help="Targets: .parquet (embedding, or filepath "
                                     "[+ golden_filepath], or ChangeNet columns) or .csv."),
        pool: Path = typer.Option(..., "--pool", help="Source pool: .parquet or .csv (a ChangeNet CSV such as "
                                  "augmentation/mining_pool/mining_pool.csv: paths relative to its dir)."),
        out: Path = typer.Option(..., "--out", help="Outputs go to OUT/mining_results/<timestamp>/."),
        metric: str = typer.Option("cosine", "--metric", help="Similarity metric (cosine)."),
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

        from pydantic import ValidationError

        from deft_aoi.config import parse_memory
        from deft_aoi.console import say
        from deft_aoi.errors import UsageError
        from deft_aoi.mining.api import MineRequest, mine
        from deft_aoi.mining.embedders import resolve_encoder
        from deft_aoi.mining.inputs import (
            Lights,
            check_images_exist,
            default_images_dir,
            find_workspace_spec,
            load_table,
        )
        from deft_aoi.mining.params import MineConfig
        from deft_aoi.runners.tao.changenet_spec import load_spec
        from deft_aoi.workspace.layout import WorkspaceLayout

        s = given_settings(ctx)
        try:
            memory = s["mining_memory"]
            config = MineConfig(topn=s["top_k_per_target"], min_similarity=s["min_similarity"],
                                metric=metric,  # type: ignore[arg-type]
                                filter_by_label=filter_by_label, allow_unfiltered=allow_unfiltered,
                                # No backend here: `auto` is the builtin encoder.
                                encoder=resolve_encoder(s["encoder"], None), executor=s["mining_executor"],
                                ray_workers=workers,
                                index=s["mining_index"], memory_bytes=parse_memory(memory) if memory else None,
                                cache_dtype=s["mining_cache_dtype"], recall_floor=s["mining_recall_floor"],
                                allow_low_recall=s["allow_low_recall"])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"invalid mining option(s): {problems}") from exc
        from deft_aoi.io_utils import output_dir

        output_dir(out)  # refused before the pool is read and embedded, not after
        ws = WorkspaceLayout.at(workspace) if workspace else None
        spec_path = spec or (ws.spec_file if ws else None) or find_workspace_spec(pool) or find_workspace_spec(targets)
        lights = None
        if spec_path is not None:
            parsed = load_spec(spec_path)
            lights = Lights(parsed.lights[0], parsed.image_ext)
        t_images = targets_images_dir or default_images_dir(targets, ws)
        t_table = load_table(targets, lights=lights, what="targets", images_dir=t_images)
        p_table = load_table(pool, lights=lights, what="pool", images_dir=default_images_dir(pool, ws))
        check_images_exist(t_table, "targets")
        check_images_exist(p_table, "pool")
        cache_root = cache_dir or (ws.embedding_cache if ws else out / ".deft_cache" / "embeddings")
        run_dir = _new_run_dir(out / "mining_results")
        try:
            result = mine(MineRequest(t_table, p_table, config, run_dir, cache_root=cache_root))
        except BaseException:
            if not any(run_dir.iterdir()):  # a failed run leaves no empty timestamped dir behind
                run_dir.rmdir()
            raise
        run, paths = result.run, result.files
        assert run is not None  # the builtin engine always returns its run
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


def _new_run_dir(parent: Path) -> Path:
    """`parent/<YYYYMMDD_HHMMSS>`, suffixed when two runs start in the same second; never reuses a dir."""
    from datetime import datetime

    from deft_aoi.io_utils import output_dir

    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    output_dir(parent)
    for n in range(1000):
        candidate = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a fresh run dir under {parent}")
