"""Does the DEFT loop lower FAR, and does k-NN mining beat adding the same number of random pool rows?

    .venv/bin/python bench/loop_efficacy.py [--iterations 2] [--demo] [--seed 0] [--train-seed 0] [--keep DIR]

For each workspace (a fresh copy of ../shared/data/deeppcb-dev; with --demo also `deft demo-data
--seed 7`), runs the loop twice with the local backend:
  1. k-NN: the real loop (RCA weak samples → k-NN mining of the source pool → assemble → fine-tune).
  2. random control: the same engine and stages except "mine", which draws, per iteration, as many rows
     as the k-NN run mined in that iteration uniformly at random (fixed seed) from the same staged source
     pool (synth_pool/source_pool.parquet), never re-drawing a row drawn earlier. The control starts from
     the k-NN run's baseline checkpoint (`baseline_checkpoint`), so both arms share the same baseline.
Prints per iteration: rows added, training rows, FAR@recall100 of each arm and the thresholds, plus the
local backend's CPU train rate (image pairs/s) read from the k-NN run's train logs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb-dev"
RATE_RE = re.compile(r"epoch \d+/\d+ .*\([\d.]+ s, (\d+) img-pairs/s\)")

if TYPE_CHECKING:
    from deft_aoi.loop.engine import StageContext, StageOutcome
    from deft_aoi.loop.state import RunState


class RandomMineStage:
    """Stands in for MineStage: writes the same `mined_rows.parquet` (14 ChangeNet columns + source +
    filepath) with `counts[iteration]` rows drawn uniformly from the staged source pool."""

    name = "mine"

    def __init__(self, counts: dict[str, int], seed: int) -> None:
        self.counts = counts
        self.seed = seed

    def output_dir(self, ctx: StageContext) -> str:
        return f"{ctx.iteration}/mining_filter"

    def run(self, ctx: StageContext) -> StageOutcome:
        import numpy as np

        from deft_aoi.io_utils import atomic_write_parquet
        from deft_aoi.loop.engine import StageOutcome
        from deft_aoi.loop.stages.data import MINED_ROWS, mined_ledger
        from deft_aoi.mining.loop_adapter import pool_with_paths
        from deft_aoi.synth.staging import load_source_pool
        from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, conform

        s = ctx.services
        pool = pool_with_paths(conform(load_source_pool(s.run.root), file="source pool"), s.workspace.root,
                               s.spec.lights[0], s.spec.image_ext)
        fresh = pool[~pool["filepath"].isin(mined_ledger(ctx))].reset_index(drop=True)
        want = min(self.counts.get(ctx.iteration, 0), len(fresh))
        # One generator per iteration, seeded by (seed, index): the draw does not depend on resume order.
        rng = np.random.default_rng([self.seed, ctx.index])
        picked = fresh.iloc[np.sort(rng.choice(len(fresh), size=want, replace=False))].reset_index(drop=True)
        rows = picked[[*CHANGENET_COLUMNS, "source", "filepath"]]
        atomic_write_parquet(rows, ctx.out / MINED_ROWS)
        n_synth = int((rows["source"] == "synthetic").sum())
        return StageOutcome(
            summary=f"random control: drew {len(rows)} of {len(fresh)} fresh pool rows (seed {self.seed})",
            outputs={"mined_rows": ctx.out / MINED_ROWS},
            updates={"counts": {"mined_real": len(rows) - n_synth, "mined_synthetic": n_synth,
                                "mined_total": len(rows)}},
        )


@dataclass
class ArmResult:
    state: RunState
    wall_s: float


def run_loop(workspace: Path, iterations: int, *, train_seed: int, mine_stage: Any = None,
             baseline_checkpoint: str | None = None) -> ArmResult:
    """`deft run --backend local --yes` in-process; `mine_stage` replaces the k-NN mine stage."""
    from deft_aoi.loop.engine import Engine
    from deft_aoi.loop.lock import exclusive_lock
    from deft_aoi.loop.session import config_from_flags, runner_factory, services_for, start_run, workspace_lock
    from deft_aoi.loop.stages import build_stages
    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import WorkspaceLayout
    from deft_aoi.workspace.preflight import run_preflight
    from deft_aoi.workspace.spec_file import load_spec

    layout = WorkspaceLayout.at(workspace)
    spec = load_spec(layout.spec_file)
    config = config_from_flags({"backend": "local", "max_iterations": iterations, "seed": train_seed,
                                "baseline_checkpoint": baseline_checkpoint}, spec)
    report = run_preflight(layout.root, config=config, runner_factory=runner_factory("local", layout))
    if not report.ready:
        failed = [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
        sys.exit(f"pre-flight failed for {workspace}:\n  " + "\n  ".join(failed))
    stages = build_stages()
    if mine_stage is not None:
        stages[mine_stage.name] = mine_stage
    started = time.perf_counter()
    with workspace_lock(layout):
        run = start_run(layout, spec, config, report)
        store = StateStore(run)
        with exclusive_lock(run.lock_file, f"run {run.run_id}"):
            engine = Engine(services_for(layout, run, spec, config), stages, store)
            state = engine.run(engine.reconcile(store.load()))
    return ArmResult(state=state, wall_s=time.perf_counter() - started)


def mined_counts(state: RunState) -> dict[str, int]:
    return {name: int(it.counts.get("mined_total", 0)) for name, it in state.iterations.items()
            if name != "baseline"}


def baseline_checkpoint(state: RunState, workspace: Path) -> str:
    """The k-NN run's chosen baseline checkpoint, copied into `workspace` (jobs see only their workspace)."""
    path = state.iterations["baseline"].best_ckpt_path
    if not path:
        sys.exit("the k-NN run's baseline recorded no checkpoint")
    source = Path(path) if Path(path).is_absolute() else Path(state.results_dir) / path
    target = workspace / "baseline_checkpoint" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return str(target)


