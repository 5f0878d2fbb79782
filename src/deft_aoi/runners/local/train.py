"""`visual_changenet train` in-process: from scratch, the comparator's gain and bias and the shape head fitted
exactly (fit_comparator); a fine-tune keeps its checkpoint's (start_model); then the CNN correction by
weighted cross-entropy, AdamW, linear LR decay, optional flips.

Writes, through runners/tao/outputs.py, what TAO writes: checkpoints per checkpoint_interval (and the
last epoch) plus the `latest` link, status.json in TAO's per-epoch order ("Eval metrics generated." with
val_loss/val_acc/val_fpr per validation_interval, the epoch line, "Train metrics generated."), train.log
and experiment.yaml. Epochs are numbered from 0 as in TAO's checkpoint names.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from deft_aoi.console import progress
from deft_aoi.io_utils import atomic_write_text
from deft_aoi.runners.local.argv import TaskConfig, get
from deft_aoi.runners.local.checkpoint import load_model, save_checkpoint
from deft_aoi.runners.local.data import PairImages, load_pairs, own_crop_side
from deft_aoi.runners.local.infer import defect_probability, evaluation_metrics
from deft_aoi.runners.local.joblog import JobControl, JobLog
from deft_aoi.runners.local.model import (
    ModelConfig,
    SiameseChangeNet,
    build_model,
    change_shape,
    log_peak,
    out_of_tolerance,
    to_input,
)
from deft_aoi.runners.local.runtime import (
    configure_threads,
    decode_workers,
    describe_device,
    model_config_for,
    model_config_of_checkpoint,
    pair_images,
    pick_device,
    seed_everything,
)
from deft_aoi.runners.tao.outputs import (
    FINISHED_STATUS,
    LATEST_LINK,
    STATUS_FILE,
    append_status,
    checkpoint_name,
    status_line,
    status_message,
    val_far_pct,
)

# TAO's spec lr (≈1e-5..1e-4) is tuned to fine-tune a pretrained ViT; this CNN starts from scratch and
# would barely move at that rate, so the local backend uses at least this lr (logged when it applies).
MIN_LOCAL_LR = 1e-3
# A fine-tune starts from the best checkpoint so far; at the full rate its first epochs can wipe out the
# gain that checkpoint holds, so a fine-tune runs at this share of the effective lr.
FINETUNE_LR_FACTOR = 1 / 3
EVAL_BATCH = 256


def flip_pairs(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips, the SAME flip for a pair's input and golden (a change stays a
    change only if both sides move together)."""
    flips = torch.rand((batch.shape[0], 2), generator=generator) < 0.5
    out = batch.clone()
    for axis, dim in ((0, -1), (1, -2)):
        chosen = flips[:, axis].nonzero().flatten().to(batch.device)
        if len(chosen):
            out[chosen] = out[chosen].flip(dim)
    return out


def rates(correct: int, false_alarms: int, passes: int, total: int) -> tuple[float, float]:
    """(accuracy, false-alarm rate = FP / PASS rows)."""
    return correct / max(total, 1), false_alarms / max(passes, 1)


def validation_kpi(
    model: SiameseChangeNet,
    images: PairImages,
    targets: np.ndarray,
    cls_weight: tuple[float, float],
    device: torch.device,
    control: JobControl,
) -> dict[str, float]:
    """val_loss (the weighted training loss), val_acc and val_fpr at 0.5 and val_far (FAR at 100 % recall, in
    percent, as TAO 7.3.0 reports it), in eval mode."""
    model.eval()
    logits = np.empty((len(targets), 2), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(targets), EVAL_BATCH):
            control.check()
            idx = np.arange(start, min(start + EVAL_BATCH, len(targets)))
            logits[idx] = model(to_input(images.batch(idx), device)).double().cpu().numpy()
    metrics = evaluation_metrics(logits, targets, cls_weight)
    confusion = metrics["confusion"]
    passes = confusion["fp"] + confusion["tn"]
    return {
        "val_loss": metrics["loss"],
        "val_acc": metrics["accuracy"],
        "val_fpr": confusion["fp"] / passes if passes else 0.0,
        "val_far": val_far_pct(defect_probability(logits), targets == 1),
    }


