"""`deft run --backend docker` against a real Docker Engine and the local stand-in image, end to end:
the same results as the in-memory fake, and each fault reproduced for real (OOM kill, Ctrl-C, SIGKILL)."""

from __future__ import annotations

import grp
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from run_files import artefacts

from .helpers import (
    LOOP,
    SECRETS,
    deft_env,
    engine_workspace,
    heartbeat_log,
    interrupt,
    labelled,
    only_run,
    python_for_another_user,
    run_deft,
    start_deft,
    state,
    wait_for,
)

pytestmark = pytest.mark.requires_docker
OTHER_UID = 4242  # a non-root caller: files the containers write must end up owned by it


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A temp dir another uid can traverse (pytest's tmp_path lives under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="deft-engine-"))
    path.chmod(0o755)
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _ledger(run: Path) -> list[tuple[str, str, str]]:
    import json

    lines = (run / "loop_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [(d["iter"], d["stage"], d["status"]) for d in map(json.loads, lines)]


def _kpis(run: Path) -> dict[str, tuple[Any, ...]]:
    its = state(run)["iterations"]
    return {name: (it["far_pct"], it["recall_pct"], it["threshold"], it["kpi_met"],
                   it["chosen_checkpoint"], json_counts(it["counts"])) for name, it in its.items()}


def json_counts(counts: dict[str, Any] | None) -> str:
    import json

    return json.dumps(counts or {}, sort_keys=True)


def _datasets(run: Path) -> dict[str, str]:
    """Every CSV the loop assembled or mined, with the run's own id (a timestamp) masked."""
    out = {}
    files = [*artefacts(run, "assemble.train_csv").values(), *artefacts(run, "assemble.provenance").values(),
             *artefacts(run, "mine.pool_csv").values()]
    for csv in sorted(files):
        out[str(csv.relative_to(run))] = csv.read_text(encoding="utf-8").replace(run.name, "RUN")
    return out


def _scores(run: Path) -> dict[str, list[float]]:
    return {str(p.relative_to(run)): pd.read_csv(p)["siamese_score"].tolist()
            for p in sorted(run.glob("*/inference/*/inference.csv"))}


# Two whole loops (fake, then real engine: 2 iterations, each a train, up to three inferences since best_far, a
# Data Services embedding and tmm container): its docker half ran past 600 s three times on a 2-core box at load 8–16.
@pytest.mark.timeout(2400)
def test_docker_loop_equals_the_fake_and_a_non_root_caller_owns_every_file(
        deeppcb_dev: Path, standin_image: str, engine: Any, shared_tmp: Path) -> None:
    args = [*LOOP, "--yes", "--max-iterations", "2", "--mining-engine", "data_services"]
    fake_ws = engine_workspace(deeppcb_dev, shared_tmp / "fake", standin_image)
    code, fake_out = run_deft(["run", "-w", str(fake_ws), "--backend", "fake", *args], deft_env(fake_ws))
    assert code == 0, fake_out[-3000:]

    if os.getuid() != 0:
        pytest.skip("running deft as another uid needs root")
    python = python_for_another_user()
    if isinstance(python, str):
        pytest.skip(python)
    interpreter, python_env = python
    ws = engine_workspace(deeppcb_dev, shared_tmp / "engine", standin_image, owner=OTHER_UID)
    home = shared_tmp / "home"
    home.mkdir()
    os.chown(home, OTHER_UID, OTHER_UID)
    code, out = run_deft(["run", "-w", str(ws), "--backend", "docker", *args],
                         deft_env(ws, HOME=str(home), **python_env), python=interpreter,
                         user=OTHER_UID, group=OTHER_UID, extra_groups=[grp.getgrnam("docker").gr_gid])
    assert code == 0, out[-3000:]
    fake_run, run = only_run(fake_ws), only_run(ws)

    assert state(run)["status"] == "finished"
    assert [it for it in state(run)["iterations"]] == ["baseline", "iter1", "iter2"]
    assert _ledger(run) == _ledger(fake_run)
    assert _kpis(run) == _kpis(fake_run)
    datasets = _datasets(run)
    assert "iter2/dataset/train_combined_iter2.csv" in datasets
    assert datasets == _datasets(fake_run)
    # Same scores; not to the last bit: BLAS kernels may sum in another order in another process (seen: 1-3 ulp
    # on a few rows), which must not move a KPI (compared exactly above).
    scores, fake_scores = _scores(run), _scores(fake_run)
    assert scores.keys() == fake_scores.keys()
    for key, values in scores.items():
        assert values == pytest.approx(fake_scores[key], rel=1e-12, abs=0.0), key
    # the Data Services containers really ran in the engine
    knn = artefacts(run, "mine.rows")["iter1"].parent / "data_services" / "knn"
    assert "Execution status: PASS" in (knn / "tmm.log").read_text()

    not_mine = [str(p) for p in [run, *run.rglob("*")] if p.lstat().st_uid != OTHER_UID]
    assert not not_mine, f"not owned by uid {OTHER_UID}: {not_mine[:10]}"
    writable = knn / "mined.parquet"
    assert writable.stat().st_mode & stat.S_IWUSR

    for secret in SECRETS.values():
        assert secret not in out
        leaks = [str(p) for p in run.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not leaks, f"a secret was written to {leaks}"


def _baseline_ws(deeppcb_dev: Path, tmp_path: Path, image: str) -> Path:
    return engine_workspace(deeppcb_dev, tmp_path / "ws", image)


def test_memory_limit_oom_kill_gives_the_hint_and_the_run_resumes(
        deeppcb_dev: Path, standin_image: str, engine: Any, tmp_path: Path) -> None:
    ws = _baseline_ws(deeppcb_dev, tmp_path, standin_image)
    env = deft_env(ws, DEFT_DOCKER_MEMORY="400m", DEFT_FAKE_FAULT="train:oom:once")
    code, out = run_deft(["run", "-w", str(ws), "--backend", "docker", "--yes", "--max-iterations", "0", *LOOP], env)
    assert code == 1, out[-3000:]
    assert "out of memory" in out and "batch_size" in out
    run = only_run(ws)
    st = state(run)
    assert st["status"] == "failed" and not st["failure"]["hard_stop"]
    assert st["failure"]["stage"] == "train"
    log = run / ".scratch" / "baseline" / "train" / "train.log"
    assert "OOMKilled" in log.read_text(), "the engine itself must report the kill"
    code, out = run_deft(["resume", "-w", str(ws)], env)
    assert code == 0, out[-3000:]
    assert state(run)["status"] == "finished"


def _start_hanging_run(ws: Path) -> tuple[Any, dict[str, str]]:
    env = deft_env(ws, DEFT_FAKE_FAULT="train:hang:once")
    proc = start_deft(["run", "-w", str(ws), "--backend", "docker", "--yes", "--max-iterations", "0", *LOOP], env)
    return proc, env


def _wait_for_heartbeats(ws: Path, proc: Any) -> Path:
    """Logs stream while the job runs: the heartbeat lines reach the stage's log file before the job ends."""
    def beating() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"deft ended early ({proc.returncode}):\n{proc.communicate()[0][-3000:]}")
        log = heartbeat_log(ws)
        return log is not None and "heartbeat 2" in log.read_text(encoding="utf-8")

    wait_for(beating, 180, "the hanging train job's heartbeat in its log")
    log = heartbeat_log(ws)
    assert log is not None
    return log


def test_ctrl_c_mid_job_removes_the_container_exits_130_and_resume_finishes(
        deeppcb_dev: Path, standin_image: str, engine: Any, tmp_path: Path) -> None:
    ws = _baseline_ws(deeppcb_dev, tmp_path, standin_image)
    proc, env = _start_hanging_run(ws)
    log = _wait_for_heartbeats(ws, proc)
    run_id = only_run(ws).name
    running = labelled(engine, run=run_id, iteration="baseline", stage="train")
    assert [c.status for c in running] == ["running"], "the log streamed while the container ran"
    assert log.read_text().splitlines()[0].startswith("$ visual_changenet train -e")

    code, out = interrupt(proc, signal.SIGINT)
    assert code == 130, out[-3000:]
    assert labelled(engine, run=run_id) == []
    st = state(only_run(ws))
    assert st["status"] == "interrupted" and st["failure"]["stage"] == "train"

    code, out = run_deft(["resume", "-w", str(ws)], env)
    assert code == 0, out[-3000:]
    assert state(only_run(ws))["status"] == "finished"


def _start_slow_run(ws: Path, fault: str, seconds: str) -> tuple[Any, dict[str, str]]:
    env = deft_env(ws, DEFT_FAKE_FAULT=fault, DEFT_FAKE_SLOW_S=seconds)
    proc = start_deft(["run", "-w", str(ws), "--backend", "docker", "--yes", "--max-iterations", "0", *LOOP], env)
    return proc, env


def _sigkill_during_train(ws: Path, fault: str, seconds: str) -> tuple[str, Any, dict[str, str]]:
    """deft SIGKILLed while the baseline train job runs: (run id, the train container, env)."""
    proc, env = _start_slow_run(ws, fault, seconds)
    _wait_for_heartbeats(ws, proc)
    run_id = only_run(ws).name
    jobs = state(only_run(ws))["iterations"]["baseline"]["stages"]["train"]["jobs"]
    assert len(jobs) == 1 and jobs[0]["exit_code"] is None, "the handle is recorded before deft waits"
    interrupt(proc, signal.SIGKILL)
    (container,) = labelled(engine_client(), run=run_id, iteration="baseline", stage="train")
    assert container.status == "running", "the job outlives deft"
    assert container.id == jobs[0]["job_id"]
    return run_id, container, env


def engine_client() -> Any:
    import docker

    return docker.from_env()


def _undisturbed(deeppcb_dev: Path, tmp_path: Path, image: str) -> Path:
    ws = engine_workspace(deeppcb_dev, tmp_path / "undisturbed", image)
    code, out = run_deft(["run", "-w", str(ws), "--backend", "docker", "--yes", "--max-iterations", "0", *LOOP],
                         deft_env(ws))
    assert code == 0, out[-3000:]
    return only_run(ws)


def test_sigkill_mid_job_leaves_it_running_and_resume_reattaches_without_a_second_container(
        deeppcb_dev: Path, standin_image: str, engine: Any, tmp_path: Path) -> None:
    ws = _baseline_ws(deeppcb_dev, tmp_path, standin_image)
    run_id, container, env = _sigkill_during_train(ws, "train:slow:once", "20")

    code, out = run_deft(["resume", "-w", str(ws)], env)
    assert code == 0, out[-3000:]
    assert f"re-attached to docker job {container.id[:12]}" in out and "still running" in out
    # one train container for the stage, ever: the re-attached one (collected, then removed)
    assert labelled(engine, run=run_id) == []
    run = only_run(ws)
    jobs = state(run)["iterations"]["baseline"]["stages"]["train"]["jobs"]
    assert [(j["job_id"], j["exit_code"]) for j in jobs] == [(container.id, 0)]
    log = next(run.glob("baseline/train*/train.log")).read_text()
    assert "heartbeat 1" in log and "re-attached" in log, "the log holds the whole job, from its start"
    assert state(run)["status"] == "finished"
    undisturbed = _undisturbed(deeppcb_dev, tmp_path, standin_image)
    assert _ledger(run) == _ledger(undisturbed)
    assert _kpis(run) == _kpis(undisturbed)
    assert _scores(run) == _scores(undisturbed)


def test_a_job_that_finished_while_deft_was_dead_is_collected_not_rerun(
        deeppcb_dev: Path, standin_image: str, engine: Any, tmp_path: Path) -> None:
    ws = _baseline_ws(deeppcb_dev, tmp_path, standin_image)
    run_id, container, env = _sigkill_during_train(ws, "train:slow:once", "4")

    def exited() -> bool:
        container.reload()
        return bool(container.status == "exited")

    wait_for(exited, 180, "the train container to finish on its own")
    code, out = run_deft(["resume", "-w", str(ws)], env)
    assert code == 0, out[-3000:]
    assert "finished while deft was away" in out
    assert labelled(engine, run=run_id) == []
    run = only_run(ws)
    jobs = state(run)["iterations"]["baseline"]["stages"]["train"]["jobs"]
    assert [(j["job_id"], j["exit_code"]) for j in jobs] == [(container.id, 0)]
    assert state(run)["status"] == "finished"
    undisturbed = _undisturbed(deeppcb_dev, tmp_path, standin_image)  # the "the same": equal results
    assert (_ledger(run), _kpis(run), _scores(run)) == (_ledger(undisturbed), _kpis(undisturbed),
                                                        _scores(undisturbed))


def test_a_job_that_failed_while_deft_was_dead_fails_the_stage_with_its_own_exit_and_log(
        deeppcb_dev: Path, standin_image: str, engine: Any, tmp_path: Path) -> None:
    ws = _baseline_ws(deeppcb_dev, tmp_path, standin_image)
    run_id, container, env = _sigkill_during_train(ws, "train:slowfail:once", "4")

    def exited() -> bool:
        container.reload()
        return bool(container.status == "exited")

    wait_for(exited, 180, "the train container to fail on its own")
    code, out = run_deft(["resume", "-w", str(ws)], env)
    assert code == 1, out[-3000:]
    assert "exited with code 1" in out and "injected failure" in out
    assert labelled(engine, run=run_id) == []
    st = state(only_run(ws))
    assert st["status"] == "failed" and st["failure"]["stage"] == "train"
    code, out = run_deft(["resume", "-w", str(ws)], env)  # the job ended: the stage is redone
    assert code == 0, out[-3000:]
    assert state(only_run(ws))["status"] == "finished"


def test_sigkill_during_a_hanging_job_and_ctrl_c_on_resume_removes_it(
        deeppcb_dev: Path, standin_image: str, engine: Any, tmp_path: Path) -> None:
    """Ctrl-C keeps its meaning on a re-attached job: the container is stopped and removed."""
    ws = _baseline_ws(deeppcb_dev, tmp_path, standin_image)
    proc, env = _start_hanging_run(ws)
    _wait_for_heartbeats(ws, proc)
    run_id = only_run(ws).name
    interrupt(proc, signal.SIGKILL)
    assert [c.status for c in labelled(engine, run=run_id, iteration="baseline", stage="train")] == ["running"]
    resumed = start_deft(["resume", "-w", str(ws)], env)

    def reattached() -> bool:
        log = heartbeat_log(ws)
        return log is not None and "re-attached" in log.read_text(encoding="utf-8")

    wait_for(reattached, 120, "the resumed deft to re-attach")
    code, out = interrupt(resumed, signal.SIGINT)
    assert code == 130, out[-3000:]
    assert labelled(engine, run=run_id) == []
