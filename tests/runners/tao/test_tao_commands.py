from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deft_aoi.errors import InputError
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.runners.tao.command import load_changenet, parse_command, parse_overrides
from deft_aoi.runners.tao.commands import (
    DataServicesContext,
    TaoContext,
    embedding_job,
    evaluate_job,
    format_overrides,
    inference_job,
    nearest_neighbors_job,
    train_job,
)
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.spec_file import load_yaml_mapping


@pytest.fixture()
def ctx(small_ws: Path) -> TaoContext:
    ws = WorkspaceLayout.at(small_ws)
    return TaoContext(workspace=ws, spec=load_spec(ws.spec_file), image="nvcr.io/nvidia/tao/tao-toolkit:x-pyt",
                      env={"NGC_API_KEY": "k-123456"}, batch_size=8, seed=7)


def _train(ctx: TaoContext, rd: Path, **kw: object):
    ws = ctx.workspace
    args = dict(results_dir=rd, train_csv=ws.train_csv, train_images_dir=ws.kpi_images, val_csv=ws.validation_csv,
                val_images_dir=ws.kpi_images, num_epochs=3, pretrained_checkpoint=None)
    args.update(kw)
    return train_job(ctx, **args)  # type: ignore[arg-type]


def test_train_job_renders_a_self_contained_spec(ctx: TaoContext) -> None:
    ws = ctx.workspace
    rd = ws.root / "results" / "run_1" / "baseline" / "train"
    job = _train(ctx, rd)
    spec = rd / "spec.yaml"
    assert job.argv[:4] == ("visual_changenet", "train", "-e", str(spec))
    assert f"results_dir={rd}" in job.argv and f"train.results_dir={rd}" in job.argv
    assert "train.num_epochs=3" in job.argv and "train.seed=7" in job.argv
    doc = load_yaml_mapping(spec)
    assert doc["results_dir"] == str(rd) and doc["train"]["results_dir"] == str(rd)
    classify = doc["dataset"]["classify"]
    for ds in ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset"):
        assert os.path.isabs(classify[ds]["csv_path"]) and os.path.isabs(classify[ds]["images_dir"])
    assert classify["train_dataset"]["csv_path"] == str(ws.train_csv)
    assert classify["infer_dataset"]["csv_path"] == str(ws.kpi_csv)  # the workspace layout's, made absolute
    assert classify["batch_size"] == 8 and doc["train"]["seed"] == 7 and doc["train"]["num_epochs"] == 3
    assert job.env["DEFT_SEED"] == "7" and job.env["NGC_API_KEY"] == "k-123456"
    assert job.log_file == rd / "train.log" and job.workdir == ws.root
    assert [(m.host, m.container) for m in job.mounts] == [(ws.root, ws.root)]
    assert not job.ipc_host and job.shm_size == "8g" and job.user == f"{os.getuid()}:{os.getgid()}"


def test_fine_tune_sets_pretrained_model_path(ctx: TaoContext) -> None:
    rd = ctx.workspace.root / "results" / "r" / "iter1" / "train"
    ckpt = ctx.workspace.root / "results" / "r" / "baseline" / "train" / "model_epoch_002_step_00012.pth"
    job = _train(ctx, rd, pretrained_checkpoint=ckpt)
    assert f"train.pretrained_model_path={ckpt}" in job.argv
    assert load_yaml_mapping(rd / "spec.yaml")["train"]["pretrained_model_path"] == str(ckpt)


def test_train_job_refuses_bad_spec_before_launch(ctx: TaoContext) -> None:
    raw = dict(ctx.spec.raw)
    raw["train"] = {**raw["train"], "num_epoch": 4}
    bad = ctx.spec.model_copy(update={"raw": raw})
    bad_ctx = TaoContext(workspace=ctx.workspace, spec=bad, image="i", env={})
    rd = ctx.workspace.root / "results" / "r" / "train"
    with pytest.raises(InputError, match=r"'train.num_epoch'.*'train.num_epochs'"):
        _train(bad_ctx, rd)
    assert not (rd / "spec.yaml").exists()


def test_checkpoint_outside_workspace_is_refused(ctx: TaoContext, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="outside the workspace"):
        _train(ctx, ctx.workspace.root / "results" / "t", pretrained_checkpoint=tmp_path / "elsewhere.pth")


def test_inference_and_evaluate_jobs(ctx: TaoContext) -> None:
    ws = ctx.workspace
    ckpt = ws.root / "results" / "r" / "train" / "model_epoch_000_step_00001.pth"
    inf = inference_job(ctx, results_dir=ws.root / "results" / "r" / "inference" / "best_val", checkpoint=ckpt,
                        infer_csv=ws.kpi_csv, infer_images_dir=ws.kpi_images)
    assert inf.argv[:2] == ("visual_changenet", "inference") and f"inference.checkpoint={ckpt}" in inf.argv
    doc = load_yaml_mapping(inf.argv[3])
    assert doc["inference"]["results_dir"] == doc["results_dir"] and doc["inference"]["checkpoint"] == str(ckpt)
    assert inf.log_file.name == "inference.log"
    ev = evaluate_job(ctx, results_dir=ws.root / "results" / "r" / "evaluate", checkpoint=ckpt,
                      test_csv=ws.kpi_csv, test_images_dir=ws.kpi_images)
    doc = load_yaml_mapping(ev.argv[3])
    assert doc["evaluate"]["checkpoint"] == str(ckpt)
    assert doc["dataset"]["classify"]["test_dataset"]["csv_path"] == str(ws.kpi_csv)


