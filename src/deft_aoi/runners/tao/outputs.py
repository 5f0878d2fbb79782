"""TAO Visual ChangeNet output files, read and written in one place.

The fake docker client and the local runner write through these functions and the stages read through
them, so every backend yields the same shapes: checkpoints `model_epoch_<EEE>_step_<SSSSS>.pth`,
`status.json` (JSON lines from TAO's status logger), `train.log`, and `inference.csv`.

Formats as TAO 6.x writes them (checked against the public tao_pytorch_backend sources):
- Checkpoints: Lightning's `model_{epoch:03d}_{step:05d}` with `_` as the equals sign, i.e.
  `model_epoch_004_step_00250.pth`, one per `checkpoint_interval` epochs, plus a
  `changenet_model_classify_latest.pth` link to the newest (not matched by CHECKPOINT_RE).
- status.json: one JSON object per line with `date` (m/d/yyyy), `time` (h:m:s), `status`
  (STARTED|RUNNING|FAILURE), `verbosity`, `message`, and whatever data the writer adds. Metrics
  live under `kpi`, which the logger keeps on every later line until replaced. Per epoch TAO writes
  "Eval metrics generated." (kpi: val_loss, val_acc, val_fpr and, from 7.3.0, val_far = FAR at 100 % recall
  in percent; no `epoch` key), then the epoch line "Training loop in progress" (epoch, step, max_epoch =
  num_epochs - 1, max_step, time_per_epoch, eta; still carrying the val kpi), then "Train metrics generated."
  (kpi: train_loss, train_acc, train_fpr).
- TAO writes NO SUCCESS record: its workflow decorator ends a good run with a RUNNING "<Task> finished
  successfully." line (FINISHED_STATUS). It writes FAILURE on configuration/parameter/file errors (and
  re-raises) and on an interruption, which it SWALLOWS: the process exits 0 with a FAILURE last record, so the
  runners check `failure_record` after exit 0 (tao-pytorch 7.0.1 / 7.3.0 core/decorators/workflow.py).
- TAO writes no `train.log`; the `<task>.log` beside status.json is the runner's capture of the console.
- inference.csv: the infer CSV's rows and columns as read, plus `siamese_score`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.bounded import loads_json
from deft_aoi.errors import StageFailed

if TYPE_CHECKING:
    import pandas as pd

CHECKPOINT_RE = re.compile(r"^model_epoch_(?P<epoch>\d+)_step_(?P<step>\d+)\.pth$")
# tao_lightning_module.py `_configure_best_checkpoint`: filename "model_best_{epoch:03d}", metric names not inserted
BEST_CHECKPOINT_RE = re.compile(r"^model_best_(?P<epoch>\d+)\.pth$")
SCORE_COLUMN = "siamese_score"
STATUS_FILE = "status.json"  # in a job's results_dir
INFERENCE_CSV = "inference.csv"  # in an inference job's results_dir
VAL_LOSS_KEYS = ("val_loss", "validation_loss", "val_loss_epoch")
VAL_FAR_KEY = "val_far"  # 7.3.0: FAR at 100 % recall on the validation set, in percent (cn_pl_model.py)
FINISHED_STATUS = "RUNNING"  # the status of TAO's "<Task> finished successfully." record (there is no SUCCESS)
FAILURE_STATUS = "FAILURE"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    epoch: int
    step: int


LATEST_LINK = "changenet_model_classify_latest.pth"


def checkpoint_name(epoch: int, step: int) -> str:
    return f"model_epoch_{epoch:03d}_step_{step:05d}.pth"


def list_checkpoints(results_dir: Path) -> list[Checkpoint]:
    """The periodic checkpoints, oldest first. With `train.checkpointer.enable_topk` + `replace_periodic` (7.1.0+)
    TAO writes none: its one metric-best `model_best_<EEE>.pth` (and the `_latest` link to it) stands in."""
    found = []
    for path in Path(results_dir).rglob("model_epoch_*_step_*.pth"):
        match = CHECKPOINT_RE.match(path.name)
        if match:
            found.append(Checkpoint(path=path, epoch=int(match["epoch"]), step=int(match["step"])))
    if not found:
        for path in Path(results_dir).rglob("model_best_*.pth"):
            match = BEST_CHECKPOINT_RE.match(path.name)
            if match:
                found.append(Checkpoint(path=path, epoch=int(match["epoch"]), step=0))
    link = Path(results_dir) / LATEST_LINK
    if not found and link.exists():  # a custom checkpointer.filename: the link still names the checkpoint
        found.append(Checkpoint(path=link.resolve(), epoch=-1, step=0))
    return sorted(found, key=lambda c: (c.epoch, c.step))


def prune_checkpoints(results_dir: Path, keep: set[Path]) -> list[Path]:
    """Delete every epoch checkpoint under `results_dir` but `keep` (TAO keeps all of them, save_top_k=-1: a
    ViT checkpoint is 1–2 GB). The latest-link TAO writes is kept while its target is. Returns what went."""
    kept = {Path(p).resolve() for p in keep}
    gone = []
    for ckpt in list_checkpoints(results_dir):
        if ckpt.path.resolve() not in kept:
            ckpt.path.unlink()
            gone.append(ckpt.path)
    link = Path(results_dir) / LATEST_LINK
    if link.is_symlink() and not link.exists():
        link.unlink()
    return gone


def latest_checkpoint(results_dir: Path) -> Checkpoint:
    return _checkpoints_or_fail(results_dir)[-1]


def status_message(message: str, *, kpi: dict[str, float] | None = None, status: str = "RUNNING",
                   data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A status.json line without an epoch (start/end, "Eval metrics generated.", ...)."""
    now = datetime.now(UTC)
    line: dict[str, Any] = dict(data or {})
    line.update({
        "date": f"{now.month}/{now.day}/{now.year}",
        "time": f"{now.hour}:{now.minute}:{now.second}",
        "status": status,
        "verbosity": "INFO",
        "message": message,
    })
    if kpi:
        line["kpi"] = kpi
    return line


