from __future__ import annotations

import json
from pathlib import Path

from deft_aoi.runners.tao import outputs as to


def _touch(d: Path, epoch: int, step: int) -> Path:
    p = d / to.checkpoint_name(epoch, step)
    p.write_bytes(b"x")
    return p


def test_checkpoint_name_matches_tao() -> None:
    assert to.checkpoint_name(4, 250) == "model_epoch_004_step_00250.pth"
    assert to.CHECKPOINT_RE.match(to.checkpoint_name(12, 123456))
    assert not to.CHECKPOINT_RE.match(to.LATEST_LINK)


def test_best_val_reads_tao_line_order(tmp_path: Path) -> None:
    """TAO: 'Eval metrics generated.' (kpi, no epoch) → epoch line → 'Train metrics generated.'."""
    for e in range(3):
        _touch(tmp_path, e, (e + 1) * 10)
    lines = [to.status_message("Starting Visual ChangeNet train.", status="STARTED")]
    for epoch, val in enumerate((0.9, 0.3, 0.5)):
        lines.append(to.status_message("Eval metrics generated.", kpi={"val_loss": val}))
        lines.append(to.status_line(epoch=epoch, step=(epoch + 1) * 10, max_epoch=2,
                                    message="Training loop in progress"))  # kpi not repeated here
        lines.append(to.status_message("Train metrics generated.", kpi={"train_loss": 0.01 * epoch}))
    (tmp_path / "status.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert to.best_val_checkpoint(tmp_path).epoch == 1
    assert to.latest_checkpoint(tmp_path).epoch == 2


def test_best_val_ignores_train_loss_and_torn_tail(tmp_path: Path) -> None:
    for e in range(2):
        _touch(tmp_path, e, e + 1)
    lines = [
        to.status_message("Train metrics generated.", kpi={"val_loss": 0.0}),  # not a validation line
        to.status_line(epoch=0, step=1, max_epoch=1, message="x", kpi={"val_loss": 0.4}),
        to.status_line(epoch=1, step=2, max_epoch=1, message="x", kpi={"val_loss": 0.6}),
    ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"date": "1/1/2025", "sta'
    (tmp_path / "status.json").write_text(text)
    assert to.best_val_checkpoint(tmp_path).epoch == 0


def test_status_lines_have_tao_fields() -> None:
    line = to.status_line(epoch=3, step=40, max_epoch=9, message="Training loop in progress")
    assert {"date", "time", "status", "verbosity", "message", "epoch", "step", "max_epoch"} <= set(line)
    assert line["date"].count("/") == 2 and line["time"].count(":") == 2
