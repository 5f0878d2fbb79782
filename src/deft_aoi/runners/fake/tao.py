"""What the fake docker client "runs": stand-ins for TAO's entrypoints that write the files TAO would write.

Visual ChangeNet is emulated by a tiny logistic model over pixel statistics of each input/golden pair
(max over lights, from the real images):

- `peak_r0..peak_r4`: the largest 5×5 mean of |input − golden| after the best shift within ±r px
  (a local defect survives alignment and smoothing; speckle and mis-registration up to r px do not),
- `noise`: mean |input − golden| after the best shift within ±4 px.

"Training" first learns how much shift to tolerate: the radius r whose statistic fits the training
rows best (ties go to the smaller radius), then runs deterministic, class-weighted gradient descent
(`train.classify.cls_weight`, initialised from `train.seed` or the pretrained checkpoint) on
[peak_r, noise]. A model trained only on well-registered rows keeps a small radius and raises false
alarms on mis-registered PASS pairs; once mined mis-registered rows join the training set it learns a
larger radius and its FAR falls, as the real loop intends. `siamese_score` = sigmoid(w·x + b).

Checkpoints are small JSON documents in `.pth` files; they are only meant for this fake.
Data Services' `embedding image_embeddings` (a 256-d thumbnail embedding) and `tmm nearest_neighbors`
(cosine k-NN) are emulated too, including the container's habit of exiting 0 after a failure while
logging `Execution status: FAIL`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.errors import DeftError, InputError, UsageError
from deft_aoi.runners.tao import outputs as to

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.runners.tao.command import ChangeNetCommand

CHECKPOINT_FORMAT = "deft-fake-tao/1"
RADII = (0, 1, 2, 3, 4)
FEATURES = (*(f"peak_r{r}" for r in RADII), "noise")
RADIUS_PENALTY = 0.01  # log-loss a wider radius must win by: prefer the simplest invariance
MAX_SHIFT = 4
FEATURE_SCALE = 10.0
STEPS_PER_EPOCH = 25
LEARNING_RATE = 0.5
L2 = 1e-3


class EntrypointError(Exception):
    """The emulated program failed; the message becomes the last log line and the exit code is 1."""


@dataclass
class Execution:
    """The outcome of one emulated command: its exit code and the lines it printed.

    `echo` prints each line as it is said (inside a real container, so the engine streams the log live)."""

    exit_code: int = 0
    lines: list[str] = field(default_factory=list)
    oom_killed: bool = False
    echo: Callable[[str], None] | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)
        if self.echo is not None:
            self.echo(line)


# ---------------------------------------------------------------- pixel statistics


def _load_gray(path: str, size: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

    from deft_aoi.errors import InputError
    from deft_aoi.imaging import open_image, to_8bit

    try:
        with open_image(path) as img:
            gray = to_8bit(img).convert("L")
            if gray.size != size:
                gray = gray.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise EntrypointError(f"FileNotFoundError: [Errno 2] No such file or directory: '{path}'") from exc
    except OSError as exc:
        raise EntrypointError(f"PIL.UnidentifiedImageError: cannot identify image file '{path}'") from exc
    except InputError as exc:  # what TAO's PIL would refuse too (a decompression bomb)
        raise EntrypointError(f"PIL.Image.DecompressionBombError: {exc.render()}") from exc


def _local_peak(a: np.ndarray) -> float:
    """Largest 5×5 box mean: a small defect survives it, single-pixel speckle does not."""
    from numpy.lib.stride_tricks import sliding_window_view

    return float(sliding_window_view(a, (5, 5)).mean(axis=(2, 3)).max())


def pair_statistics(test: np.ndarray, golden: np.ndarray) -> tuple[float, ...]:
    """(peak_r0, ..., peak_r4, noise) for one light; pure."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    s = MAX_SHIFT
    h, w = test.shape
    centre = test[s:h - s, s:w - s]
    windows = sliding_window_view(golden, centre.shape)  # (2s+1, 2s+1, h-2s, w-2s): every shift
    # The shift search on every other pixel is 4x cheaper and finds the same registration.
    coarse = np.abs(windows[:, :, ::2, ::2] - centre[::2, ::2]).mean(axis=(2, 3))
    peaks = []
    best = centre
    for r in RADII:
        block = coarse[s - r:s + r + 1, s - r:s + r + 1]
        dy, dx = np.unravel_index(int(np.argmin(block)), block.shape)
        best = np.abs(centre - windows[dy + s - r, dx + s - r])
        peaks.append(_local_peak(best))
    return (*peaks, float(best.mean()))


