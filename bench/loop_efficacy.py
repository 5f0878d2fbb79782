"""Does the DEFT loop lower FAR, and does its selection beat adding the same number of random pool rows?

    .venv/bin/python bench/loop_efficacy.py [--workspace PATH] [--seeds 8] [--iterations 2]
        [--arms knn,random,all,kpi,diverse,knn:share=10,knn:from=baseline] [--keep DIR] [--epochs N]
        [--folds N] [--demo-seeds N]
    .venv/bin/python bench/loop_efficacy.py --merge DIR [DIR ...]   # the tables of runs kept with --keep

The suite (bench/efficacy_suite.py): `--folds N` runs every arm and seed on N grouped cross-validation folds
of the workspace (KPI and validation rows from board groups held out of that fold's training set and pool);
`--demo-seeds N` adds the demo workspaces of seeds 0..N-1. Paired tests then pair (workspace, seed): the
tables report the suite, not one workspace. Without either, the workspace itself is the one entry.

For each seed s (training seed of every arm, and the random control's draw seed) and each arm, runs the
loop with the local backend on a fresh copy of the workspace (default ../shared/data/deeppcb-dev).
Arms are paired by seed: the first arm trains the baseline, every other arm starts from that baseline
checkpoint (`baseline_checkpoint`), so within a seed all arms share one baseline.

Arms (`name[:key=value,...]`):
  knn | kpi | diverse   the loop's mine stage with `mining.strategy` = name (mining/strategy.py)
  random                same budget as the first strategy arm listed (the loop's default first: rows per
                        iteration of that seed), uniformly drawn from the rows the product may mine (the
                        staged source pool less pre-flight's pool-hygiene exclusions), never re-drawing a
                        row (needs a strategy arm before it)
  all                   "add the whole pool": iteration 1 takes every pool row, later ones nothing new
  options               share=P (pool-calibrated cut-off, % of the pool), ratio=R (max PASS per defect
                        added; none = no cap), from=best|baseline|scratch (fine-tune protocol),
                        guard=exclude|off (the gate's protection after a worse iteration, `--on-worse`)
Prints per arm and iteration: mean and per-seed FAR@recall100 and FAR@recall99, rows added, train time;
per arm: how many iterations made FAR@recall100 worse, the mean reduction from baseline, and the paired
one-sided sign test and Wilcoxon signed-rank test against `random` at the final and at the best iteration.
An arm whose run hard-stops or fails is a recorded outcome (its FAR up to the stop; the last one measured is
its final), never the end of the bench.

Seeds are independent, so a long bench may run as several processes (`--first-seed N --seeds M --keep DIR`,
one DIR each); `--merge DIR ...` then prints the tables of every kept run (`s<seed>_<arm>/`) as one command
over all those seeds would.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficacy_suite import Entry, suite_entries  # sibling bench modules, not part of the package
from paired_stats import paired

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb-dev"
RATE_RE = re.compile(r"epoch \d+/\d+ .*\([\d.]+ s, (\d+) img-pairs/s\)")
STRATEGY_ARMS = ("knn", "kpi", "diverse")
CONTROL_ARMS = ("random", "all")
NO_CAP = 1e9  # ratio=none: more PASS rows per defect row than any pool holds
OPTION_KEYS = {"share": "pool_share_pct", "ratio": "max_pass_ratio", "from": "finetune_from", "enc": "encoder",
               "guard": "on_worse"}
TEXT_OPTIONS = ("from", "enc", "guard")

if TYPE_CHECKING:
    from deft_aoi.loop.stage_contract import StageContext, StageOutcome
    from deft_aoi.loop.state import RunState


class SampleMineStage:
    """Stands in for MineStage: writes the same `mine.rows` artefact (14 ChangeNet columns + source +
    filepath) with `counts[iteration]` rows drawn uniformly from the rows the product may mine (the staged
    source pool less pre-flight's exclusions, as MineStage filters it), or every fresh row when `counts` is
    None ("add the whole pool")."""

    name = "mine"
    reads = ("route.mining_gaps", "stage_synth.source_pool", "run.pool_exclusions", "mine.rows")  # + the ledger
    writes = ("mine.rows",)

    def __init__(self, counts: dict[str, int] | None, seed: int) -> None:
        self.counts = counts
        self.seed = seed

    def output_dir(self, ctx: StageContext) -> str:
        from deft_aoi.workspace.catalog import stage_dir

        return stage_dir(self.name, ctx.iteration)

    def run(self, ctx: StageContext) -> StageOutcome:
        import numpy as np

        from deft_aoi.loop.stage_contract import StageOutcome
        from deft_aoi.loop.stages.data import drop_exclusions, mined_ledger
        from deft_aoi.mining.loop_adapter import pool_with_paths
        from deft_aoi.synth.staging import load_source_pool
        from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, conform
        from deft_aoi.workspace.stored_paths import write_parquet

        s = ctx.services
        allowed, _ = drop_exclusions(load_source_pool(s.run.root), s.run.pool_exclusions)
        pool = pool_with_paths(conform(allowed, file="source pool"), s.workspace.root, s.spec.lights[0],
                               s.spec.image_ext)
        fresh = pool[~pool["filepath"].isin(mined_ledger(ctx))].reset_index(drop=True)
        want = len(fresh) if self.counts is None else min(self.counts.get(ctx.iteration, 0), len(fresh))
        # One generator per iteration, seeded by (seed, index): the draw does not depend on resume order.
        rng = np.random.default_rng([self.seed, ctx.index])
        picked = fresh.iloc[np.sort(rng.choice(len(fresh), size=want, replace=False))].reset_index(drop=True)
        rows = picked[[*CHANGENET_COLUMNS, "source", "filepath"]]
        write_parquet(rows, ctx.output("mine.rows"), s.workspace.root)
        n_synth = int((rows["source"] == "synthetic").sum())
        what = "whole pool" if self.counts is None else f"random control (seed {self.seed})"
        return StageOutcome(
            summary=f"{what}: drew {len(rows)} of {len(fresh)} fresh pool rows",
            updates={"counts": {"mined_real": len(rows) - n_synth, "mined_synthetic": n_synth,
                                "mined_total": len(rows)}},
        )


@dataclass(frozen=True)
class Arm:
    text: str
    name: str
    flags: dict[str, Any] = field(default_factory=dict)


def split_arms(text: str) -> list[str]:
    """`knn:share=10,ratio=2,random` → ["knn:share=10,ratio=2", "random"]: a comma starts a new arm only
    where an arm name follows it, so an arm's own options may be comma-separated too."""
    names = "|".join(STRATEGY_ARMS + CONTROL_ARMS)
    return re.split(rf",(?=\s*(?:{names})(?::|,|$))", text)


def parse_arm(text: str) -> Arm:
    name, _, opts = text.partition(":")
    if name not in STRATEGY_ARMS + CONTROL_ARMS:
        sys.exit(f"unknown arm {text!r}: use one of {', '.join(STRATEGY_ARMS + CONTROL_ARMS)}[:key=value,...]")
    flags: dict[str, Any] = {"strategy": name} if name in STRATEGY_ARMS else {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        if key not in OPTION_KEYS:
            sys.exit(f"arm {text!r}: unknown option {key!r} (use {', '.join(OPTION_KEYS)})")
        # ratio=none: the class-balance guard off, the arm before class balance by default. A setting of None
        # means "not given" (the default cap applies), so "off" is a cap no pool reaches.
        flags[OPTION_KEYS[key]] = (value if key in TEXT_OPTIONS
                                   else NO_CAP if key == "ratio" and value == "none" else float(value))
    return Arm(text=text, name=name, flags=flags)


@dataclass
class ArmResult:
    state: RunState
    wall_s: float
    ended: str | None = None  # why a run that raised stopped (a hard stop, a failed stage); None: it returned


def latest_state(workspace: Path) -> RunState | None:
    """The state of the newest run under `workspace` (a run that raised still committed what it did)."""
    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import RunLayout

    runs = sorted((workspace / "results").glob("run_*"))
    return StateStore(RunLayout(runs[-1])).load() if runs else None


def run_loop(workspace: Path, iterations: int, *, train_seed: int, flags: dict[str, Any] | None = None,
             mine_stage: Any = None, baseline_checkpoint: str | None = None, epochs: int | None = None) -> ArmResult:
    """`deft run --backend local --yes` in-process (the front door, `api.Loop`); `mine_stage` replaces the
    mine stage. A run that raises (a hard stop, a failed stage) is returned with what it committed and
    `ended` set: one arm's stop is a result of the bench, not its end."""
    from deft_aoi.api import Loop
    from deft_aoi.errors import DeftError

    loop = Loop(workspace, render_report=False, backend="local", max_iterations=iterations, seed=train_seed,
                baseline_checkpoint=baseline_checkpoint, num_epochs=epochs, **(flags or {}))
    if mine_stage is not None:
        loop = loop.with_stage(mine_stage)
    report, config = loop.preflight()
    if not report.ready:
        failed = [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
        sys.exit(f"pre-flight failed for {workspace}:\n  " + "\n  ".join(failed))
    started = time.perf_counter()
    try:
        state = loop.start(report, config)
    except DeftError as exc:
        stopped = latest_state(workspace)
        if stopped is None:
            raise
        return ArmResult(state=stopped, wall_s=time.perf_counter() - started, ended=f"{type(exc).__name__}: {exc}")
    return ArmResult(state=state, wall_s=time.perf_counter() - started)


def mined_counts(state: RunState) -> dict[str, int]:
    return {name: int(it.counts.mined_total or 0) for name, it in state.iterations.items()
            if name != "baseline"}


def copy_baseline_checkpoint(state: RunState, workspace: Path) -> str | None:
    """The first arm's chosen baseline checkpoint, copied into `workspace` (jobs see only their workspace);
    None when that arm stopped before choosing one (this arm then trains its own, with the same seed)."""
    from deft_aoi.loop.artefacts import chosen_checkpoint
    from deft_aoi.workspace.layout import RunLayout

    source = chosen_checkpoint(RunLayout(Path(state.results_dir)), state, "baseline")
    if source is None:
        print("  the first arm recorded no baseline checkpoint: this arm trains its own", flush=True)
        return None
    target = workspace / "baseline_checkpoint" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return str(target)


def train_rates(state: RunState) -> list[float]:
    """Per-epoch image pairs/s of every train job of the run (from the logs the local backend writes), found
    through the run catalog."""
    from deft_aoi.loop.artefacts import find
    from deft_aoi.workspace.layout import RunLayout

    run = RunLayout(Path(state.results_dir))
    rates: list[float] = []
    for it in state.ordered_iterations():
        log = find(run, state, "train.log", it.name, walk_back=False)
        if log is not None and log.is_file():
            rates += [float(m[1]) for m in RATE_RE.finditer(log.read_text(encoding="utf-8"))]
    return rates


@dataclass
class Series:
    """One arm × seed: per iteration (baseline first) FAR@100, FAR@99, rows added, train seconds."""

    far: list[float | None]
    far99: list[float | None]
    added: list[int]
    train_s: list[float]
    rates: list[float]
    stopped: bool = False  # the run hard-stopped or failed before its last iteration


def series(state: RunState) -> Series:
    # Iterations that never reached evaluate (the one a run stopped in) carry no FAR and are left out.
    its = [it for it in state.ordered_iterations() if it.far_pct is not None]
    train = [it.stages["train"].duration_sec or 0.0 if "train" in it.stages else 0.0 for it in its]
    return Series(far=[it.far_pct for it in its],
                  far99=[(it.kpi_report or {}).get("far_at_recall99_pct") for it in its],
                  added=[int(it.counts.new_unique or 0) for it in its],
                  train_s=train, rates=train_rates(state), stopped=state.status != "finished")


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def best_after_baseline(s: Series) -> float | None:
    """The lowest FAR of the iterations after the baseline; the baseline's own when the run ran none (its
    KPI was met there, or it stopped): that is the model the loop hands off, and every mean and paired
    test then covers the same runs."""
    return min((v for v in s.far[1:] if v is not None), default=s.far[0] if s.far else None)


def print_report(results: dict[str, dict[str, Series]], seeds: list[str], iterations: int) -> None:
    """The tables over `seeds`: the paired runs (workspace/seed ids, `s3` or `fold1/s3`)."""
    print(f"\n== {len(seeds)} paired run(s) {', '.join(seeds)}: per arm and iteration (mean; per-run "
          "FAR@recall100 in brackets) ==")
    print(f"{'arm':22s} {'iter':>5s} {'FAR@100':>8s} {'FAR@99':>7s} {'added':>6s} {'train s':>8s}  per seed")
    for arm, by_seed in results.items():
        for i in range(iterations + 1):
            rows = [by_seed[s] for s in seeds if s in by_seed and i < len(by_seed[s].far)]
            far = [r.far[i] for r in rows]
            print(f"{arm:22s} {('base' if i == 0 else str(i)):>5s} {fmt(mean(far)):>7s}% "
                  f"{fmt(mean([r.far99[i] for r in rows])):>6s}% {fmt(mean([r.added[i] for r in rows]), '.0f'):>6s} "
                  f"{fmt(mean([r.train_s[i] for r in rows]), '.0f'):>8s}  [{', '.join(fmt(v) for v in far)}]")
    print("\n== per arm: worse iterations, reduction from baseline, paired tests vs random (one-sided) ==")
    control = results.get("random")
    for arm, by_seed in results.items():
        runs = [by_seed[s] for s in seeds if s in by_seed]
        worse = sum(1 for r in runs for a, b in zip(r.far, r.far[1:], strict=False)
                    if a is not None and b is not None and b > a)
        steps = sum(max(0, len(r.far) - 1) for r in runs)
        base = mean([r.far[0] for r in runs])
        best = mean([best_after_baseline(r) for r in runs])
        change = None if base in (None, 0) or best is None else 100.0 * (best - base) / base
        rates = [x for r in runs for x in r.rates]
        rate = f"; train rate median {statistics.median(rates):.0f} pairs/s" if rates else ""
        stopped = sum(1 for r in runs if r.stopped)
        stops = f"; {stopped} of {len(runs)} runs stopped early (hard stop or failed stage)" if stopped else ""
        print(f"{arm}: {worse} of {steps} iterations made FAR@recall100 worse; mean FAR baseline {fmt(base)}% → "
              f"best {fmt(best)}% ({fmt(change, '+.1f')}% relative){rate}{stops}")
        if control is None or arm == "random":
            continue
        common = [s for s in seeds if s in by_seed and s in control]
        for label, pick in (("final", lambda r: r.far[-1]), ("best", best_after_baseline)):
            pairs = [(pick(control[s]), pick(by_seed[s])) for s in common]
            pairs = [(c, a) for c, a in pairs if c is not None and a is not None]
            if not pairs:
                continue
            res = paired([c for c, _ in pairs], [a for _, a in pairs])
            print(f"  vs random at the {label} iteration: better in {res.wins} of {len(pairs)} paired runs "
                  f"({len(pairs) - res.n} ties); sign test p = {fmt(res.sign_p, '.3f')}, Wilcoxon W+ = "
                  f"{fmt(res.wilcoxon_w, '.1f')}, p = {fmt(res.wilcoxon_p, '.3f')}")


def pair_id(entry: Entry, seed: int) -> str:
    """The key that pairs arms: one workspace of the suite and one seed (`fold2/s1`, or `s1` alone)."""
    return f"{entry.label}/s{seed}" if entry.label else f"s{seed}"


def arm_folder(root: Path, entry: Entry, seed: int, arm: Arm) -> Path:
    return root / entry.label / f"s{seed}_{re.sub(r'[^A-Za-z0-9_.=-]', '_', arm.text)}"


def bench(entries: list[Entry], root: Path, arms: list[Arm], seeds: list[int], iterations: int,
          epochs: int | None, kpi: str | None = None) -> tuple[dict[str, dict[str, Series]], list[str]]:
    results: dict[str, dict[str, Series]] = {arm.text: {} for arm in arms}
    done: list[str] = []
    for entry in entries:
        for seed in seeds:
            pair = pair_id(entry, seed)
            first: ArmResult | None = None
            knn_counts: dict[str, int] | None = None
            for arm in arms:
                ws = arm_folder(root, entry, seed, arm)
                shutil.copytree(entry.path, ws, ignore=shutil.ignore_patterns("results"))
                mine_stage = None
                if arm.name == "random":
                    if knn_counts is None:
                        sys.exit("the random arm needs a strategy arm listed before it (its budget per iteration)")
                    mine_stage = SampleMineStage(knn_counts, seed)
                elif arm.name == "all":
                    mine_stage = SampleMineStage(None, seed)
                flags = {k: v for k, v in arm.flags.items()
                 if arm.name in STRATEGY_ARMS or k in ("finetune_from", "on_worse")}
                if kpi:
                    flags["kpi"] = kpi
                baseline = None if first is None else copy_baseline_checkpoint(first.state, ws)
                result = run_loop(ws, iterations, train_seed=seed, flags=flags, mine_stage=mine_stage,
                                  epochs=epochs, baseline_checkpoint=baseline)
                first = first or result
                if knn_counts is None and arm.name in STRATEGY_ARMS:
                    knn_counts = mined_counts(result.state)
                results[arm.text][pair] = series(result.state)
                far = " → ".join(fmt(v) for v in results[arm.text][pair].far)
                print(f"{pair} {arm.text}: FAR@recall100 {far} ({result.wall_s:.0f} s)", flush=True)
                if result.ended or result.state.status != "finished":
                    why = result.ended or result.state.failure
                    print(f"  recorded outcome: run ended {result.state.status}: {why}", flush=True)
            done.append(pair)
            if (entry, seed) != (entries[-1], seeds[-1]):  # a cumulative table: a cut-short bench leaves figures
                print_report(results, done, iterations)
    return results, done


KEPT_RE = re.compile(r"^s(?P<seed>\d+)_(?P<arm>.+)$")


def kept_arm(folder: str) -> str:
    """The arm text of a kept folder's name (`bench` writes `knn:share=10,ratio=2` as `knn_share=10_ratio=2`)."""
    name, sep, options = folder.partition("_")
    return parse_arm(name + (":" + options.replace("_", ",") if sep else "")).text


def merge_kept(dirs: list[Path]) -> tuple[dict[str, dict[str, Series]], list[str], int]:
    """The series of every run kept under `dirs` (`[<entry>/]s<seed>_<arm>/results/run_*`), by arm text and
    paired-run id. A stopped run is kept as the recorded outcome it is; an arm with no run or several is
    skipped, saying so."""
    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import RunLayout

    results: dict[str, dict[str, Series]] = {}
    for root in dirs:
        folders = [(None, p) for p in root.iterdir() if p.is_dir() and KEPT_RE.match(p.name)]
        folders += [(e.name, p) for e in root.iterdir() if e.is_dir() and not KEPT_RE.match(e.name)
                    for p in e.iterdir() if p.is_dir() and KEPT_RE.match(p.name)]
        for label, ws in sorted(folders, key=lambda lp: str(lp[1])):
            match = KEPT_RE.match(ws.name)
            assert match is not None  # filtered above
            runs = sorted((ws / "results").glob("run_*"))
            if len(runs) != 1:
                print(f"skipped {ws}: {len(runs)} runs", file=sys.stderr)
                continue
            state = StateStore(RunLayout(runs[0])).load()
            if state.status == "running":
                print(f"skipped {ws}: run still running or cut short", file=sys.stderr)
                continue
            pair = pair_id(Entry(label or "", ws), int(match["seed"]))
            results.setdefault(kept_arm(match["arm"]), {})[pair] = series(state)
    if not results:
        sys.exit(f"no kept runs under {', '.join(map(str, dirs))}")
    # the tables list arms in the order the bench runs them (knn first: random is paired with it)
    order = {name: i for i, name in enumerate(STRATEGY_ARMS + CONTROL_ARMS)}
    results = dict(sorted(results.items(), key=lambda kv: (order.get(kv[0].partition(":")[0], 99), kv[0])))
    pairs = sorted({s for by_pair in results.values() for s in by_pair})
    iterations = max(len(x.far) for by_pair in results.values() for x in by_pair.values()) - 1
    return results, pairs, iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=DEEPPCB, help="workspace to copy per arm and seed")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (training seed + control draw seed)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--arms", default="knn,random,all,kpi,diverse",
                        help="comma-separated; a strategy arm must come before random (see the module doc)")
    parser.add_argument("--folds", type=int, default=0,
                        help="grouped cross-validation over the workspace's board groups (boardname): N folds")
    parser.add_argument("--demo-seeds", type=int, default=0,
                        help="the demo workspaces of seeds 0..N-1 (alone, or beside --folds)")
    parser.add_argument("--narrow-kpi", action="store_true",
                        help="a fold's KPI set: only the held-out groups' KPI rows (runs 9-10), not also their "
                             "training and pool rows")
    parser.add_argument("--epochs", type=int, help="override the spec's num_epochs (smoke runs only)")
    parser.add_argument("--kpi", help='KPI target of every run (default: the product\'s); a run whose baseline '
                        'meets it stops there, a tie in the paired tests')
    parser.add_argument("--keep", type=Path, help="work in this folder and keep the runs (default: a temp dir)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                        help="run nothing: print the tables of the runs kept under these --keep folders")
    args = parser.parse_args()
    if args.merge:
        print_report(*merge_kept(args.merge))
        return
    if (args.folds or not args.demo_seeds) and not args.workspace.is_dir():
        sys.exit(f"workspace not found: {args.workspace}")
    arms = [parse_arm(a.strip()) for a in split_arms(args.arms) if a.strip()]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    demo_seeds = list(range(args.demo_seeds))
    print(f"workspace {args.workspace}; folds {args.folds or 'none'}; demo seeds {demo_seeds or 'none'}; "
          f"seeds {seeds}; {args.iterations} iteration(s); arms {', '.join(a.text for a in arms)}; local backend",
          flush=True)

    def run_all(root: Path) -> tuple[dict[str, dict[str, Series]], list[str]]:
        try:
            entries = suite_entries(args.workspace, root, folds=args.folds, demo_seeds=demo_seeds,
                                    wide_kpi=not args.narrow_kpi)
        except ValueError as exc:
            sys.exit(f"cannot build the suite: {exc}")
        return bench(entries, root, arms, seeds, args.iterations, args.epochs, args.kpi)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        results, pairs = run_all(args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results, pairs = run_all(Path(tmp))
    print_report(results, pairs, args.iterations)


if __name__ == "__main__":
    main()