def status_line(
    *, epoch: int, max_epoch: int, message: str, kpi: dict[str, float] | None = None, status: str = "RUNNING",
    step: int | None = None,
) -> dict[str, Any]:
    """The per-epoch line; `max_epoch` is TAO's (num_epochs - 1)."""
    data: dict[str, Any] = {"epoch": epoch}
    if step is not None:
        data["step"] = step
    data["max_epoch"] = max_epoch
    return status_message(message, kpi=kpi, status=status, data=data)


def append_status(path: Path, line: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def read_status(path: Path) -> list[dict[str, Any]]:
    """status.json lines; a torn last line (killed job) is skipped, other bad lines are errors."""
    if not Path(path).is_file():
        return []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            out.append(loads_json(raw))
        except ValueError as exc:  # malformed or nested too deep
            if i == len(lines) - 1:
                break
            raise StageFailed(f"{path}: line {i + 1} is not JSON: {exc}") from exc
    return out


def failure_record(path: Path) -> dict[str, Any] | None:
    """The FAILURE record of the last run logged in status.json `path` (records after its last STARTED), if any:
    TAO swallows an interruption after writing it and exits 0."""
    records = read_status(path)
    starts = [i for i, r in enumerate(records) if r.get("status") == "STARTED"]
    last_run = records[starts[-1]:] if starts else records
    return next((r for r in reversed(last_run) if r.get("status") == FAILURE_STATUS), None)


def val_far_pct(scores: Any, defect: Any) -> float:
    """TAO 7.3.0's `val_far`: FAR at 100 % recall in percent, PASS rows scoring ≥ the lowest defect score over
    all PASS rows; 100.0 when the validation set lacks a class (cn_pl_model.py `_compute_val_far`)."""
    import numpy as np

    s = np.asarray(scores, dtype=float).reshape(-1)
    y = np.asarray(defect, dtype=bool).reshape(-1)
    if not y.any() or y.all():
        return 100.0
    return float((s[~y] >= s[y].min()).mean() * 100.0)


def _number(holder: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in holder and holder[key] is not None:
            try:
                return float(holder[key])
            except (TypeError, ValueError):
                return None
    return None


def _val_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """The validation numbers of a status.json line: val_loss (any of its spellings) and, from 7.3.0, val_far."""
    out: dict[str, float] = {}
    for holder in (entry.get("kpi") or {}, entry):
        for name, keys in (("val_loss", VAL_LOSS_KEYS), ("val_far", (VAL_FAR_KEY,))):
            value = _number(holder, keys)
            if name not in out and value is not None:
                out[name] = value
    return out


def validation_by_epoch(results_dir: Path) -> dict[int, dict[str, float]]:
    """Epoch → its validation metrics (val_loss, val_far where reported), from status.json.

    TAO logs the validation metrics on a line without `epoch`, just before that epoch's line; the epoch line
    usually repeats them (the logger's kpi persists), but a pending value covers both."""
    out: dict[int, dict[str, float]] = {}
    pending: dict[str, float] = {}
    for entry in read_status(Path(results_dir) / STATUS_FILE):
        metrics = _val_metrics(entry)
        epoch = entry.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            if metrics and entry.get("message") != "Train metrics generated.":
                pending = metrics
            continue
        metrics = {**pending, **metrics}
        pending = {}
        if metrics:
            out[epoch] = metrics
    return out


def _checkpoints_or_fail(results_dir: Path) -> list[Checkpoint]:
    ckpts = list_checkpoints(results_dir)
    if not ckpts:
        raise StageFailed(f"training wrote no checkpoint (model_epoch_*_step_*.pth) under {results_dir}")
    return ckpts


def best_val_checkpoint(results_dir: Path) -> Checkpoint:
    """The checkpoint of the epoch with the lowest validation loss in status.json (the earliest on a tie).

    Falls back to the latest checkpoint when status.json has no validation metric."""
    ckpts = _checkpoints_or_fail(results_dir)
    by_epoch = {c.epoch: c for c in ckpts}
    scored = [(m["val_loss"], epoch) for epoch, m in validation_by_epoch(results_dir).items()
              if epoch in by_epoch and "val_loss" in m]
    return by_epoch[min(scored)[1]] if scored else ckpts[-1]


def best_far_checkpoint(results_dir: Path) -> Checkpoint | None:
    """The checkpoint of the epoch with the lowest validation FAR at 100 % recall (`val_far`, the KPI's own
    measure), or None when status.json reports none (TAO before 7.3.0).

    Only epochs with a saved checkpoint are candidates (one per checkpoint_interval): a better epoch between
    two saves is gone. val_far moves in steps of one PASS row of the validation set, so ties are common: the
    lower val_loss of the tied epochs breaks them (the finer measure on the same rows), then the later epoch
    (more training on the same FAR, as `latest`)."""
    by_epoch = {c.epoch: c for c in _checkpoints_or_fail(results_dir)}
    scored = [(m["val_far"], m.get("val_loss", math.inf), -epoch)
              for epoch, m in validation_by_epoch(results_dir).items() if epoch in by_epoch and "val_far" in m]
    return by_epoch[-min(scored)[2]] if scored else None


def write_inference_csv(rows: pd.DataFrame, scores: Any, path: Path) -> None:
    """The infer CSV's columns in their order, plus `siamese_score`."""
    from deft_aoi.io_utils import atomic_write_csv

    out = rows.copy()
    out[SCORE_COLUMN] = scores
    atomic_write_csv(out, Path(path))


def read_inference_csv(path: Path) -> pd.DataFrame:
    """Read an inference CSV; the score column must be present and numeric."""
    import pandas as pd

    from deft_aoi.errors import InputError
    from deft_aoi.workspace.changenet_csv import read_changenet_csv

    df = read_changenet_csv(path, allow_empty=False)
    if SCORE_COLUMN not in df.columns:
        raise InputError(f"no '{SCORE_COLUMN}' column (not a ChangeNet inference CSV?)", file=path)
    scores = pd.to_numeric(df[SCORE_COLUMN], errors="coerce")
    bad = scores.isna()
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(
            f"'{SCORE_COLUMN}' is missing or not a number in {int(bad.sum())} row(s)", file=path, row=first + 2
        )
    # TAO's score is a softmax probability; anything outside [0, 1] (or inf) is another column or a
    # logit, and a threshold sweep over it would report a KPI that means nothing.
    outside = ~scores.between(0.0, 1.0)
    if outside.any():
        first = int(outside.to_numpy().nonzero()[0][0])
        raise InputError(
            f"'{SCORE_COLUMN}' = {scores.iloc[first]!r} is not a probability in [0, 1] "
            f"({int(outside.sum())} row(s) outside)", file=path, row=first + 2,
            hint="siamese_score must be the softmax probability of the defect class, as TAO writes it",
        )
    df[SCORE_COLUMN] = scores.astype(float)
    return df


def check_inference_csv(path: Path, infer_csv: Path) -> pd.DataFrame:
    """The inference CSV a job wrote for `infer_csv`, checked before its stage commits: it parses, carries
    every input column plus a finite probability per row, and holds exactly the input's rows. A backend that
    exits 0 after a torn write (disk full, killed writer) must fail the job's own stage, resumably: once
    committed, every later stage would trip over it and a resume would never redo the inference.
    StageFailed naming the file, and the row where known."""
    from deft_aoi.errors import InputError
    from deft_aoi.workspace.changenet_csv import read_changenet_csv

    try:
        expected = read_changenet_csv(infer_csv, allow_empty=False)
        df = read_inference_csv(path)
    except InputError as exc:
        raise StageFailed(f"the inference job wrote an unusable CSV: {exc.render()}") from exc
    missing = [c for c in expected.columns if c not in df.columns]
    if missing:
        raise StageFailed(f"{path}: the inference job dropped input column(s) {', '.join(missing)}")
    if len(df) != len(expected):
        raise StageFailed(f"{path}: {len(df)} scored row(s) for the {len(expected)} row(s) of {infer_csv} "
                          "(a torn or partial write); the stage will redo the inference on resume")
    return df

