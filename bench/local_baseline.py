"""Baseline FAR@recall100 of the local model, per training seed, against an earlier revision of the code.

    .venv/bin/python bench/local_baseline.py [--workspace PATH] [--seeds 8] [--before-rev REV] [--after-rev REV]

Per seed, for each arm ("after" = this checkout's src/, "before" = `git archive REV src` when
--before-rev is given), trains the baseline exactly as the loop does (the workspace's spec, its base
training CSV and validation CSV, `train.seed=N`), scores the workspace's KPI CSV with the checkpoint of
the lowest validation loss (as the loop does; `--checkpoint latest`: the last epoch's), and computes FAR
at recall 100 % (and 99 %) with deft's own KPI maths. Each job runs in a fresh subprocess with
PYTHONPATH pointing at the arm's src/, and the arms alternate per seed, so the CPU train rates (median
image pairs/s per epoch, read from train.log) are measured under the same load.
Prints one line per seed and arm, then the mean per arm and the paired per-seed comparison.
The workspace is only read: every output goes to a temporary folder (or --keep DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb-dev"
RATE_RE = re.compile(r"epoch \d+/\d+ .*\([\d.]+ s, (\d+) img-pairs/s\)")


def worker(workspace: Path, out: Path, seed: int, epochs: int | None, checkpoint_rule: str) -> None:
    """One arm, one seed: train the baseline, infer the KPI CSV; writes out/result.json."""
    import deft_aoi
    from deft_aoi.runners.base import Job
    from deft_aoi.runners.local import LocalRunner
    from deft_aoi.runners.tao.outputs import best_val_checkpoint
    from deft_aoi.workspace.layout import WorkspaceLayout

    layout = WorkspaceLayout.at(workspace)
    runner = LocalRunner(layout)
    spec = str(layout.spec_file)
    overrides = [f"train.seed={seed}"] + ([f"train.num_epochs={epochs}"] if epochs else [])
    train_dir = out / "train"
    started = time.perf_counter()
    result = runner.run(Job(name="train", image="", log_file=out / "train.job.log", workdir=layout.root,
                            argv=("visual_changenet", "train", "-e", spec, f"results_dir={train_dir}", *overrides)))
    train_s = time.perf_counter() - started
    if not result.ok:
        sys.exit(f"train failed: see {out / 'train.job.log'}")
    if checkpoint_rule == "best_val":  # what the loop scores (loop/stages/model.py)
        checkpoint = best_val_checkpoint(train_dir).path.resolve()
    else:
        checkpoint = (train_dir / "changenet_model_classify_latest.pth").resolve()
    result = runner.run(Job(name="infer", image="", log_file=out / "infer.job.log", workdir=layout.root,
                            argv=("visual_changenet", "inference", "-e", spec, f"results_dir={out / 'infer'}",
                                  f"inference.checkpoint={checkpoint}")))
    if not result.ok:
        sys.exit(f"inference failed: see {out / 'infer.job.log'}")
    rates = [float(m[1]) for m in RATE_RE.finditer((out / "train.job.log").read_text(encoding="utf-8"))]
    (out / "result.json").write_text(json.dumps({
        "code": str(Path(deft_aoi.__file__).resolve().parents[1]), "train_s": train_s, "rates": rates,
        "inference_csv": str(out / "infer" / "inference.csv"),
    }), encoding="utf-8")


def export_rev(rev: str, dest: Path) -> Path:
    """`git archive REV src` unpacked under dest; returns the src folder."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run_arm(src: Path, workspace: Path, out: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--worker", "--workspace", str(workspace), "--out", str(out),
           "--seed", str(seed), "--checkpoint", args.checkpoint]
    cmd += ["--epochs", str(args.epochs)] if args.epochs else []
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads((out / "result.json").read_text(encoding="utf-8"))
    if Path(result["code"]) != src.resolve():
        sys.exit(f"arm ran {result['code']}, not {src}: is deft_aoi installed non-editable?")
    return result


def far_figures(inference_csv: str) -> tuple[float, float]:
    """(FAR % at recall 100 %, FAR % at recall 99 %) with deft's KPI maths."""
    import pandas as pd

    from deft_aoi.analysis.kpi import evaluate_scores
    from deft_aoi.config import KpiTarget

    df = pd.read_csv(inference_csv, dtype={"label": str}, keep_default_na=False)
    figures = []
    for text in ("FAR<0.1%@recall=100%", "FAR<0.1%@recall=99%"):
        far = evaluate_scores(df, KpiTarget.parse(text)).far_pct
        figures.append(float("nan") if far is None else far)
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=DEEPPCB)
    parser.add_argument("--seeds", type=int, default=8, help="training seeds 0..N-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--before-rev", help="git revision of the 'before' arm (e.g. main); omit for after only")
    parser.add_argument("--after-rev", help="git revision of the 'after' arm (default: this checkout's src/)")
    parser.add_argument("--epochs", type=int, help="override train.num_epochs (default: the spec's)")
    parser.add_argument("--checkpoint", choices=("best_val", "latest"), default="best_val",
                        help="which checkpoint scores the KPI set: lowest val loss (the loop's choice) or the last")
    parser.add_argument("--keep", type=Path, help="keep every job's outputs here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    if args.worker:
        worker(workspace, args.out, args.seed, args.epochs, args.checkpoint)
        return
    if not (workspace / "kpi" / "testing_set.csv").is_file():
        sys.exit(f"{workspace} is not a DEFT workspace (no kpi/testing_set.csv)")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep.resolve() if args.keep else Path(tmp)
        arms = {"after": export_rev(args.after_rev, root / "after_src") if args.after_rev else REPO / "src"}
        if args.before_rev:
            arms = {"before": export_rev(args.before_rev, root / "before"), **arms}
        table: dict[str, dict[int, tuple[float, float, float]]] = {arm: {} for arm in arms}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for arm, src in arms.items():
                result = run_arm(src, workspace, root / arm / f"seed{seed}", seed, args)
                far100, far99 = far_figures(result["inference_csv"])
                rate = statistics.median(result["rates"]) if result["rates"] else float("nan")
                table[arm][seed] = (far100, far99, rate)
                print(f"seed {seed} {arm:6s}: FAR@recall100 {far100:5.1f} %  FAR@recall99 {far99:5.1f} %  "
                      f"train {rate:4.0f} pairs/s (median epoch), job {result['train_s']:.0f} s", flush=True)
        print(f"workspace {workspace}; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}")
        for arm, rows in table.items():
            values = list(rows.values())
            print(f"mean {arm:6s}: FAR@recall100 {statistics.mean(v[0] for v in values):5.1f} %  "
                  f"FAR@recall99 {statistics.mean(v[1] for v in values):5.1f} %  "
                  f"train rate median {statistics.median(v[2] for v in values):.0f} pairs/s")
        if "before" in table:
            before, after = table["before"], table["after"]
            better = sum(after[s][0] < before[s][0] for s in after)
            ratio_far = statistics.mean(v[0] for v in after.values()) / max(
                statistics.mean(v[0] for v in before.values()), 1e-9)
            ratio_rate = statistics.median(v[2] for v in after.values()) / max(
                statistics.median(v[2] for v in before.values()), 1e-9)
            print(f"after/before: mean FAR@recall100 ×{ratio_far:.2f}; lower in {better} of {len(after)} seeds; "
                  f"train rate ×{ratio_rate:.2f}")


if __name__ == "__main__":
    main()
