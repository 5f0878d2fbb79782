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


def test_replace_periodic_leaves_only_the_best_checkpoint_and_it_is_found(tmp_path: Path) -> None:
    # train.checkpointer.enable_topk + replace_periodic (7.1.0+): no model_epoch_*, one model_best_<EEE>.pth and
    # the _latest link to it (tao_lightning_module.py `_configure_best_checkpoint`).
    best = tmp_path / "model_best_004.pth"
    best.write_text("w")
    (tmp_path / to.LATEST_LINK).symlink_to(best.name)
    assert to.latest_checkpoint(tmp_path).path == best and to.latest_checkpoint(tmp_path).epoch == 4
    assert to.best_val_checkpoint(tmp_path).path == best
    assert to.prune_checkpoints(tmp_path, {best}) == [] and best.is_file()
    best.rename(tmp_path / "custom_name.pth")  # a custom checkpointer.filename: the link still names it
    (tmp_path / to.LATEST_LINK).unlink()
    (tmp_path / to.LATEST_LINK).symlink_to("custom_name.pth")
    assert to.latest_checkpoint(tmp_path).path == (tmp_path / "custom_name.pth").resolve()


def test_periodic_checkpoints_win_over_a_best_copy(tmp_path: Path) -> None:
    (tmp_path / to.checkpoint_name(1, 10)).write_text("w")
    (tmp_path / "model_best_000.pth").write_text("w")  # enable_topk without replace_periodic: additive
    assert [c.path.name for c in to.list_checkpoints(tmp_path)] == [to.checkpoint_name(1, 10)]


def test_failure_record_of_the_last_run_only(tmp_path: Path) -> None:
    status = tmp_path / to.STATUS_FILE
    to.append_status(status, to.status_message("Starting train.", status="STARTED"))
    to.append_status(status, to.status_message("User/System interruption: Train was interrupted",
                                               status=to.FAILURE_STATUS))
    assert to.failure_record(status)["message"].startswith("User/System interruption")
    to.append_status(status, to.status_message("Starting train.", status="STARTED"))  # a later good run
    to.append_status(status, to.status_message("Train finished successfully.", status=to.FINISHED_STATUS))
    assert to.failure_record(status) is None


def test_val_far_is_tao_7_3_far_at_full_recall_in_percent() -> None:
    # PASS scores ≥ the lowest defect score are false alarms at 100 % recall (cn_pl_model.py _compute_val_far)
    assert abs(to.val_far_pct([0.1, 0.5, 0.7, 0.6, 0.9], [0, 0, 0, 1, 1]) - 100.0 / 3) < 1e-9
    assert to.val_far_pct([0.1, 0.2], [0, 0]) == 100.0  # one class only: TAO's worst-case sentinel


def _status_with_val(tmp_path: Path, vals: list[dict[str, float]], *, interval: int = 1) -> None:
    """TAO 7.3.0's order per epoch, a checkpoint every `interval` epochs."""
    lines = [to.status_message("Starting Visual ChangeNet train.", status="STARTED")]
    for epoch, kpi in enumerate(vals):
        if (epoch + 1) % interval == 0:
            _touch(tmp_path, epoch, (epoch + 1) * 10)
        lines.append(to.status_message("Eval metrics generated.", kpi=kpi))
        lines.append(to.status_line(epoch=epoch, step=(epoch + 1) * 10, max_epoch=len(vals) - 1,
                                    message="Training loop in progress", kpi=kpi))
        lines.append(to.status_message("Train metrics generated.", kpi={"train_loss": 0.1}))
    (tmp_path / "status.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_best_far_is_the_lowest_val_far_not_the_lowest_loss(tmp_path: Path) -> None:
    _status_with_val(tmp_path, [{"val_loss": 0.9, "val_far": 40.0}, {"val_loss": 0.2, "val_far": 30.0},
                                {"val_loss": 0.4, "val_far": 10.0}, {"val_loss": 0.3, "val_far": 20.0}])
    assert to.best_val_checkpoint(tmp_path).epoch == 1
    far = to.best_far_checkpoint(tmp_path)
    assert far is not None and far.epoch == 2


def test_best_far_tie_broken_by_val_loss_then_later_epoch(tmp_path: Path) -> None:
    _status_with_val(tmp_path, [{"val_loss": 0.5, "val_far": 5.0}, {"val_loss": 0.3, "val_far": 5.0},
                                {"val_loss": 0.4, "val_far": 5.0}, {"val_loss": 0.9, "val_far": 8.0}])
    assert to.best_far_checkpoint(tmp_path).epoch == 1  # type: ignore[union-attr]
    _status_with_val(tmp_path, [{"val_far": 5.0}, {"val_far": 5.0}, {"val_far": 6.0}])
    assert to.best_far_checkpoint(tmp_path).epoch == 1  # type: ignore[union-attr]


def test_best_far_only_among_saved_checkpoints(tmp_path: Path) -> None:
    # checkpoint_interval 2: epochs 1 and 3 are saved; epoch 0's lower val_far has no checkpoint to offer
    _status_with_val(tmp_path, [{"val_loss": 0.5, "val_far": 1.0}, {"val_loss": 0.5, "val_far": 9.0},
                                {"val_loss": 0.5, "val_far": 2.0}, {"val_loss": 0.5, "val_far": 4.0}], interval=2)
    assert to.best_far_checkpoint(tmp_path).epoch == 3  # type: ignore[union-attr]


def test_best_far_none_before_tao_7_3(tmp_path: Path) -> None:
    _status_with_val(tmp_path, [{"val_loss": 0.5}, {"val_loss": 0.4}])
    assert to.best_far_checkpoint(tmp_path) is None
    assert to.best_val_checkpoint(tmp_path).epoch == 1