@lru_cache(maxsize=200_000)
def _cached_statistics(test_path: str, golden_path: str, size: tuple[int, int]) -> tuple[float, ...]:
    return pair_statistics(_load_gray(test_path, size), _load_gray(golden_path, size))


def row_features(df: pd.DataFrame, images_dir: Path, lights: tuple[str, ...], image_ext: str,
                 size: tuple[int, int]) -> np.ndarray:
    """One feature row per CSV row: each statistic's maximum over the lights."""
    import numpy as np

    from deft_aoi.workspace.changenet_csv import image_paths

    paths = image_paths(df, images_dir, lights, image_ext)
    feats = np.zeros((len(df), len(FEATURES)), dtype=np.float64)
    by_key = {(r, light, side): p for r, light, side, p in paths.itertuples(index=False)}
    for i, row in enumerate(df.index):
        for light in lights:
            stats = _cached_statistics(by_key[(row, light, "input")], by_key[(row, light, "golden")], size)
            feats[i] = np.maximum(feats[i], stats)
    return feats * FEATURE_SCALE


# ---------------------------------------------------------------- the model


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import numpy as np

    probability: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))
    return probability


def design(feats: np.ndarray, radius: int) -> np.ndarray:
    """The model's inputs for one radius: [peak_r, noise]."""
    return feats[:, [RADII.index(radius), len(FEATURES) - 1]]


def predict(params: Mapping[str, Any], feats: np.ndarray) -> np.ndarray:
    import numpy as np

    x = design(feats, int(params["radius"]))
    return _sigmoid(x @ np.asarray(params["weights"], dtype=np.float64) + float(params["bias"]))


def log_loss(params: Mapping[str, Any], feats: np.ndarray, y: np.ndarray) -> float:
    import numpy as np

    p = np.clip(predict(params, feats), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def initial_params(seed: int, radius: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"radius": radius, "weights": rng.normal(0.0, 0.01, 2).tolist(), "bias": 0.0}


def gradient_steps(params: Mapping[str, Any], feats: np.ndarray, y: np.ndarray, weights: tuple[float, float],
                   steps: int) -> dict[str, Any]:
    """Full-batch, class-weighted gradient descent on the logistic loss; deterministic."""
    import numpy as np

    x = design(feats, int(params["radius"]))
    w = np.asarray(params["weights"], dtype=np.float64)
    b = float(params["bias"])
    sample_w = np.where(y > 0.5, weights[1], weights[0])
    sample_w = sample_w / sample_w.sum()
    for _ in range(steps):
        p = _sigmoid(x @ w + b)
        err = (p - y) * sample_w
        w -= LEARNING_RATE * (x.T @ err + L2 * w)
        b -= LEARNING_RATE * float(err.sum())
    return {"radius": int(params["radius"]), "weights": w.tolist(), "bias": b}


def select_radius(feats: np.ndarray, y: np.ndarray, weights: tuple[float, float], seed: int) -> int:
    """The shift tolerance the training rows support: the best-fitting radius, small ones preferred."""
    losses = []
    for r in RADII:
        fitted = gradient_steps(initial_params(seed, r), feats, y, weights, 8 * STEPS_PER_EPOCH)
        losses.append(log_loss(fitted, feats, y) + RADIUS_PENALTY * r)
    return RADII[min(range(len(RADII)), key=losses.__getitem__)]


def write_checkpoint(path: Path, params: Mapping[str, Any], *, epoch: int, step: int) -> None:
    from deft_aoi.io_utils import atomic_write_text

    doc = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "features": list(FEATURES), **params}
    atomic_write_text(path, json.dumps(doc))


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EntrypointError(f"FileNotFoundError: checkpoint not found: '{path}'") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EntrypointError(f"RuntimeError: cannot load checkpoint '{path}' (not written by this backend)") from exc
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:  # JSON, but not our document
        raise EntrypointError(f"RuntimeError: cannot load checkpoint '{path}' (unknown format)")
    return doc