def train_rates(state: RunState) -> list[float]:
    """Per-epoch image pairs/s of every train job of the run (from the logs the local backend writes)."""
    rates: list[float] = []
    for log in sorted(Path(state.results_dir).glob("*/train/train.log")):
        rates += [float(m[1]) for m in RATE_RE.finditer(log.read_text(encoding="utf-8"))]
    return rates


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_table(title: str, knn: ArmResult, control: ArmResult) -> None:
    print(f"\n{title}")
    print(f"{'iteration':10s} {'rows added':>10s} {'train rows':>10s} {'FAR k-NN':>9s} {'FAR random':>10s} "
          f"{'thr k-NN':>9s} {'thr random':>10s}")
    for name, it in knn.state.iterations.items():
        other = control.state.iterations.get(name)
        added = "—" if name == "baseline" else str(it.counts.get("mined_total", 0))
        print(f"{name:10s} {added:>10s} {it.counts.get('training_rows', 0):>10} "
              f"{fmt(it.far_pct, '.1f'):>8s}% {fmt(other.far_pct if other else None, '.1f'):>9s}% "
              f"{fmt(it.threshold, '.4f'):>9s} {fmt(other.threshold if other else None, '.4f'):>10s}")
    base = knn.state.iterations["baseline"].far_pct
    best_knn = min((it.far_pct for n, it in knn.state.iterations.items() if n != "baseline" and it.far_pct is not None),
                   default=None)
    best_rand = min((it.far_pct for n, it in control.state.iterations.items()
                     if n != "baseline" and it.far_pct is not None), default=None)
    print(f"baseline FAR {fmt(base, '.1f')}%; best iteration: k-NN {fmt(best_knn, '.1f')}%, "
          f"random {fmt(best_rand, '.1f')}%")
    if best_knn is not None and best_rand is not None:
        verdict = ("k-NN mining beats the random control" if best_knn < best_rand else
                   "k-NN mining does NOT beat the random control" if best_knn > best_rand else "tie")
        print(f"verdict: {verdict} (best FAR {best_knn:.1f}% vs {best_rand:.1f}%; single seed — FAR@recall100 "
              "is set by the single lowest-scored defect, so differences of a few points are noise)")
    rates = train_rates(knn.state)
    if rates:
        print(f"local backend CPU train rate: median {statistics.median(rates):.0f} image pairs/s "
              f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} epochs)")
    print(f"wall time: k-NN run {knn.wall_s:.0f} s, random control {control.wall_s:.0f} s")


def prepare(kind: str, root: Path, arm: str) -> Path:
    target = root / f"{kind}_{arm}"
    if kind == "deeppcb":
        shutil.copytree(DEEPPCB, target)
    else:
        from deft_aoi.demo.generator import generate_workspace

        generate_workspace(target, seed=7, size="small")
    return target


def bench_workspace(kind: str, root: Path, iterations: int, seed: int, train_seed: int) -> None:
    knn = run_loop(prepare(kind, root, f"s{train_seed}_knn"), iterations, train_seed=train_seed)
    control_ws = prepare(kind, root, f"s{train_seed}_random{seed}")
    control = run_loop(control_ws, iterations, train_seed=train_seed,
                       mine_stage=RandomMineStage(mined_counts(knn.state), seed),
                       baseline_checkpoint=baseline_checkpoint(knn.state, control_ws))
    print_table(f"== {kind}: {iterations} iteration(s), local backend, training seed {train_seed}, "
                f"random-control seed {seed} ==", knn, control)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="also bench the demo workspace (deft demo-data --seed 7)")
    parser.add_argument("--no-deeppcb", action="store_true", help="skip deeppcb-dev (use with --demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random control's draws")
    parser.add_argument("--train-seed", type=int, default=0, help="training seed of both arms (`deft run --seed`)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep the runs (default: a temp dir)")
    args = parser.parse_args()
    kinds = ([] if args.no_deeppcb else ["deeppcb"]) + (["demo"] if args.demo else [])
    if "deeppcb" in kinds and not DEEPPCB.is_dir():
        sys.exit(f"deeppcb-dev not found at {DEEPPCB}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            bench_workspace(kind, args.keep, args.iterations, args.seed, args.train_seed)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            bench_workspace(kind, Path(tmp), args.iterations, args.seed, args.train_seed)


if __name__ == "__main__":
    main()
