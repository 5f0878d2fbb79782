"""DockerRunner over the fake client: the TAO files appear, and each injected fault gives a clear error."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from deft_aoi.errors import InputError, Interrupted, StageFailed
from deft_aoi.runners.base import run_checked
from deft_aoi.runners.docker.runner import DockerRunner
from deft_aoi.runners.fake.docker_client import FakeDockerClient, parse_faults
from deft_aoi.runners.tao import outputs as to
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.runners.tao.commands import TaoContext, evaluate_job, inference_job, train_job
from deft_aoi.workspace.layout import WorkspaceLayout

SECRET = "nvapi-SECRET-value-42"


@pytest.fixture()
def ws(small_ws: Path) -> WorkspaceLayout:
    return WorkspaceLayout.at(small_ws)


def _ctx(ws: WorkspaceLayout, **kw: object) -> TaoContext:
    args: dict = dict(workspace=ws, spec=load_spec(ws.spec_file), image="nvcr.io/nvidia/tao/tao-toolkit:t-pyt",
                      env={"NGC_API_KEY": SECRET}, seed=1)
    args.update(kw)
    return TaoContext(**args)


def _train(ws: WorkspaceLayout, ctx: TaoContext, rd: Path, epochs: int = 3, pretrained: Path | None = None):
    return train_job(ctx, results_dir=rd, train_csv=ws.train_csv, train_images_dir=ws.kpi_images,
                     val_csv=ws.validation_csv, val_images_dir=ws.kpi_images, num_epochs=epochs,
                     pretrained_checkpoint=pretrained)


def _runner(ws: WorkspaceLayout, faults: str = "", **kw: object) -> tuple[DockerRunner, FakeDockerClient]:
    client = FakeDockerClient(state_dir=ws.root / ".deft_cache" / "fake", faults=faults, **kw)  # type: ignore[arg-type]
    return DockerRunner(client, ws, name="fake"), client


def test_train_inference_evaluate_write_tao_files(ws: WorkspaceLayout) -> None:
    runner, client = _runner(ws)
    ctx = _ctx(ws)
    rd = ws.root / "results" / "run_1" / "baseline" / "train"
    job = _train(ws, ctx, rd)
    run_checked(runner, job)
    log = job.log_file.read_text()
    assert log.splitlines()[0].startswith("$ visual_changenet train -e ")
    assert SECRET not in log
    names = sorted(p.name for p in rd.glob("model_epoch_*"))
    assert names == [to.checkpoint_name(e, (e + 1) * 4) for e in range(3)]  # 14 rows / batch 4 = 4 steps/epoch
    assert (rd / "experiment.yaml").is_file() and (rd / to.LATEST_LINK).is_symlink()
    status = to.read_status(rd / "status.json")
    # TAO writes no SUCCESS record: a good run ends RUNNING "Train finished successfully." (workflow.py)
    assert status[0]["status"] == "STARTED" and status[-1]["status"] == "RUNNING"
    assert status[-1]["message"] == "Train finished successfully." and "SUCCESS" not in {e["status"] for e in status}
    evals = [e for e in status if e.get("message") == "Eval metrics generated."]
    assert evals and all(0.0 <= e["kpi"]["val_far"] <= 100.0 for e in evals)  # 7.3.0: FAR@recall100 in %
    best = to.best_val_checkpoint(rd)

    kwargs = client.calls[-1][1]
    # NVIDIA: an 8 GiB /dev/shm, never together with --ipc=host (the host's /dev/shm may be 64 MiB)
    assert "ipc_mode" not in kwargs and kwargs["shm_size"] == "8g"
    assert kwargs["user"] == job.user and kwargs["working_dir"] == str(ws.root)
    assert kwargs["volumes"] == {str(ws.root): {"bind": str(ws.root), "mode": "rw"}}
    assert kwargs["device_requests"][0]["Count"] == -1
    # HOME/USER: the job runs as the host uid, which has no passwd entry in the image
    assert kwargs["environment"] == ["DEFT_SEED", "HOME", "NGC_API_KEY", "USER"]

    inf_dir = ws.root / "results" / "run_1" / "baseline" / "inference" / "best_val"
    run_checked(runner, inference_job(ctx, results_dir=inf_dir, checkpoint=best.path, infer_csv=ws.kpi_csv,
                                      infer_images_dir=ws.kpi_images))
    scores = to.read_inference_csv(inf_dir / "inference.csv")
    assert len(scores) == 12 and scores["siamese_score"].between(0, 1).all()
    header = ws.kpi_csv.read_text().splitlines()[0].split(",")
    assert list(scores.columns) == [*header, "siamese_score"]  # the infer CSV's columns, in order, + score

    # best_far: the lowest val_far among the saved epochs, and that checkpoint, scored on the validation rows,
    # gives the val_far logged for its epoch (as TAO 7.3.0 computes it on validation)
    far = to.best_far_checkpoint(rd)
    by_epoch = to.validation_by_epoch(rd)
    assert far is not None and by_epoch[far.epoch]["val_far"] == min(m["val_far"] for m in by_epoch.values())
    far_dir = ws.root / "results" / "run_1" / "baseline" / "inference" / "far_check"
    run_checked(runner, inference_job(ctx, results_dir=far_dir, checkpoint=far.path, infer_csv=ws.validation_csv,
                                      infer_images_dir=ws.kpi_images))
    val_scores = to.read_inference_csv(far_dir / "inference.csv")
    assert abs(to.val_far_pct(val_scores["siamese_score"].astype(float), val_scores["label"] != "PASS")
               - by_epoch[far.epoch]["val_far"]) < 1e-6

    ev_dir = ws.root / "results" / "run_1" / "baseline" / "evaluate"
    run_checked(runner, evaluate_job(ctx, results_dir=ev_dir, checkpoint=best.path, test_csv=ws.kpi_csv,
                                     test_images_dir=ws.kpi_images))
    kpis = [line["kpi"] for line in to.read_status(ev_dir / "status.json") if "kpi" in line]
    assert {"test_acc", "test_fpr", "test_fnr"} <= set(kpis[-1])


def test_scores_are_deterministic_and_fine_tune_starts_from_checkpoint(ws: WorkspaceLayout) -> None:
    runner, _ = _runner(ws)
    ctx = _ctx(ws)
    outs = []
    for name in ("a", "b"):
        rd = ws.root / "results" / name / "train"
        run_checked(runner, _train(ws, ctx, rd))
        outs.append(json.loads(to.latest_checkpoint(rd).path.read_text()))
    assert outs[0]["weights"] == outs[1]["weights"]
    rd = ws.root / "results" / "c" / "train"
    job = _train(ws, ctx, rd, epochs=1, pretrained=to.latest_checkpoint(ws.root / "results" / "a" / "train").path)
    run_checked(runner, job)
    assert "Loaded pretrained weights" in job.log_file.read_text()


@pytest.mark.parametrize(
    ("fault", "task", "needle"),
    [
        ("train:exit1", "train", "exited with code 1"),
        ("train:oom", "train", "out of memory? lower batch_size"),
        ("inference:missing_image", "inference", "No such file or directory"),
    ],
)
def test_faults_give_clear_stage_failures(ws: WorkspaceLayout, fault: str, task: str, needle: str) -> None:
    runner, _ = _runner(ws, fault)
    ctx = _ctx(ws)
    ckpt_dir = ws.root / "results" / "r" / "train"
    if task == "inference":
        run_checked(_runner(ws)[0], _train(ws, ctx, ckpt_dir, epochs=1))
        job = inference_job(ctx, results_dir=ws.root / "results" / "r" / "inf",
                            checkpoint=to.latest_checkpoint(ckpt_dir).path, infer_csv=ws.kpi_csv,
                            infer_images_dir=ws.kpi_images)
    else:
        job = _train(ws, ctx, ckpt_dir)
    with pytest.raises(StageFailed) as err:
        run_checked(runner, job)
    assert needle in str(err.value) and str(job.log_file) in str(err.value)


def test_hang_times_out_and_stops_the_container(ws: WorkspaceLayout) -> None:
    runner, client = _runner(ws, "train:hang")
    job = _train(ws, _ctx(ws, timeout_s=0.3), ws.root / "results" / "h" / "train")
    with pytest.raises(StageFailed, match=r"timed out after 0.3s; the container was stopped"):
        runner.run(job)
    assert client.containers.list(all=True) == []  # stopped and removed
    assert "timed out" in job.log_file.read_text()


def test_partial_training_is_caught_by_the_output_readers(ws: WorkspaceLayout) -> None:
    runner, _ = _runner(ws, "train:partial")
    rd = ws.root / "results" / "p" / "train"
    assert run_checked(runner, _train(ws, _ctx(ws), rd)).ok
    with pytest.raises(StageFailed, match="wrote no checkpoint"):
        to.latest_checkpoint(rd)


def test_once_fault_fires_once_across_clients(ws: WorkspaceLayout) -> None:
    ctx = _ctx(ws)
    rd = ws.root / "results" / "o" / "train"
    with pytest.raises(StageFailed):
        run_checked(_runner(ws, "train:exit1:once")[0], _train(ws, ctx, rd, epochs=1))
    # a fresh client (a resumed process) with the same fault setting now succeeds
    assert run_checked(_runner(ws, "train:exit1:once")[0], _train(ws, ctx, rd, epochs=1)).ok


def test_missing_image_is_pulled_with_ngc_login(ws: WorkspaceLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGC_API_KEY", SECRET)
    runner, client = _runner(ws, images_present=False)
    job = _train(ws, _ctx(ws), ws.root / "results" / "pull" / "train", epochs=1)
    assert run_checked(runner, job).ok
    assert client.logins == [("nvcr.io", "$oauthtoken")]
    assert job.image in client.present_images


def test_pull_failure_is_clear_and_secret_free(ws: WorkspaceLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGC_API_KEY", SECRET)
    runner, _ = _runner(ws, "pull:fail", images_present=False)
    with pytest.raises(StageFailed) as err:
        runner.run(_train(ws, _ctx(ws), ws.root / "results" / "pf" / "train", epochs=1))
    text = err.value.render()
    assert "could not pull nvcr.io/nvidia/tao/tao-toolkit:t-pyt" in text and "NGC_API_KEY" in text
    assert SECRET not in text


def test_secrets_in_container_output_are_redacted(ws: WorkspaceLayout) -> None:
    runner, _ = _runner(ws)
    ctx = _ctx(ws)
    job = _train(ws, ctx, ws.root / "results" / "s" / "train", epochs=1)
    echo = type(job)(name="echo", image=job.image, argv=("echo", f"token={SECRET}"), log_file=job.log_file,
                     workdir=job.workdir, mounts=job.mounts, env={"NGC_API_KEY": SECRET})
    run_checked(runner, echo)
    assert "token=***" in job.log_file.read_text() and SECRET not in job.log_file.read_text()


def test_parse_faults_rejects_typos() -> None:
    assert parse_faults("train:oom, inference:hang:once")[1].once
    with pytest.raises(InputError, match="DEFT_FAKE_FAULT"):
        parse_faults("trian:oom")


@pytest.mark.parametrize("content", ["[]", '"text"', "3", '{"format": "other"}'])
def test_a_checkpoint_of_foreign_json_is_a_clear_entrypoint_error(tmp_path: Path, content: str) -> None:
    """Valid JSON that is not this backend's checkpoint object fails as the emulated program would, never with an
    AttributeError from inside the fake (a list or a string has no `.get`)."""
    from deft_aoi.runners.fake.tao import EntrypointError, read_checkpoint

    path = tmp_path / "model.pth"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EntrypointError, match="unknown format"):
        read_checkpoint(path)


def test_misregistration_is_tolerated_only_within_the_radius() -> None:
    """The fake model's features: a 3 px shift vanishes at radius ≥ 3; a local defect survives any radius."""
    import numpy as np

    from deft_aoi.runners.fake.tao import pair_statistics

    rng = np.random.default_rng(0)
    golden = rng.random((64, 64)).astype(np.float32)
    peaks = pair_statistics(np.roll(golden, 3, axis=1), golden)[:5]
    assert min(peaks[:3]) > 0.2 and max(peaks[3:]) < 1e-6
    defect = golden.copy()
    defect[30:36, 30:36] = 1.0 - defect[30:36, 30:36]
    assert min(pair_statistics(defect, golden)[:5]) > 0.2


