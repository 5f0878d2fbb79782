"""Every GPU a job is given reaches TAO: --gpus → each backend's GpuPlan → <task>.num_gpus / gpu_ids in the job's
spec file (never its command line), TAO's per-GPU batch rule on that count, and the Pre-Flight Summary's row."""

from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.config import resolve_config
from deft_aoi.errors import UsageError
from deft_aoi.runners.docker.runner import DockerRunner
from deft_aoi.runners.factory import check_settings, make_runner
from deft_aoi.runners.fake.docker_client import FakeDockerClient
from deft_aoi.runners.gpus import GpuPlan, GpuRequest
from deft_aoi.runners.slurm.platform import SlurmPlatform, with_flags
from deft_aoi.runners.slurm.runner import SlurmRunner
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.runners.tao.checks import tao_rule_checks
from deft_aoi.runners.tao.commands import TaoContext, train_job
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.spec_file import load_yaml_mapping

IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:6.25.7-pyt"


@pytest.mark.parametrize(("text", "expected"), [
    ("all", GpuRequest(all=True)), ("ALL", GpuRequest(all=True)), ("0", GpuRequest(count=0)),
    (2, GpuRequest(count=2)), ("0,2", GpuRequest(ids=("0", "2"))), (" 1, 3 ", GpuRequest(ids=("1", "3"))),
])
def test_gpu_request_parses_all_a_count_or_ids(text: str | int, expected: GpuRequest) -> None:
    assert GpuRequest.parse(text) == expected


@pytest.mark.parametrize("bad", ["", "two", "-1", "0,0", "0,x", "1.5"])
def test_gpu_request_refuses_anything_else(bad: str) -> None:
    with pytest.raises(UsageError, match="--gpus"):
        GpuRequest.parse(bad)


def test_plan_tells_tao_the_count_it_sees_and_nothing_for_cpu_or_an_uncounted_all() -> None:
    assert GpuPlan(3, "2,5,7", "").tao_overrides("train") == {"train.num_gpus": 3, "train.gpu_ids": [0, 1, 2]}
    assert GpuPlan(2, "2", "").tao_overrides("inference") == {"inference.num_gpus": 2, "inference.gpu_ids": [0, 1]}
    assert GpuPlan(2, "2", "").tao_overrides("export") == {}  # export takes one gpu_id; not set by the loop
    assert GpuPlan(0, "0", "").tao_overrides("train") == {}
    assert GpuPlan(None, "all", "").tao_overrides("train") == {}


def test_train_spec_file_holds_the_jobs_gpus_and_the_command_line_does_not(small_ws: Path) -> None:
    ws = WorkspaceLayout.at(small_ws)
    ctx = TaoContext(workspace=ws, spec=load_spec(ws.spec_file), image=IMAGE, env={}, batch_size=4,
                     gpu_plan=GpuPlan(2, "0,3", "docker: device ids 0,3"))
    rd = ws.root / "results" / "run_1" / "baseline" / "train"
    job = train_job(ctx, results_dir=rd, train_csv=ws.train_csv, train_images_dir=ws.kpi_images,
                    val_csv=ws.validation_csv, val_images_dir=ws.kpi_images, num_epochs=1, pretrained_checkpoint=None)
    doc = load_yaml_mapping(rd / "spec.yaml")
    for task in ("train", "inference", "evaluate"):
        assert doc[task]["num_gpus"] == 2 and doc[task]["gpu_ids"] == [0, 1]
    # TAO's entrypoint lets any `num_gpus`/`gpu_ids` argument replace the spec's GPU settings wholesale.
    assert not [a for a in job.argv if "num_gpus" in a or "gpu_ids" in a]


def test_rows_rule_counts_the_jobs_gpus(small_ws: Path) -> None:
    """TAO's batch_size is per GPU: the validation set's 10 rows feed 2 GPUs x 4, not 3 x 4."""
    ws = WorkspaceLayout.at(small_ws)
    spec = load_spec(ws.spec_file)

    def rows_check(count: int) -> str:
        checks = tao_rule_checks(ws, spec, pyt_image=IMAGE, ds_image=None, batch_size=4, mining_engine=None,
                                 real_tao=False, gpu_plan=GpuPlan(count, str(count), ""))
        (row,) = [c for c in checks if "rows ≥ batch_size" in c.name]
        return f"{row.status} {row.detail}"

    assert rows_check(2).startswith("pass")
    three = rows_check(3)
    assert three.startswith("fail") and "validation CSV" in three and "x 3 GPUs" in three and "= 12" in three


def test_docker_plan_counts_all_the_engines_gpus_and_honours_ids(small_ws: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFT_FAKE_GPUS", "4x24564")
    ws = WorkspaceLayout.at(small_ws)
    every = DockerRunner(FakeDockerClient(state_dir=small_ws), ws, name="fake").gpu_plan(IMAGE)
    assert every.count == 4 and "all 4 GPU(s)" in every.shown and "num_gpus=4" in every.shown
    picked = DockerRunner(FakeDockerClient(state_dir=small_ws), ws, name="fake", gpus="1,3").gpu_plan(IMAGE)
    assert picked.count == 2 and "device ids 1,3" in picked.shown and "gpu_ids=[0, 1]" in picked.shown
    none = DockerRunner(FakeDockerClient(state_dir=small_ws), ws, name="fake", gpus=0).gpu_plan(IMAGE)
    assert none.count == 0 and "CPU" in none.shown


def test_flags_beat_the_platform_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "platform.yaml").write_text("slurm:\n  partition: gpu\n  account: a\n  gpus: 4\n  time: '10'\n")
    monkeypatch.setenv("DEFT_SLURM_QOS", "low")
    config = resolve_config({"backend": "slurm", "partition": "debug", "qos": "high", "time_limit": "08:00:00",
                             "gpus": "2"})
    runner = make_runner("slurm", WorkspaceLayout.at(tmp_path), config)
    assert isinstance(runner, SlurmRunner)
    p = runner.platform
    assert (p.partition, p.account, p.qos, p.time, p.gpus) == ("debug", "a", "high", "08:00:00", 2)
    assert "flags --partition, --qos, --time-limit, --gpus" in p.source
    plan = runner.gpu_plan(IMAGE)
    assert plan.count == 2 and "--gpus-per-node=2" in plan.shown and "partition debug" in plan.shown
    assert with_flags(SlurmPlatform(), partition=None, account=None, qos=None, time=None, gpus=None) == \
        SlurmPlatform()


@pytest.mark.parametrize(("settings", "match"), [
    ({"backend": "slurm", "gpus": "all"}, "Slurm allocates GPUs by count"),
    ({"backend": "slurm", "gpus": "0,1"}, "Slurm allocates GPUs by count"),
    ({"backend": "local", "gpus": "2"}, "one device"),
    ({"backend": "docker", "gpus": "many"}, "--gpus"),
    ({"backend": "local", "mining_engine": "data_services"}, "needs containers"),
    ({"backend": "docker", "partition": "gpu", "qos": "high"}, "--partition, --qos: Slurm placement flags"),
])
def test_settings_a_backend_cannot_honour_are_usage_errors(settings: dict[str, str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_settings(resolve_config(settings))


def test_settings_each_backend_can_honour_pass() -> None:
    for settings in ({"backend": "slurm", "gpus": "2", "mining_engine": "data_services"},
                     {"backend": "docker", "gpus": "0,2"}, {"backend": "local", "gpus": "0"}, {"backend": "fake"}):
        check_settings(resolve_config(settings))