def test_the_parser_recovers_spec_overrides_and_results_dir(ctx: TaoContext) -> None:
    job = _train(ctx, ctx.workspace.root / "results" / "q")
    cmd = parse_command(job.argv)
    assert cmd.words == ("visual_changenet", "train") and Path(cmd.spec_path).name == "spec.yaml"
    overrides = cmd.override_dict()
    assert overrides["train.num_epochs"] == 3 and overrides["results_dir"] == str(ctx.workspace.root / "results/q")
    # what TAO would resolve (results_dir AND train.results_dir set: TAO writes straight into <rd>)
    assert load_changenet(job.argv).results_dir == str(ctx.workspace.root / "results/q")


@given(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,6}(\.[a-z_]{1,6}){0,2}", fullmatch=True),
                       st.one_of(st.integers(), st.booleans(), st.none(),
                                 st.floats(allow_nan=False, allow_infinity=False),
                                 st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1)),
                       max_size=5))
def test_override_formatting_round_trips(values: dict) -> None:
    parsed = dict(parse_overrides(format_overrides(values)))
    for key, value in values.items():
        assert parsed[key] == value


def test_data_services_jobs(small_ws: Path) -> None:
    ws = WorkspaceLayout.at(small_ws)
    dctx = DataServicesContext(workspace=ws, image="nvcr.io/nvidia/tao/tao-toolkit:x-data-services",
                               env={"HF_TOKEN": "hf_abcdef"})
    rd = ws.root / "results" / "r" / "iter1" / "mining_filter"
    emb = embedding_job(dctx, results_dir=rd, input_parquet=rd / "targets.parquet",
                        output_parquet=rd / "target_embeddings.parquet")
    assert emb.argv[:3] == ("embedding", "image_embeddings", "-e")
    assert emb.user is None and emb.workdir == rd and (rd / "experiment_specs").is_dir()
    spec = load_yaml_mapping(emb.argv[3])
    # Data Services accepts exactly "SigLIP" or "CLIP" (image_embeddings.py, tao-data-services 7.0.1)
    assert spec["model"] == "SigLIP" and spec["model_path"] == "google/siglip-base-patch16-224"
    assert spec["batch_size"] == 64 and not emb.ipc_host and emb.shm_size == "8g"
    nn = nearest_neighbors_job(dctx, results_dir=rd, source_parquet=rd / "s.parquet", target_parquet=rd / "t.parquet",
                               output_parquet=rd / "mined.parquet", topn=7)
    spec = load_yaml_mapping(nn.argv[3])
    assert nn.argv[:2] == ("tmm", "nearest_neighbors")
    assert spec["topn"] == 7 and spec["knn_metric"] == "cosine" and spec["filter_by_label"] == "false"
    with pytest.raises(InputError, match="outside the workspace"):
        embedding_job(dctx, results_dir=rd, input_parquet=Path("/tmp/x.parquet"), output_parquet=rd / "o.parquet")


def test_a_job_run_as_the_host_user_gets_a_home_and_a_name(ctx: TaoContext) -> None:
    # `--user uid:gid` has no passwd entry in TAO's image: HOME would be `/` and USER unset (issue 24).
    job = _train(ctx, ctx.workspace.root / "results" / "r" / "train")
    assert job.user is not None
    assert job.env["HOME"] == str(ctx.workspace.tao_home) and ctx.workspace.tao_home.is_dir()
    assert job.env["HOME"].startswith(str(ctx.workspace.root)) and job.env["USER"]


def test_data_services_caches_models_in_the_workspace_and_caps_topn(small_ws: Path) -> None:
    ws = WorkspaceLayout.at(small_ws)
    dctx = DataServicesContext(workspace=ws, image="nvcr.io/nvidia/tao/tao-toolkit:x-data-services", env={})
    rd = ws.root / "results" / "r" / "iter1" / "mining_filter"
    emb = embedding_job(dctx, results_dir=rd, input_parquet=rd / "t.parquet", output_parquet=rd / "e.parquet")
    assert emb.env["HF_HOME"] == str(ws.hf_home) and ws.hf_home.is_dir()  # SigLIP fetched once, not per job
    nn = nearest_neighbors_job(dctx, results_dir=rd, source_parquet=rd / "s.parquet", target_parquet=rd / "t.parquet",
                               output_parquet=rd / "mined.parquet", topn=7, source_rows=3)
    assert load_yaml_mapping(nn.argv[3])["topn"] == 3  # cuML refuses more neighbours than the index holds


def test_export_job_traces_the_input_tao_builds(ctx: TaoContext) -> None:
    from deft_aoi.runners.tao.commands import export_job

    rd = ctx.workspace.root / "results" / "run_1" / "handoff" / "export"
    ckpt = ctx.workspace.root / "results" / "run_1" / "baseline" / "train" / "model_epoch_000_step_00001.pth"
    job = export_job(ctx, results_dir=rd, checkpoint=ckpt, onnx_file=rd / "model.onnx")
    assert job.argv[:4] == ("visual_changenet", "export", "-e", str(rd / "spec.yaml"))
    assert f"export.checkpoint={ckpt}" in job.argv and f"export.onnx_file={rd / 'model.onnx'}" in job.argv
    doc = load_yaml_mapping(rd / "spec.yaml")
    spec = ctx.spec
    # one light, linear concat: the dummy input is one image of the spec's size (scripts/export.py input_shape)
    assert (doc["export"]["input_height"], doc["export"]["input_width"]) == (spec.image_height, spec.image_width)
    assert doc["export"]["results_dir"] == str(rd)
    two = spec.model_copy(update={"lights": ("A", "B")})
    from deft_aoi.runners.tao.commands import export_input_shape

    assert export_input_shape(two) == (2 * spec.image_height, spec.image_width)  # stacked along the height
