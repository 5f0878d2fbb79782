"""`deft run` and `deft resume`: pre-flight → one confirmation → the autonomous loop."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deft_aoi.cli.options import (
    BACKEND_HELP,
    MINING_ENGINE_HELP,
    NEAR_DUPLICATE_HELP,
    NO_EXCLUDE_HELP,
    RUN_HELP,
    WORKSPACE_HELP,
)

if TYPE_CHECKING:
    from deft_aoi.loop.state import RunState


def _confirm(yes: bool) -> None:
    from deft_aoi.errors import UsageError

    if yes or os.environ.get("DEFT_YES", "").lower() in ("1", "true", "yes"):
        return
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: pass --yes (or set DEFT_YES=1) to start the loop")
    if not typer.confirm("Start the loop with these parameters? After this it runs unattended", default=False):
        raise typer.Exit(1)


def _finish(state: RunState, run_root: Path) -> None:
    from deft_aoi.console import say

    say(f"run {state.run_id}: {state.status} ({state.stop_reason or '—'}); best iteration: "
        f"{state.best_iteration or '—'}")
    report = run_root / "DEFT_Loop_Report.html"
    best = run_root / "best_model.json"
    if report.exists():
        say(f"report:     {report}")
    if best.exists():
        say(f"best model: {best}")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP + " [default: local]"),
        yes: bool = typer.Option(False, "--yes", "-y", help="Skip the confirmation (also DEFT_YES=1)."),
        max_iterations: int | None = typer.Option(None, "--max-iterations", help="[default: 3]"),
        kpi: str | None = typer.Option(None, "--kpi", help='KPI target [default: "FAR<0.1%@recall=100%"].'),
        top_k: int | None = typer.Option(None, "--top-k", help="Neighbours kept per weak target [default: 5]."),
        min_similarity: float | None = typer.Option(None, "--min-similarity", help="Cosine cut-off [default: 0.9]."),
        epochs: int | None = typer.Option(None, "--epochs", help="[default: train.num_epochs of the spec, else 20]"),
        batch_size: int | None = typer.Option(None, "--batch-size", help="[default: the spec's]"),
        seed: int | None = typer.Option(None, "--seed", help="[default: 0]"),
        baseline_checkpoint: Path | None = typer.Option(None, "--baseline-checkpoint",
                                                        help="Skip baseline training: start from this checkpoint."),
        encoder: str | None = typer.Option(None, "--encoder", help="Mining embedder: builtin | siglip."),
        mining_engine: str | None = typer.Option(
            None, "--mining-engine", help=MINING_ENGINE_HELP),
        mining_executor: str | None = typer.Option(None, "--mining-executor", help="Embed the pool in-process "
                                                   "or on Ray Data (ray) [default: inprocess]."),
        mining_index: str | None = typer.Option(None, "--mining-index", help="exact | ivf | hnsw | auto "
                                                "[default: auto: ivf from 2M pool rows]."),
        mining_memory: str | None = typer.Option(None, "--mining-memory", help="Memory budget of the exact "
                                                 "k-NN, e.g. 2G (the pool streams from disk in shards)."),
        mining_cache_dtype: str | None = typer.Option(None, "--mining-cache-dtype", help="float32 | float16 "
                                                      "[default: float32]."),
        recall_floor: float | None = typer.Option(None, "--recall-floor", help="Refuse an approximate k-NN "
                                                  "below this recall@k [default: 0.99]."),
        allow_low_recall: bool | None = typer.Option(None, "--allow-low-recall/--refuse-low-recall",
                                                     help="Keep an approximate k-NN below the recall floor."),
        no_exclude: bool = typer.Option(False, "--no-exclude", help=NO_EXCLUDE_HELP),
        near_duplicate_threshold: float | None = typer.Option(None, "--near-duplicate-threshold",
                                                              help=NEAR_DUPLICATE_HELP),
        stage_timeout: float | None = typer.Option(
            None, "--stage-timeout",
            help="Seconds one backend job may run before its stage fails (resumable) [default: sized from "
                 "rows × epochs, at least 30 min]."),
        strategy: str | None = typer.Option(
            None, "--strategy", help="Row selection: knn | kpi | diverse (mining.strategy) [default: knn]."),
        pool_share: float | None = typer.Option(
            None, "--pool-share",
            help="Pool-calibrated cut-off: at most this % of the mining pool passes (replaces --min-similarity)."),
        max_pass_ratio: float | None = typer.Option(
            None, "--max-pass-ratio", help="Class-balance guard: at most this many PASS rows added per defect row."),
        finetune_from: str | None = typer.Option(
            None, "--finetune-from",
            help="Each iteration trains from: best (checkpoint so far) | baseline | scratch [default: best]."),
        score_training: bool | None = typer.Option(
            None, "--score-training/--no-score-training",
            help="Score the training CSV too (one more inference job per iteration) so RCA flags suspect "
                 "training labels [default: on]."),
    ) -> None:
        """Pre-flight, confirm once, then run the loop until the KPI is met or it stops."""
        from deft_aoi.cli.views import print_preflight_summary
        from deft_aoi.errors import InputError
        from deft_aoi.loop.session import (
            config_from_flags,
            execute,
            runner_factory,
            start_run,
            try_load_spec,
            workspace_lock,
        )
        from deft_aoi.workspace.layout import WorkspaceLayout
        from deft_aoi.workspace.preflight import run_preflight

        layout = WorkspaceLayout.at(workspace)
        flags = {"backend": backend, "max_iterations": max_iterations, "kpi": kpi, "top_k_per_target": top_k,
                 "min_similarity": min_similarity, "num_epochs": epochs, "batch_size": batch_size, "seed": seed,
                 "baseline_checkpoint": str(baseline_checkpoint) if baseline_checkpoint else None,
                 "encoder": encoder, "mining_engine": mining_engine, "mining_executor": mining_executor,
                 "mining_index": mining_index, "mining_memory": mining_memory,
                 "mining_cache_dtype": mining_cache_dtype, "mining_recall_floor": recall_floor,
                 "allow_low_recall": allow_low_recall, "strategy": strategy,
                 "pool_share_pct": pool_share, "max_pass_ratio": max_pass_ratio, "finetune_from": finetune_from,
                 "near_duplicate_threshold": near_duplicate_threshold, "exclude_leaks": False if no_exclude else None,
                 "stage_timeout": stage_timeout, "score_training_rows": score_training}
        spec = try_load_spec(layout)
        config = config_from_flags(flags, spec)
        report = run_preflight(layout.root, config=config,
                               runner_factory=runner_factory(config.backend.value, layout))
        print_preflight_summary(report, config)
        if not report.ready or spec is None:
            failures = "".join(f"\n  {c.name}: {c.detail}" for c in report.checks if c.failed)
            raise InputError(f"pre-flight failed: fix the checks marked FAIL above, then run again{failures}")
        _confirm(yes)
        with workspace_lock(layout):
            run_layout = start_run(layout, spec, config, report)
            state = execute(layout, run_layout, spec, config, resume=False)
        _finish(state, run_layout.root)

    @app.command("resume")
    def resume(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        run_id: str | None = typer.Option(None, "--run", help=RUN_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Accepted as on `deft run` (also DEFT_YES=1), so "
                                 "scripts pass the same flags to both; resume continues a confirmed run and "
                                 "never asks."),
    ) -> None:
        """Continue the latest unfinished run from what is on disk."""
        from deft_aoi.loop.runs import find_run
        from deft_aoi.loop.session import config_from_state, execute, workspace_lock
        from deft_aoi.loop.store import StateStore
        from deft_aoi.workspace.layout import WorkspaceLayout
        from deft_aoi.workspace.spec_file import load_spec

        layout = WorkspaceLayout.at(workspace)
        with workspace_lock(layout):
            run_layout = find_run(layout, run_id, unfinished=run_id is None)
            state = StateStore(run_layout).load()
            config = config_from_state(state)
            spec = load_spec(layout.spec_file)
            state = execute(layout, run_layout, spec, config, resume=True)
        _finish(state, run_layout.root)