# ---------------------------------------------------------------- Visual ChangeNet


@dataclass(frozen=True)
class ChangeNetRun:
    """A parsed `visual_changenet <task> -e spec k=v...` invocation (runners/tao/command.py's parse) and what the
    fake reads from it: `doc` is the spec as written plus the overrides, values come from the resolved view."""

    job: ChangeNetCommand

    @property
    def task(self) -> str:
        return self.job.task

    @property
    def doc(self) -> dict[str, Any]:
        return self.job.doc

    @property
    def results_dir(self) -> Path:
        return Path(self.job.results_dir)

    def get(self, dotted: str, default: Any = None) -> Any:
        from deft_aoi.dotted import get_dotted

        return get_dotted(self.job.resolved, dotted, default)

    @cached_property
    def spec(self) -> ChangeNetSpec:
        """The keys every reader shares (lights, image_ext, size), read by THE spec parser."""
        from deft_aoi.runners.tao.changenet_spec import parse_spec

        try:
            return parse_spec(self.job.doc, self.job.command.spec_path)
        except DeftError as exc:
            raise EntrypointError(f"omegaconf.errors.ValidationError: {exc.render()}") from exc

    @property
    def lights(self) -> tuple[str, ...]:
        return self.spec.lights

    @property
    def image_ext(self) -> str:
        return self.spec.image_ext

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.image_width, self.spec.image_height

    def dataset(self, name: str) -> tuple[pd.DataFrame, Path]:
        from deft_aoi.workspace.changenet_csv import read_changenet_csv

        csv = self.get(f"dataset.classify.{name}.csv_path")
        images = self.get(f"dataset.classify.{name}.images_dir")
        if not csv or not images:
            raise EntrypointError(f"omegaconf.errors.MissingMandatoryValue: dataset.classify.{name} is not set")
        try:
            return read_changenet_csv(csv), Path(images)
        except DeftError as exc:
            raise EntrypointError(f"ValueError: {exc.render()}") from exc

    def features(self, name: str) -> tuple[pd.DataFrame, np.ndarray]:
        df, images = self.dataset(name)
        return df, row_features(df, images, self.lights, self.image_ext, self.size)


def parse_changenet(argv: list[str]) -> ChangeNetRun:
    from deft_aoi.runners.tao.changenet_spec import load_spec_document
    from deft_aoi.runners.tao.command import CHANGENET_TASKS, ENTRYPOINT, changenet_command, parse_command

    try:
        command = parse_command(argv)
    except UsageError as exc:
        raise EntrypointError(f"usage: {exc.render()}") from exc
    if command.program != ENTRYPOINT or command.command not in CHANGENET_TASKS:
        words = list(command.words)
        raise EntrypointError(f"usage: visual_changenet {{train,inference,evaluate,export}} -e SPEC; got {words}")
    try:
        doc = load_spec_document(command.spec_path)
    except DeftError as exc:
        raise EntrypointError(f"FileNotFoundError: {exc.render()}") from exc
    try:
        return ChangeNetRun(changenet_command(argv, doc))
    except UsageError as exc:  # no results_dir at all: TAO's own ValueError
        raise EntrypointError(f"ValueError: {exc.render()}") from exc


def enforce_tao_rules(run: ChangeNetRun, argv: list[str], image: str | None) -> None:
    """Refuse what TAO refuses: its schema (the image's release), then the very rules deft's preflight applies
    (tao/rules.py), over the spec as TAO merges it. The first failure ends the run like TAO's own error."""
    from deft_aoi.runners.tao import rules as tao_rules
    from deft_aoi.runners.tao.spec import check_schema, effective_spec

    try:
        check_schema(run.doc, None, image=image)  # paths: the container decides what it can open
        spec = effective_spec(run.doc, image=image)
    except DeftError as exc:
        raise EntrypointError(f"omegaconf.errors.ValidationError: {exc.render()}") from exc
    paths = {"spec file": run.job.command.spec_path}
    paths.update({k: str(v) for k, v in run.job.command.overrides if isinstance(v, str) and os.path.isabs(v)})
    bad = tao_rules.failures(tao_rules.changenet_run_rules(spec, run.task, paths))
    if bad:
        raise EntrypointError(f"{bad[0].message} [{bad[0].rule}]")