def test_learned_radius_grows_with_misregistered_training_rows() -> None:
    import numpy as np

    from deft_aoi.runners.fake.tao import select_radius

    rng = np.random.default_rng(1)
    n = 60
    y = np.r_[np.zeros(n), np.ones(n)]
    defect = rng.uniform(6, 9, n)
    registered_pass = rng.uniform(1, 3, n)
    # columns peak_r0..peak_r4, noise; registered rows look the same at every radius
    aligned = np.c_[np.tile(np.r_[registered_pass, defect][:, None], 5), np.full(2 * n, 0.1)]
    assert select_radius(aligned, y, (1.0, 1.0), 0) == 0
    shifted = aligned.copy()
    shifted[: n // 2, :3] = rng.uniform(6, 9, (n // 2, 3))  # PASS rows shifted by 3 px: loud below r=3
    assert select_radius(shifted, y, (1.0, 1.0), 0) == 3


def test_ctrl_c_while_a_job_runs_stops_and_removes_the_container(ws: WorkspaceLayout, deft_sigint: None) -> None:
    runner, client = _runner(ws, "train:hang")
    job = _train(ws, _ctx(ws, timeout_s=20), ws.root / "results" / "c" / "train")
    # With SIGINT blocked in the main thread the kernel hands it to another thread, so the main thread's wait is
    # not woken by it: the case of a Ctrl-C that lands just before the main thread blocks. It must still be seen.
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(Interrupted, match="container was stopped and removed"):
            runner.run(job)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    assert time.monotonic() - t0 < 10
    assert client.containers.list(all=True) == []
    assert "interrupted (Ctrl-C)" in job.log_file.read_text()


def test_ctrl_c_before_docker_returns_the_container_still_removes_it(ws: WorkspaceLayout,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    runner, client = _runner(ws, "train:hang")
    real_run = client.containers.run

    def started_then_interrupted(image: str, **kwargs: object) -> object:
        real_run(image, **kwargs)  # docker created and started it...
        raise KeyboardInterrupt  # ...but Ctrl-C arrived before run() handed it back

    monkeypatch.setattr(client.containers, "run", started_then_interrupted)
    job = _train(ws, _ctx(ws), ws.root / "results" / "d" / "train")
    with pytest.raises(Interrupted):
        runner.run(job)
    assert client.containers.list(all=True) == []


def test_a_failure_record_after_exit_0_fails_the_job(ws: WorkspaceLayout) -> None:
    # TAO swallows an interruption after logging FAILURE in status.json and exits 0 (core/decorators/workflow.py).
    runner, _ = _runner(ws, faults="train:interrupted")
    job = _train(ws, _ctx(ws), ws.root / "results" / "run_1" / "baseline" / "train")
    with pytest.raises(StageFailed, match=r"exited 0 but .* FAILURE record: 'User/System interruption"):
        run_checked(runner, job)
