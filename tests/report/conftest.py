"""Run dirs for the report tests.

`engine_runs`: runs the loop engine really produced (fake backend, a generated demo workspace), once per
session. `make_run`: fabricated runs for shapes and figures a short real run cannot pin down (exact FAR
values, hostile labels, real DeepPCB crops); they use the engine's stage names and put every file where the
run catalog (workspace/catalog.py) says, so they cannot drift from what the engine writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deft_aoi.loop.results import Counts
from deft_aoi.loop.state import (
    Failure,
    IterationState,
    LogEntry,
    MiningFilterConfig,
    RunConfigRecord,
    RunState,
    StageRecord,
)
from deft_aoi.workspace.catalog import artefact, stage_dir
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS

RunKind = Literal["baseline", "finished", "hardstop", "running", "failed", "interrupted"]
KPI = "FAR<0.1%@recall=100%"
STAGES_BASELINE = ("stage_synth", "train", "inference", "evaluate", "rca", "gate")
STAGES_ITER = ("route", "ingest", "mine", "assemble", "validate", "train", "inference", "evaluate", "rca", "gate")
STAMP = "20250101_000100"


def _dir(run: Path, stage: str, iteration: str) -> Path:
    """A stage's output dir, as the engine names it (the run catalog's STAGE_DIRS)."""
    path = run / stage_dir(stage, iteration, STAMP)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RunSpec:
    kind: RunKind = "finished"
    object_name: str = "obj"
    n_kpi: int = 40
    weak_rows: int = 20
    mined_rows: int = 10
    # (input, golden) image paths to use instead of generated PNGs
    images: list[tuple[Path, Path]] | None = None
    far_by_iter: dict[str, float] = field(default_factory=lambda: {"baseline": 0.5, "iter1": 0.3, "iter2": 0.2})


def _tiny_png(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (128, 128), (shade, 255 - shade, 90))
    img.putpixel((5, 5), (255, 255, 255))
    img.save(path)
    return path


def _images(ws: Path, spec: RunSpec, n: int) -> list[tuple[Path, Path]]:
    if spec.images:
        return [spec.images[i % len(spec.images)] for i in range(n)]
    out = []
    for i in range(min(n, 6)):
        out.append(
            (
                _tiny_png(ws / "kpi" / "images" / f"p{i}" / "test" / f"o{i}_SolderLight.png", 20 * i),
                _tiny_png(ws / "kpi" / "images" / f"p{i}" / "golden" / f"o{i}_SolderLight.png", 200 - 20 * i),
            )
        )
    return [out[i % len(out)] for i in range(n)]


def _inference_frame(spec: RunSpec, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = spec.n_kpi
    labels = np.where(np.arange(n) % 3 == 0, "short", "PASS")
    labels[1::7] = "open"
    labels[0] = "PASS"
    scores = np.where(labels == "PASS", rng.uniform(0.0, 0.6, n), rng.uniform(0.4, 1.0, n))
    df = pd.DataFrame({c: [""] * n for c in CHANGENET_COLUMNS})
    df["input_path"] = [f"p{i}/test" for i in range(n)]
    df["golden_path"] = [f"p{i}/golden" for i in range(n)]
    df["label"] = labels
    df["object_name"] = [spec.object_name] * n
    df["siamese_score"] = scores
    return df


def _kpi_dict(df: pd.DataFrame) -> dict[str, object]:
    """The KpiReport fields the evaluator writes, at the highest threshold that keeps recall at 100 %."""
    defect = (df["label"] != "PASS").to_numpy()
    scores = df["siamese_score"].to_numpy()
    below = scores[scores < scores[defect].min()]
    threshold = float(below.max()) if below.size else float(np.nextafter(scores[defect].min(), -np.inf))
    called = scores > threshold
    tp, fp = int((defect & called).sum()), int((~defect & called).sum())
    tn, fn = int((~defect & ~called).sum()), int((defect & ~called).sum())
    n_pass = int((~defect).sum())
    return {
        "n_rows": len(df), "n_pass": n_pass, "n_defect": int(defect.sum()), "threshold": threshold,
        "far_pct": 100.0 * fp / n_pass, "recall_pct": 100.0, "precision_pct": 100.0 * tp / (tp + fp),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "reachable": True, "best_f1_threshold": None, "best_f1": None,
        "min_supported_far_pct": 300.0 / n_pass,
        "support_note": f"the KPI set has {n_pass} PASS rows: too few to support FAR < 0.1%",
        "kpi_met": False, "kpi_text": KPI,
    }


def _stage(name: str, iteration: str, dur: float, summary: str = "", status: str = "complete") -> StageRecord:
    return StageRecord(
        status=status,  # type: ignore[arg-type]
        started_at="2025-01-01T00:00:00Z",
        ended_at=None if status == "in_progress" else "2025-01-01T00:01:00Z",
        duration_sec=None if status == "in_progress" else dur,
        summary=summary,
        output_dir=stage_dir(name, iteration, STAMP),
    )


def build_run(root: Path, spec: RunSpec) -> Path:
    ws = root / "ws"
    run = ws / "results" / "run_20250101_000000"
    run.mkdir(parents=True)
    names = {"baseline": ["baseline"], "running": ["baseline"], "finished": ["baseline", "iter1", "iter2"],
             "hardstop": ["baseline", "iter1"], "failed": ["baseline"], "interrupted": ["baseline"]}[spec.kind]
    state = RunState(
        run_id=run.name,
        started_at="2025-01-01T00:00:00Z",
        workspace=str(ws),
        kpi_target=KPI,
        results_dir=str(run),
        max_iterations=3,
        config=RunConfigRecord(
            specs_file=str(ws / "specs" / "baseline_spec.yaml"), train_csv="t.csv", validation_csv="v.csv",
            kpi_csv="k.csv", images_dir=str(ws / "kpi" / "images"), train_container="local", backend="local",
            num_gpus=1, batch_size=8, num_epochs=2, seed=0, top_k_per_label=50, mining_engine="builtin",
            encoder="builtin", mining_filter=MiningFilterConfig(top_k_per_target=5, min_similarity=0.9),
            parameters=[("kpi", KPI, "default"), ("max_iterations", "3", "flag"), ("num_epochs", "2", "spec")],
        ),
        preflight=[{"name": "workspace", "status": "pass", "detail": "resolved"},
                   {"name": "gpu", "status": "warn", "detail": "no GPU; CPU backend"}],
    )
    log: list[LogEntry] = []
    for idx, name in enumerate(names):
        it = IterationState(name=name, index=idx)
        state.iterations[name] = it
        last_hardstop = spec.kind == "hardstop" and name == names[-1]
        # running: the baseline's evaluate is under way; failed / interrupted: it ended there (a backend job's
        # failure, Ctrl-C), as the engine records those ends
        only_inference = spec.kind in ("running", "failed", "interrupted") and name == "baseline"
        stages = STAGES_BASELINE if name == "baseline" else STAGES_ITER
        imgs = _images(ws, spec, max(spec.weak_rows, spec.mined_rows))
        if name != "baseline":
            mf = _dir(run, "mine", name)
            mined = pd.DataFrame({
                "filepath": [str(imgs[i][0]) for i in range(spec.mined_rows)],
                "label": ["short"] * spec.mined_rows,
                "similarity": np.linspace(0.99, 0.9, spec.mined_rows),
                "matched_target": [str(imgs[-1 - i][0]) for i in range(spec.mined_rows)],
            })
            mined.to_parquet(mf / artefact("mine.rows").path)
            mined[["filepath", "label"]].to_csv(mf / artefact("mine.pool_csv").path, index=False)
            (mf / artefact("mine.validation").path).write_text(json.dumps({
                "ok": True, "checks": [{"name": "leakage", "status": "pass", "detail": "0 rows"}],
                "missing_images": [], "leaked_rows": [], "near_duplicates": 0}))
            leaked = [{"input_path": "p1/test", "row": 4}] if last_hardstop else []
            (_dir(run, "validate", name) / artefact("validate.report").path).write_text(json.dumps({
                "ok": not last_hardstop,
                "checks": [{"name": "required columns", "status": "pass", "detail": ""},
                           {"name": "train/validation leakage", "status": "fail" if last_hardstop else "pass",
                            "detail": "1 leaked row" if last_hardstop else ""}],
                "missing_images": [], "leaked_rows": leaked, "near_duplicates": 2}))
            it.counts = Counts(training_rows=179 + 10 * (idx - 1), mined_real=7, mined_synthetic=3,
                               new_unique=10, total=189 + 10 * (idx - 1), delta=10)
        if last_hardstop:
            for s in stages[: stages.index("validate") + 1]:
                failed = s == "validate"
                it.stages[s] = _stage(s, name, 2.0, "leakage" if failed else "ok",
                                      status="failed" if failed else "complete")
                log.append(LogEntry(seq=len(log) + 1, ts="2025-01-01T00:02:00Z", iter=name, stage=s,
                                    status="error" if failed else "ok", summary="1 leaked row" if failed else "ok",
                                    duration_sec=2.0))
            it.status = "failed"
            state.failure = Failure(kind="leakage", message="1 training row leaks into validation_set.csv",
                                    stage="validate", iteration=name, hard_stop=True,
                                    fix="remove the row from the training CSV")
            state.status = "failed"
            state.stop_reason = "hard stop: leakage"
            continue
        # inference + evaluation
        df = _inference_frame(spec, seed=idx)
        chosen = "best_val"
        inf = artefact(f"inference.{chosen}").at(_dir(run, "inference", name))
        inf.parent.mkdir(parents=True)
        df.to_csv(inf, index=False)
        metrics = _kpi_dict(df)
        if only_inference:
            it.stages["train"] = _stage("train", name, 30.0, "2 epochs")
            it.stages["inference"] = _stage("inference", name, 3.0, "")
            ended = {"failed": "failed", "interrupted": "interrupted"}.get(spec.kind, "in_progress")
            it.stages["evaluate"] = _stage("evaluate", name, 0.0, status=ended)
            if spec.kind in ("failed", "interrupted"):
                state.status = "failed" if spec.kind == "failed" else "interrupted"
                state.failure = Failure(
                    kind="StageFailed" if spec.kind == "failed" else "interrupted",
                    message="evaluate job exited 1" if spec.kind == "failed" else "interrupted by the user (Ctrl-C)",
                    stage="evaluate", iteration=name, hard_stop=False, fix="`deft resume` continues it")
            for s, d in (("train", 30.0), ("inference", 3.0)):
                log.append(LogEntry(seq=len(log) + 1, ts="2025-01-01T00:01:00Z", iter=name, stage=s, status="ok",
                                    summary="ok", duration_sec=d))
            it.status = "in_progress"
            continue
        (_dir(run, "evaluate", name) / artefact("evaluate.metrics").path).write_text(json.dumps(metrics))
        rca = _dir(run, "rca", name)
        gaps = df.head(spec.weak_rows).copy()
        gaps["filepath"] = [str(imgs[i][0]) for i in range(len(gaps))]
        gaps["golden_filepath"] = [str(imgs[i][1]) for i in range(len(gaps))]
        gaps["weakness"] = np.linspace(-0.5, 0.5, len(gaps))
        gaps["light"] = "SolderLight"
        gaps.to_parquet(rca / artefact("rca.kpi_gaps").path)
        for s in stages:
            it.stages[s] = _stage(s, name, 5.0 + len(s), f"{s} done")
            log.append(LogEntry(seq=len(log) + 1, ts="2025-01-01T00:02:00Z", iter=name, stage=s, status="ok",
                                summary=f"{s} done", duration_sec=5.0 + len(s)))
        it.status = "complete"
        it.stage_completed = stages[-1]
        it.far_pct = spec.far_by_iter.get(name, metrics["far_pct"])
        it.recall_pct = 100.0
        it.threshold = metrics["threshold"]
        it.kpi_report = metrics
        it.chosen_checkpoint = chosen
        it.decision = "continue" if name != names[-1] else "max_iterations"
        state.current_iteration = idx
    if spec.kind == "finished":
        state.status = "finished"
        state.stop_reason = "max iterations reached"
        state.best_iteration = "iter2"
        state.finished_at = "2025-01-01T01:00:00Z"
        (run / artefact("handoff.best_model").path).write_text(json.dumps({
            "checkpoint": str(run / "iter2" / "train" / "model_epoch_002_step_20.pth"), "threshold": 0.41,
            "far_pct": 0.2, "iteration": "iter2", "backbone": "resnet18", "images_dir": str(ws),
            "training_spec": str(run / "iter2" / "train" / "experiment.yaml")}))
    elif spec.kind == "hardstop":
        state.best_iteration = "baseline"
    (run / artefact("run.state").path).write_text(state.model_dump_json(indent=2))
    (run / artefact("run.log").path).write_text("".join(e.model_dump_json() + "\n" for e in log))
    return run


@pytest.fixture()
def make_run(tmp_path: Path) -> Callable[..., Path]:
    def make(**kwargs: object) -> Path:
        return build_run(tmp_path, RunSpec(**kwargs))  # type: ignore[arg-type]

    return make


def _deft(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    from typer.testing import CliRunner

    from deft_aoi.cli.app import app

    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", **(env or {})})
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def engine_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs the loop engine really produced on a generated workspace (fake backend): `finished` (baseline +
    one iteration, handed off) and `failed` (the baseline's inference job exits 1: a resumable failure)."""
    import shutil

    from deft_aoi.demo.generator import generate_workspace

    root = tmp_path_factory.mktemp("engine_runs")
    template = root / "template"
    generate_workspace(template, seed=11, size="small")
    fast = ["--max-iterations", "1", "--epochs", "2", "--seed", "1", "--yes"]
    runs: dict[str, Path] = {}
    for kind, backend, env, code in (("finished", "fake", {}, 0),
                                     ("failed", "docker", {"DEFT_DOCKER": "fake",
                                                           "DEFT_FAKE_FAULT": "inference:exit1:once"}, 1)):
        ws = root / kind
        shutil.copytree(template, ws)
        exit_code, output = _deft("run", "-w", str(ws), "--backend", backend, *fast, env=env)
        assert exit_code == code, output
        runs[kind] = next((ws / "results").glob("run_*"))
    return runs