ACTED_FAULTS = ("hang", "oom", "slow", "slowfail")  # the caller acts these out: the in-memory client pretends,
# a container does it. `slow` runs DEFT_FAKE_SLOW_S seconds (heartbeats) before the job, `slowfail` then fails it:
# a job that a killed deft can leave running, and that finishes (or fails) while deft is away.
SLOW_ENV = "DEFT_FAKE_SLOW_S"
SLOW_DEFAULT_S = 3.0


def slow_seconds() -> float:
    return float(os.environ.get(SLOW_ENV) or SLOW_DEFAULT_S)


def after_slow(fault: str) -> str | None:
    """The fault a `slow*` job runs with once its delay is over."""
    return "exit1" if fault == "slowfail" else None


def write_experiment(run: ChangeNetRun) -> None:
    from deft_aoi.runners.tao.spec import write_spec

    write_spec(run.doc, run.results_dir / "experiment.yaml")


def run_changenet_command(argv: list[str], out: Execution, fault: str | None = None,
                          check: Callable[[ChangeNetRun], None] | None = None, image: str | None = None) -> str | None:
    """`visual_changenet <task> -e SPEC k=v...` as the TAO release of `image` would run it (its rules enforced),
    with an optional injected fault kind (see fake/docker_client.py).

    Returns the fault kind when it is one the caller must act out (ACTED_FAULTS), else None once the job
    ran; `out.exit_code` says how it ended. `check` lets a caller refuse the parsed run (unmounted paths)."""
    task = argv[1] if len(argv) > 1 else ""
    try:
        run = parse_changenet(argv)
        enforce_tao_rules(run, argv, image)
        if check is not None:
            check(run)
        if fault in ACTED_FAULTS:
            if fault == "oom":
                out.say(f"{task}: allocating batch tensors...")
            return fault
        if fault == "exit1":
            raise EntrypointError("RuntimeError: injected failure (DEFT_FAKE_FAULT)")
        if fault == "interrupted":  # TAO's workflow decorator logs FAILURE, swallows the interruption, exits 0
            from deft_aoi.runners.tao import outputs as to

            run.results_dir.mkdir(parents=True, exist_ok=True)
            status = run.results_dir / to.STATUS_FILE
            to.append_status(status, to.status_message(f"Starting Visual ChangeNet {task}.", status="STARTED"))
            to.append_status(status, to.status_message(f"User/System interruption: {task.capitalize()} was "
                                                       f"interrupted", status=to.FAILURE_STATUS))
            return None
        run.results_dir.mkdir(parents=True, exist_ok=True)
        write_experiment(run)
        partial = fault == "partial"
        if task == "train":
            run_train(run, out, partial=partial)
        elif task == "inference":
            run_inference(run, out, partial=partial, missing_image=fault == "missing_image")
        elif task == "export":
            run_export(run, out)
        else:
            run_evaluate(run, out, partial=partial)
    except (EntrypointError, InputError) as exc:
        out.say(f"Error executing job: {exc}")
        out.say(f"{task.capitalize()} failed.")
        out.exit_code = 1
    return None


def _labels(df: pd.DataFrame) -> np.ndarray:
    return (df["label"] != "PASS").to_numpy(dtype=float)


def _acc_fpr_pct(scores: np.ndarray, defect: np.ndarray) -> tuple[float, float]:
    """Accuracy and false-positive rate at 0.5, in PERCENT as 7.3.0 logs them (`val_acc: 50.0`, seen in the
    real-TAO tier)."""
    pred = scores > 0.5
    good = defect < 0.5
    acc = float((pred == ~good).mean()) * 100.0
    fpr = float(pred[good].mean()) * 100.0 if good.any() else 0.0
    return acc, fpr


