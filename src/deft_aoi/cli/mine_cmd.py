"""`deft mine`: standalone k-NN mining of a source pool for weak targets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deft_aoi.cli.settings import given_settings, settings_command
from deft_aoi.console import echo_json

if TYPE_CHECKING:
    from deft_aoi.mining.data_services import DataServicesAccess
    from deft_aoi.workspace.layout import WorkspaceLayout

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
                                allow_low_recall=s["allow_low_recall"],
                                ds_model=ds_model,  # type: ignore[arg-type]
                                ds_model_path=ds_model_path,
                                ds_model_config_path=str(ds_model_config.absolute()) if ds_model_config else None)
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
        engine = s["mining_engine"]
        access = _data_services_access(ws, s["backend"], out) if engine == "data_services" else None
        run_dir = _new_run_dir(out / "mining_results")
        try:
            result = mine(MineRequest(t_table, p_table, config, run_dir, cache_root=cache_root), engine=engine,
                          data_services=access)
        except BaseException:
            if not any(run_dir.iterdir()):  # a failed run leaves no empty timestamped dir behind
                run_dir.rmdir()
            raise
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


def _data_services_access(ws: WorkspaceLayout | None, backend: str, out: Path) -> DataServicesAccess:
    """Containers for `--mining-engine data_services`: they mount the workspace (at the same path), so it, and
    OUT inside it, must be given; the image from its versions.yaml, only the known secrets from its .env."""
    from deft_aoi.console import say
    from deft_aoi.errors import UsageError
    from deft_aoi.mining.data_services import DataServicesAccess
    from deft_aoi.runners.factory import capabilities, make_runner
    from deft_aoi.runners.tao.versions import load_versions
    from deft_aoi.secrets import SECRET_NAMES, load_env_file

    if ws is None:
        raise UsageError("--mining-engine data_services needs --workspace: its containers see only the workspace")
    if not capabilities(backend).containers:
        raise UsageError("--mining-engine data_services runs TAO Data Services containers: pass --backend docker "
                         "(or slurm, fake)")
    if not out.absolute().resolve().is_relative_to(ws.root):
        raise UsageError(f"--out {out} is outside the workspace {ws.root}; the containers write only inside it")
    env = {k: v for k, v in load_env_file(ws.env_file).items() if k in SECRET_NAMES}
    return DataServicesAccess(runner=make_runner(backend, ws), workspace=ws, image=load_versions(ws).data_services,
                              env=env, say=say)


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