def fit_comparator(model: SiameseChangeNet, images: PairImages, targets: np.ndarray,
                   cls_weight: tuple[float, float]) -> str:
    """Fits the prior's gain and bias and the shape head EXACTLY on the training set (full-batch L-BFGS,
    the class-weighted cross-entropy summed over rows plus ½‖w‖² on the head's weights over standardised
    descriptors, i.e. an L2 logistic regression with C = 1), the CNN's current correction held as an
    offset. Those few dozen numbers are then frozen while the CNN trains: a convex fit converges where a
    few hundred SGD steps at any one lr would not (on a base set the comparator already separates, SGD
    either barely moves them or overfits the changed area). Returns a log line."""
    cpu = torch.device("cpu")
    model.eval()
    shapes, logs, offsets = [], [], []
    with torch.no_grad():
        for start in range(0, len(targets), EVAL_BATCH):
            x = to_input(images.batch(np.arange(start, min(start + EVAL_BATCH, len(targets)))), cpu)
            changed = out_of_tolerance(x)
            shapes.append(change_shape(changed, x[:, 1]))
            logs.append(log_peak(changed))
            offsets.append(model.correction(x))
    if not shapes or len(np.unique(targets)) < 2:
        return "comparator fit skipped: the training set lacks a class"
    # Column 0 = the comparator's log change, then the shape descriptors; all standardised and all under
    # the L2 term (an unpenalised gain grows without bound on a base set the comparator separates).
    feats = torch.cat([torch.cat(logs)[:, None], torch.cat(shapes)], dim=1).double()
    offset = torch.cat(offsets).double()
    y = torch.from_numpy(np.asarray(targets)).double()
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    z = (feats - mean) / std
    weight = torch.where(y > 0, cls_weight[1], cls_weight[0]).double()
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logit = z @ w + bias + offset
        loss = (weight * nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="none")).sum()
        loss = loss + 0.5 * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        raw = w / std
        head = raw[1:]
        model.shape_head.weight.copy_(head.float()[None])
        model.prior.copy_(torch.stack([raw[0], bias[0] - (raw * mean).sum()]).float())
    fitted_gain, fitted_bias = (float(v) for v in model.prior.detach())
    return (f"comparator fit on {len(targets)} rows: gain {fitted_gain:.3g}, bias {fitted_bias:.3g}, shape head |w| "
            f"{float(head.norm()):.3g}")


def start_model(pretrained: Path | None, wanted: ModelConfig, images: PairImages, targets: np.ndarray,
                cls_weight: tuple[float, float]) -> tuple[SiameseChangeNet, str]:
    """The model a train job starts from, and a log line saying how.

    From scratch: a fresh model whose comparator and shape head are fitted on the training set.
    A fine-tune: the checkpoint as it is, its fitted comparator and shape head KEPT; only the bounded CNN
    correction learns from the fine-tune's rows. Why: the rows a loop adds are a deliberately biased
    sample (mined for their likeness to the KPI set's errors, mostly hard PASS rows), and an exact
    refit of the unbounded linear terms on such a sample moves every pair's score at once. Measured on
    the demo (bench/RESULTS.md, run 12): the refit alone took FAR@recall100 from 27 % to 33–72 % and
    54 % to 78–80 %, the CNN correction alone (the kept head) to 24–27 % and 39–49 %; the correction
    is bounded to ±RESIDUAL_BOUND logits, so it can re-rank near-ties but not swing the whole ranking."""
    if pretrained is None:
        model = build_model(wanted)
        return model, fit_comparator(model, images, targets, cls_weight)
    model = load_model(pretrained, wanted)
    gain, bias = (float(v) for v in model.prior.detach())
    return model, (f"fine-tuning from {pretrained}; its comparator (gain {gain:.3g}, bias {bias:.3g}) and shape "
                   f"head (|w| {float(model.shape_head.weight.detach().norm()):.3g}) are kept, the CNN "
                   f"correction learns")


def link_latest(out_dir: Path, checkpoint: str) -> None:
    """`changenet_model_classify_latest.pth` → the newest checkpoint (relative link, replaced atomically)."""
    tmp = out_dir / f".{LATEST_LINK}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(checkpoint, tmp)
    os.replace(tmp, out_dir / LATEST_LINK)


def effective_lr(spec_lr: float, *, fine_tune: bool, log: JobLog | None = None) -> float:
    """The local CNN's lr: at least MIN_LOCAL_LR, scaled by FINETUNE_LR_FACTOR for a fine-tune."""
    lr = max(spec_lr, MIN_LOCAL_LR)
    if log is not None and lr != spec_lr:
        log.line(f"spec lr {spec_lr:g} is below the local CNN's minimum; using lr {lr:g}")
    if fine_tune:
        lr *= FINETUNE_LR_FACTOR
        if log is not None:
            log.line(f"fine-tune: lr {lr:g} ({FINETUNE_LR_FACTOR:.3g} of the effective lr)")
    return lr