def run_train(run: ChangeNetRun, out: Execution, *, partial: bool = False) -> None:
    from deft_aoi.runners.tao import outputs as to

    rd = run.results_dir
    status = rd / to.STATUS_FILE
    epochs = int(run.get("train.num_epochs", 10))
    interval = int(run.get("train.checkpoint_interval", 1))
    val_interval = int(run.get("train.validation_interval", 1))
    batch = int(run.get("dataset.classify.batch_size", 16))
    seed = int(run.get("train.seed", 1234))
    cls_weight = tuple(run.get("train.classify.cls_weight") or (1.0, 10.0))
    to.append_status(status, to.status_message("Starting Visual ChangeNet train.", status="STARTED"))
    out.say(f"Train results will be saved at: {rd}")
    if partial:
        with open(status, "a", encoding="utf-8") as fh:
            fh.write('{"date": "1/1/2025", "status": "RUNN')
        out.say("Epoch 0: 12%|█▏        | 3/25 [00:01<00:09]")
        return
    train_df, x_train = run.features("train_dataset")
    val_df, x_val = run.features("validation_dataset")
    y_train, y_val = _labels(train_df), _labels(val_df)
    pretrained = run.get("train.pretrained_model_path")
    weights = (float(cls_weight[0]), float(cls_weight[1]))
    radius = select_radius(x_train, y_train, weights, seed)
    if pretrained:
        params = read_checkpoint(Path(pretrained))
        # a fine-tuned model keeps the shift tolerance it already had
        params = {**params, "radius": max(int(params["radius"]), radius)}
        out.say(f"Loaded pretrained weights from {pretrained}")
    else:
        params = initial_params(seed, radius)
        out.say(f"Global seed set to {seed}")
    out.say(f"Learned shift tolerance: ±{params['radius']} px")
    steps_per_epoch = max(1, math.ceil(len(train_df) / batch))
    # 7.3.0 logs the loop's start as a second STARTED record (seen in the real-TAO tier, tests/tao_real)
    to.append_status(status, to.status_message("Starting Training Loop.", status="STARTED"))
    last: Path | None = None
    train_kpi: dict[str, float] | None = None
    for epoch in range(epochs):
        params = gradient_steps(params, x_train, y_train, weights, STEPS_PER_EPOCH)
        step = (epoch + 1) * steps_per_epoch
        train_loss = log_loss(params, x_train, y_train)
        kpi = None
        if (epoch + 1) % val_interval == 0:
            val_loss = log_loss(params, x_val, y_val)
            acc, fpr = _acc_fpr_pct(predict(params, x_val), y_val)
            kpi = {"val_loss": val_loss, "val_acc": acc, "val_fpr": fpr,
                   "val_far": to.val_far_pct(predict(params, x_val), y_val > 0.5)}
            to.append_status(status, to.status_message("Eval metrics generated.", kpi=kpi))
            out.say(f"Epoch {epoch}: val_loss={val_loss:.4f} val_acc={acc:.4f} val_fpr={fpr:.4f}")
        to.append_status(status, to.status_line(epoch=epoch, step=step, max_epoch=epochs - 1,
                                                message="Training loop in progress", kpi=kpi))
        train_acc, train_fpr = _acc_fpr_pct(predict(params, x_train), y_train)
        train_kpi = {"train_loss": train_loss, "train_acc": train_acc, "train_fpr": train_fpr}
        to.append_status(status, to.status_message("Train metrics generated.", kpi=train_kpi))
        out.say(f"Epoch {epoch}: train_loss={train_loss:.4f} step={step}")
        if (epoch + 1) % interval == 0:
            last = rd / to.checkpoint_name(epoch, step)
            write_checkpoint(last, params, epoch=epoch, step=step)
    if last is not None:
        link = rd / to.LATEST_LINK
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(last.name)
    # TAO's status logger keeps the last kpi on every later record
    to.append_status(status, to.status_message("Training loop complete.", kpi=train_kpi))
    to.append_status(status, to.status_message("Train finished successfully.", kpi=train_kpi,
                                               status=to.FINISHED_STATUS))
    out.say("Train finished successfully.")


