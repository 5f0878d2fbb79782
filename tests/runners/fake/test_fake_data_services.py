from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from deft_aoi.errors import StageFailed
from deft_aoi.runners.base import run_checked
from deft_aoi.runners.docker.runner import DockerRunner
from deft_aoi.runners.fake.docker_client import FakeDockerClient
from deft_aoi.runners.tao.commands import DataServicesContext, embedding_job, nearest_neighbors_job
from deft_aoi.workspace.layout import WorkspaceLayout


@pytest.fixture()
def setup(small_ws: Path) -> tuple[WorkspaceLayout, DockerRunner, DataServicesContext, Path]:
    ws = WorkspaceLayout.at(small_ws)
    images = sorted((ws.kpi_images).glob("*/test/*_SolderLight.jpg"))[:12]
    rd = ws.root / "results" / "r" / "iter1" / "mining_filter"
    rd.mkdir(parents=True)
    pd.DataFrame({"filepath": [str(p) for p in images[:9]], "label": ["PASS"] * 9}).to_parquet(rd / "src.parquet")
    pd.DataFrame({"filepath": [str(p) for p in images[9:]], "label": ["PASS"] * 3}).to_parquet(rd / "tgt.parquet")
    ctx = DataServicesContext(workspace=ws, image="nvcr.io/nvidia/tao/tao-toolkit:t-data-services")
    return ws, DockerRunner(FakeDockerClient(state_dir=rd / ".f"), ws), ctx, rd


def test_embed_then_mine(setup: tuple) -> None:
    _ws, runner, ctx, rd = setup
    for name in ("src", "tgt"):
        job = embedding_job(ctx, results_dir=rd, input_parquet=rd / f"{name}.parquet",
                            output_parquet=rd / f"{name}_emb.parquet")
        run_checked(runner, job)
        assert "Execution status: PASS" in job.log_file.read_text()
    emb = pd.read_parquet(rd / "src_emb.parquet")
    assert len(emb) == 9 and len(emb["embedding"].iloc[0]) == 256 and "label" in emb.columns
    run_checked(runner, nearest_neighbors_job(ctx, results_dir=rd, source_parquet=rd / "src_emb.parquet",
                                              target_parquet=rd / "tgt_emb.parquet",
                                              output_parquet=rd / "mined.parquet", topn=2))
    mined = pd.read_parquet(rd / "mined.parquet")
    assert list(mined.columns) == ["filepath"] and 2 <= len(mined) <= 6 and mined["filepath"].is_unique
    assert "  Target queries: 3\n" in (rd / "mining_summary.txt").read_text()


def test_exit_zero_with_fail_status_is_a_failure(setup: tuple) -> None:
    _ws, runner, ctx, rd = setup
    job = embedding_job(ctx, results_dir=rd, input_parquet=rd / "missing.parquet", output_parquet=rd / "o.parquet")
    with pytest.raises(StageFailed, match="exited with code 1"):
        run_checked(runner, job)
    assert "treated as exit 1" in job.log_file.read_text()


def test_running_data_services_as_a_user_breaks_it(setup: tuple) -> None:
    _ws, runner, ctx, rd = setup
    job = embedding_job(ctx, results_dir=rd, input_parquet=rd / "src.parquet", output_parquet=rd / "o.parquet")
    with pytest.raises(StageFailed, match="exited with code 1"):
        run_checked(runner, replace(job, user="1000:1000"))
    assert "getpwuid" in job.log_file.read_text()