def run_train(cfg: TaskConfig, log: JobLog, control: JobControl) -> None:
    configure_threads()
    device = pick_device(control.device)
    generator = seed_everything(cfg.seed, device)
    out_dir = cfg.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    log.mirror_to(out_dir / "train.log")
    atomic_write_text(out_dir / "experiment.yaml", yaml.safe_dump(cfg.raw, sort_keys=False))
    status_path = out_dir / STATUS_FILE

    workers = decode_workers(cfg.workers)
    started = time.monotonic()
    train_table = load_pairs(cfg.dataset("train"), cfg.lights, cfg.image_ext)
    # A fine-tune keeps the size its checkpoint was trained at; a fresh model sees the crops at their own size.
    wanted = (model_config_of_checkpoint(cfg, cfg.pretrained_model_path) if cfg.pretrained_model_path is not None
              else model_config_for(cfg, own_crop_side(train_table)))
    size = (wanted.input_width, wanted.input_height)
    train_images = pair_images(train_table, wanted, workers)
    val_images: PairImages | None = None
    val_targets: np.ndarray | None = None
    if "validation" in cfg.datasets:
        val_table = load_pairs(cfg.dataset("validation"), cfg.lights, cfg.image_ext)
        val_images, val_targets = pair_images(val_table, wanted, workers), val_table.targets
    n_defect = int(train_table.targets.sum())
    log.line(
        f"local backend: {len(train_table)} train rows ({n_defect} defect, {len(train_table) - n_defect} PASS)"
        f", {0 if val_targets is None else len(val_targets)} validation rows; images "
        f"{cfg.image_width}x{cfg.image_height} seen at {size[0]}x{size[1]}, goldens registered within "
        f"{train_images.align_px} px of the crop's own resolution (±{train_images.align_shift} px here); "
        f"lights {list(cfg.lights)}; "
        f"decoded in {time.monotonic() - started:.2f} s; device {describe_device(device)}; seed {cfg.seed}"
    )

    model, started_line = start_model(cfg.pretrained_model_path, wanted, train_images, train_table.targets,
                                      cfg.cls_weight)
    log.line(started_line)
    model.to(device)

    lr = effective_lr(cfg.lr, fine_tune=cfg.pretrained_model_path is not None, log=log)
    weight_decay = float(get(cfg.raw, "train.optim.weight_decay", 0.01))
    groups: list[dict[str, Any]] = [
        # The prior and the shape head were fitted exactly (fit_comparator) and stay as fitted.
        {"params": [p for n, p in model.named_parameters() if n not in ("prior", "shape_head.weight")]},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    epochs = cfg.num_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0 - e / epochs)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(cfg.cls_weight, dtype=torch.float32, device=device))
    targets = train_table.targets
    n_batches = -(-len(targets) // cfg.batch_size)

    append_status(status_path, status_message("Starting Training Loop.", status="STARTED"))
    step = 0
    with progress() as bars:
        epoch_bar = bars.add_task("train epochs", total=epochs, rate="")
        batch_bar = bars.add_task("batches", total=n_batches, rate="")
        for epoch in range(epochs):
            epoch_started = time.monotonic()
            model.train()
            bars.reset(batch_bar, total=n_batches)
            order = torch.randperm(len(targets), generator=generator).numpy()
            loss_sum = 0.0
            correct = false_alarms = 0
            for start in range(0, len(order), cfg.batch_size):
                control.check()
                idx = order[start : start + cfg.batch_size]
                x = to_input(train_images.batch(idx), device)
                if cfg.augment:
                    x = flip_pairs(x, generator)
                y = torch.from_numpy(targets[idx]).to(device)
                optimizer.zero_grad(set_to_none=True)
                logits = model(x)
                loss = criterion(logits, y)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += loss.item() * len(idx)
                predicted = logits.detach().argmax(dim=1)
                correct += int((predicted == y).sum())
                false_alarms += int(((predicted == 1) & (y == 0)).sum())
                bars.advance(batch_bar)
            scheduler.step()
            seconds = time.monotonic() - epoch_started
            last = epoch == epochs - 1
            val_kpi: dict[str, float] = {}
            if val_images is not None and val_targets is not None and (
                (epoch + 1) % cfg.validation_interval == 0 or last
            ):
                val_kpi = validation_kpi(model, val_images, val_targets, cfg.cls_weight, device, control)
                append_status(status_path, status_message("Eval metrics generated.", kpi=val_kpi))
            if (epoch + 1) % cfg.checkpoint_interval == 0 or last:
                name = checkpoint_name(epoch, step)
                save_checkpoint(out_dir / name, model, epoch=epoch, step=step)
                link_latest(out_dir, name)
            append_status(status_path, status_line(epoch=epoch, max_epoch=epochs - 1, step=step,
                                                   message="Training loop in progress", kpi=val_kpi or None))
            train_acc, train_fpr = rates(correct, false_alarms, int((targets == 0).sum()), len(targets))
            train_kpi = {"train_loss": loss_sum / len(targets), "train_acc": train_acc, "train_fpr": train_fpr}
            append_status(status_path, status_message("Train metrics generated.", kpi=train_kpi))
            kpi = {**train_kpi, **val_kpi}
            rate = len(targets) / max(seconds, 1e-9)
            log.line(
                f"epoch {epoch + 1}/{epochs} step {step} "
                + " ".join(f"{k}={v:.4f}" for k, v in kpi.items())
                + f" ({seconds:.2f} s, {rate:.0f} img-pairs/s)"
            )
            bars.update(batch_bar, rate=f"{rate:.0f} pairs/s")
            bars.advance(epoch_bar)
    append_status(status_path, status_message("Train finished successfully.", status=FINISHED_STATUS))
    log.line(f"training done in {time.monotonic() - started:.1f} s")