def run_inference(run: ChangeNetRun, out: Execution, *, partial: bool = False, missing_image: bool = False) -> None:
    from deft_aoi.runners.tao import outputs as to
    from deft_aoi.workspace.changenet_csv import image_paths

    rd = run.results_dir
    to.append_status(rd / to.STATUS_FILE, to.status_message("Starting Visual ChangeNet inference.", status="STARTED"))
    out.say(f"Inference results will be saved at: {rd}")
    if missing_image:
        df, images = run.dataset("infer_dataset")
        first = image_paths(df.head(1), images, run.lights, run.image_ext)["path"].iloc[0]
        raise EntrypointError(f"FileNotFoundError: [Errno 2] No such file or directory: '{first}'")
    params = read_checkpoint(Path(run.get("inference.checkpoint") or ""))
    df, feats = run.features("infer_dataset")
    scores = predict(params, feats)
    target = rd / to.INFERENCE_CSV
    if partial:
        half = df.head(max(1, len(df) // 2)).copy()
        half["siamese_score"] = scores[: len(half)]
        text = half.to_csv(index=False, lineterminator="\n")
        target.write_text(text + "torn_row,", encoding="utf-8")
        return
    to.write_inference_csv(df, scores, target)
    to.append_status(rd / to.STATUS_FILE,
                     to.status_message("Inference finished successfully.", status=to.FINISHED_STATUS))
    out.say(f"Completed: {len(df)} rows scored -> {target}")


def run_evaluate(run: ChangeNetRun, out: Execution, *, partial: bool = False) -> None:
    from deft_aoi.runners.tao import outputs as to

    rd = run.results_dir
    status = rd / to.STATUS_FILE
    to.append_status(status, to.status_message("Starting Visual ChangeNet evaluate.", status="STARTED"))
    if partial:
        return
    params = read_checkpoint(Path(run.get("evaluate.checkpoint") or ""))
    df, feats = run.features("test_dataset")
    y = _labels(df) > 0.5
    pred = predict(params, feats) > 0.5
    good, bad = ~y, y
    kpi = {
        "test_acc": float((pred == y).mean()),
        "test_fpr": float(pred[good].mean()) if good.any() else 0.0,
        "test_fnr": float((~pred[bad]).mean()) if bad.any() else 0.0,
    }
    to.append_status(status, to.status_message("Test metrics generated.", kpi=kpi))
    to.append_status(status, to.status_message("Evaluate finished successfully.", status=to.FINISHED_STATUS))
    out.say("Test metrics: " + " ".join(f"{k}={v:.4f}" for k, v in kpi.items()))


ONNX_FORMAT = "deft-fake-tao-onnx/1"


def run_export(run: ChangeNetRun, out: Execution) -> None:
    """`visual_changenet export` as tao-pytorch 7.3.0 scripts/export.py runs it (file names, status.json records
    and console lines as the real-TAO tier saw them). The file at export.onnx_file is NOT an ONNX graph: the
    fake's model is a logistic regression over pixel statistics, which no ONNX operator set computes from the
    two input tensors; it is a JSON document (format ONNX_FORMAT) holding the checkpoint's parameters, so a
    consumer that loads it as ONNX fails loudly instead of scoring wrongly (docs/TAO.md, deviations)."""
    rd = run.results_dir
    status = rd / to.STATUS_FILE
    to.append_status(status, to.status_message("Starting Visual ChangeNet export.", status="STARTED"))
    out.say(f"Export results will be saved at: {rd}")
    checkpoint = str(run.get("export.checkpoint") or "")
    params = read_checkpoint(Path(checkpoint))
    # export.py: no export.onnx_file = the checkpoint's name with .onnx; an existing file is an AssertionError
    onnx_file = Path(run.get("export.onnx_file") or os.path.splitext(checkpoint)[0] + ".onnx")
    if onnx_file.exists():
        raise EntrypointError(f"AssertionError: Default onnx file {onnx_file} already exists")
    to.append_status(status, to.status_message("Number of output classes: 2"))
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    onnx_file.write_text(json.dumps({**params, "format": ONNX_FORMAT, "checkpoint": checkpoint}), encoding="utf-8")
    out.say(f"ONNX file stored at {onnx_file}")
    to.append_status(status, to.status_message("Export finished successfully.", status=to.FINISHED_STATUS))


# ---------------------------------------------------------------- Data Services


def _ds_spec(argv: list[str]) -> dict[str, Any]:
    from deft_aoi.runners.tao.changenet_spec import load_spec_document
    from deft_aoi.runners.tao.command import parse_command

    try:
        command = parse_command(argv)
        doc = load_spec_document(command.spec_path)
    except DeftError as exc:
        raise EntrypointError(f"FileNotFoundError: {exc.render()}") from exc
    doc.update(command.override_dict())  # Data Services specs are flat: an override names a top-level key
    return doc


def thumbnail_embedding(path: str) -> np.ndarray:
    """A 256-d unit vector: the centred 16×16 grayscale thumbnail."""
    import numpy as np

    vec = _load_gray(path, (16, 16)).reshape(-1).astype(np.float64)
    vec -= vec.mean()
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def run_embedding(argv: list[str], out: Execution) -> None:
    import numpy as np
    import pandas as pd

    from deft_aoi.runners.tao.rules import embedding_checkpoint_rule, embedding_model_rule, is_tao_checkpoint

    spec = _ds_spec(argv)
    model_path = str(spec.get("model_path") or "")
    if is_tao_checkpoint(model_path):  # the encoder comes from the checkpoint and its train spec, not `model`
        rule = embedding_checkpoint_rule(model_path, spec.get("model_config_path"))
        if rule.failed:
            raise EntrypointError(f"ValueError: {rule.message}")
        for path in (model_path, str(spec["model_config_path"])):
            if not os.path.isfile(path):
                raise EntrypointError(f"FileNotFoundError: {path} does not exist")
    else:
        model = embedding_model_rule(spec.get("model"))
        if model.failed:
            raise EntrypointError(f"NotImplementedError: {model.message}")
    src, dst = Path(str(spec.get("input_parquet"))), Path(str(spec.get("output_parquet")))
    df = pd.read_parquet(src)
    if "filepath" not in df.columns:
        raise EntrypointError(f"KeyError: 'filepath' column missing in {src}")
    out.say(f"Embedding {len(df)} images with {spec.get('model')} ({spec.get('model_path')})")
    # tao-ds 7.3.0 image_embeddings.py: a frame of `filepath`, `embedding` (a model output's `.tolist()`: float64
    # once in parquet), then the input's other columns merged on filepath (how="left"), written with its index.
    # One list per row (an object column); pandas-stubs types a column's list as scalars, hence list[Any].
    vectors: list[Any] = [thumbnail_embedding(str(p)).astype(np.float64).tolist() for p in df["filepath"]]
    result = pd.DataFrame({"filepath": df["filepath"].to_list(), "embedding": vectors})
    extra = [c for c in df.columns if c not in ("filepath", "embedding")]
    if extra:
        result = result.merge(df[["filepath", *extra]], on="filepath", how="left")
    dst.parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(dst)
    out.say(f"Wrote {len(result)} embeddings to {dst}")


def run_nearest_neighbors(argv: list[str], out: Execution) -> None:
    """tao-ds 7.3.0 `mining/tmm/scripts/nearest_neighbors.py`, on NumPy: the top-`topn` source rows of every
    target, THEN label mismatches and distances over `distance_threshold` dropped (no refill), duplicates
    removed; `mining_summary.txt` in NVIDIA's words."""
    import numpy as np
    import pandas as pd

    spec = _ds_spec(argv)
    source = pd.read_parquet(str(spec["source_parquet"]))
    target = pd.read_parquet(str(spec["target_parquet"]))
    output_parquet = str(spec["output_parquet"])
    dst = Path(output_parquet)
    topn = int(spec.get("topn", 5))
    threshold = float(spec.get("distance_threshold", -1.0))
    requested = str(spec.get("filter_by_label", "false")).lower() in ("true", "1", "yes")
    by_label = requested and {"label"} <= set(source.columns) and {"label"} <= set(target.columns)
    if requested and not by_label:
        out.say("WARNING: filter_by_label is enabled but the 'label' column is missing; skipping label filtering")
    src = np.stack(source["embedding"].map(np.asarray).to_list()).astype(np.float64)
    tgt = np.stack(target["embedding"].map(np.asarray).to_list()).astype(np.float64)
    metric = str(spec.get("knn_metric", "cosine"))
    if metric == "cosine":  # cuML's cosine distance: 1 - cosine similarity
        src /= np.maximum(np.linalg.norm(src, axis=1, keepdims=True), 1e-12)
        tgt /= np.maximum(np.linalg.norm(tgt, axis=1, keepdims=True), 1e-12)
        dist = 1.0 - tgt @ src.T
    elif metric in ("euclidean", "manhattan"):
        dist = np.linalg.norm(tgt[:, None, :] - src[None, :, :], ord=2 if metric == "euclidean" else 1, axis=2)
    else:
        raise EntrypointError(f"ValueError: unsupported knn_metric {metric!r}")
    k = min(topn, src.shape[0])
    picked = np.argsort(dist, axis=1, kind="stable")[:, :k]
    src_labels = source["label"].astype(str).str.strip().str.upper().to_numpy() if by_label else None
    tgt_labels = target["label"].astype(str).str.strip().str.upper().to_numpy() if by_label else None
    found: list[str] = []
    mismatched = exceeded = 0
    for i, row in enumerate(picked):
        for j in row:
            if src_labels is not None and tgt_labels is not None and src_labels[j] != tgt_labels[i]:
                mismatched += 1
                continue
            if 0 <= threshold < float(dist[i, j]):
                exceeded += 1
                continue
            found.append(str(source["filepath"].iloc[int(j)]))
    unique = list(dict.fromkeys(found))
    dst.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"filepath": unique}).to_parquet(dst, index=False)
    total = len(target) * topn
    lines = ["Summary:", f"  Target queries: {len(target)}", f"  Similar items per query: {topn}",
             f"  Total pairs: {total}"]
    if by_label:
        lines.append(f"  After label mismatch filtering: kept {total - mismatched}/{total} pairs, "
                     f"dropped {mismatched} mismatches")
    if threshold >= 0:
        lines.append(f"  After distance filtering: kept {total - mismatched - exceeded}/{total - mismatched} pairs, "
                     f"dropped {exceeded} exceeding threshold {threshold:.4f}")
    lines += [f"  Total candidates: {len(found)}", f"  Duplicates removed: {len(found) - len(unique)}",
              f"  Unique items saved: {len(unique)}", f"  Results saved to: {output_parquet}"]
    (dst.parent / "mining_summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.say("\n".join(lines))


def run_data_services_command(argv: list[str], out: Execution, workdir: str | None,
                              fault: str | None = None) -> str | None:
    """`embedding ...` / `tmm ...` run in `workdir`, with an optional injected fault kind; like
    run_changenet_command it returns an ACTED_FAULTS kind for the caller to act out, else None."""
    from deft_aoi.runners.tao.commands import DS_SPEC_DIR

    if not workdir or not os.path.isdir(os.path.join(workdir, DS_SPEC_DIR)):
        out.say(f"Error: {DS_SPEC_DIR}/ directory not found in the working directory")
        out.say("Execution status: FAIL")
        return None
    if fault in ACTED_FAULTS:
        return fault
    if fault is not None:
        out.say("Error: injected failure (DEFT_FAKE_FAULT)")
        out.say("Execution status: FAIL")
        return None
    run_data_services(argv, out)
    return None


def run_data_services(argv: list[str], out: Execution) -> None:
    """Data Services reports failure in its log but still exits 0 (a known container trap, emulated)."""
    handlers: dict[tuple[str, str], Callable[[list[str], Execution], None]] = {
        ("embedding", "image_embeddings"): run_embedding,
        ("tmm", "nearest_neighbors"): run_nearest_neighbors,
    }
    handler = handlers.get((argv[0], argv[1] if len(argv) > 1 else ""))
    try:
        if handler is None:
            raise EntrypointError(f"unknown Data Services command: {' '.join(argv[:2])}")
        handler(argv, out)
    except (EntrypointError, KeyError, ValueError, OSError) as exc:
        out.say(f"Error: {exc}")
        out.say("Execution status: FAIL")
        return
    out.say("Execution status: PASS")
