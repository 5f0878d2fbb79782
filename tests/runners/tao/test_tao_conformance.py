"""Issue 11: what deft hands the real TAO containers is what NVIDIA's code accepts (one test per point).

The facts come from NVIDIA's public sources, cited beside each rule in `deft_aoi.runners.tao.rules`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deft_aoi.analysis.handoff import inference_spec
from deft_aoi.cli.app import app
from deft_aoi.errors import InputError, StageFailed
from deft_aoi.runners.base import run_checked
from deft_aoi.runners.docker.runner import DockerRunner
from deft_aoi.runners.fake.docker_client import FakeDockerClient
from deft_aoi.runners.tao import rules as tao_rules
from deft_aoi.runners.tao.changenet_spec import load_spec, load_spec_document
from deft_aoi.runners.tao.commands import (
    DataServicesContext,
    TaoContext,
    embedding_job,
    train_job,
)
from deft_aoi.runners.tao.outputs import checkpoint_name, prune_checkpoints
from deft_aoi.runners.tao.schema import snapshot_for_image, supported_releases, with_defaults
from deft_aoi.runners.tao.spec import check_schema, effective_spec, validate_spec
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.scaffold import resource_text

FIXTURES = Path(__file__).parent / "fixtures"
NVIDIA_SPEC = FIXTURES / "nvidia_deft_baseline_spec.yaml"
REPO = Path(__file__).resolve().parents[3]
cli = CliRunner()


def _rule(results: list[tao_rules.RuleResult], name: str) -> tao_rules.RuleResult:
    return next(r for r in results if r.rule == name)


def _effective(doc: dict[str, Any]) -> dict[str, Any]:
    return effective_spec(doc)


def _template() -> dict[str, Any]:
    return yaml.safe_load(resource_text("baseline_spec.yaml"))


# ---------------------------------------------------------------- 1. ViT decode_head


def test_template_and_deeppcb_spec_carry_the_vit_decode_head(deeppcb_dev: Path) -> None:
    for doc in (_template(), load_spec_document(deeppcb_dev / "specs" / "baseline_spec.yaml")):
        assert doc["model"]["decode_head"] == {"use_summary_token": True, "feature_strides": [4, 8, 16, 32]}
        assert not tao_rules.failures(tao_rules.spec_rules(_effective(doc)))


def test_vit_learnable_without_decode_head_is_refused() -> None:
    doc = _template()
    del doc["model"]["decode_head"]
    result = _rule(tao_rules.spec_rules(_effective(doc)), "ViT decode_head.feature_strides")
    assert result.failed and "[4, 8, 16, 16]" in result.message and "[4, 8, 16, 32]" in result.message
    assert "vit_adapter.py" in str(result.source)
    # a FAN backbone keeps TAO's default strides: the rule does not apply
    doc["model"]["backbone"]["type"] = "fan_small_12_p4_hybrid"
    assert not _rule(tao_rules.spec_rules(_effective(doc)), "ViT decode_head.feature_strides").applies


# ---------------------------------------------------------------- 2. Data Services releases


def test_data_services_mining_needs_a_7_0_0_image() -> None:
    old = tao_rules.mining_engine_rule("data_services", "nvcr.io/nvidia/tao/tao-toolkit:6.26.3-data-services")
    assert old.failed and "≥ 7.0.0" in old.message
    new = tao_rules.mining_engine_rule("data_services", "nvcr.io/nvidia/tao/tao-toolkit:7.0.0-data-services")
    assert new.ok and new.applies
    assert not tao_rules.mining_engine_rule("builtin", "nvcr.io/nvidia/tao/tao-toolkit:6.26.3-data-services").applies
    pinned = yaml.safe_load((REPO / "versions.yaml").read_text())["images"]["tao_toolkit"]
    assert tao_rules.release_of(pinned["data_services"]) >= tao_rules.FIRST_DATA_SERVICES_MINING
    assert tao_rules.release_of(pinned["pyt"]) == (7, 1, 0)


def test_preflight_refuses_data_services_mining_on_an_old_image(deeppcb_copy: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (deeppcb_copy / "versions.yaml").write_text(
        "images:\n  tao_toolkit:\n    data_services: nvcr.io/nvidia/tao/tao-toolkit:6.26.3-data-services\n")
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    result = cli.invoke(app, ["preflight", "--workspace", str(deeppcb_copy), "--backend", "docker", "--json",
                              "--mining-engine", "data_services"])
    failed = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"}
    assert result.exit_code == 1 and list(failed) == ["TAO rule: Data Services has embedding/tmm"]
    assert "6.26.3-data-services is older" in failed["TAO rule: Data Services has embedding/tmm"]
    result = cli.invoke(app, ["run", "--workspace", str(deeppcb_copy), "--backend", "docker", "--yes",
                              "--mining-engine", "data_services", "--max-iterations", "0"])
    assert result.exit_code == 1 and "pre-flight failed" in result.output
    assert not list((deeppcb_copy / "results").glob("run_*"))


def test_the_fake_has_no_mining_commands_before_7_0_0(small_ws: Path) -> None:
    ws = WorkspaceLayout.at(small_ws)
    ctx = DataServicesContext(workspace=ws, image="nvcr.io/nvidia/tao/tao-toolkit:6.26.3-data-services")
    rd = ws.root / "results" / "r" / "mining"
    job = embedding_job(ctx, results_dir=rd, input_parquet=rd / "in.parquet", output_parquet=rd / "out.parquet")
    with pytest.raises(StageFailed, match="exited with code 127"):
        run_checked(DockerRunner(FakeDockerClient(state_dir=rd / ".f"), ws), job)
    assert "executable file not found" in job.log_file.read_text()


# ---------------------------------------------------------------- 3. SigLIP / CLIP


def test_embedding_model_is_spelled_as_data_services_wants(small_ws: Path) -> None:
    assert tao_rules.embedding_model_rule("SigLIP").ok and tao_rules.embedding_model_rule("CLIP").ok
    assert tao_rules.embedding_model_rule("siglip").failed
    ws = WorkspaceLayout.at(small_ws)
    ctx = DataServicesContext(workspace=ws, image="nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services")
    rd = ws.root / "results" / "r" / "m"
    rd.mkdir(parents=True)
    import pandas as pd

    image = next(ws.kpi_images.glob("*/test/*_SolderLight.jpg"))
    pd.DataFrame({"filepath": [str(image)]}).to_parquet(rd / "in.parquet")
    runner = DockerRunner(FakeDockerClient(state_dir=rd / ".f"), ws)
    run_checked(runner, embedding_job(ctx, results_dir=rd, input_parquet=rd / "in.parquet",
                                      output_parquet=rd / "out.parquet"))
    bad = embedding_job(ctx, results_dir=rd / "bad", input_parquet=rd / "in.parquet",
                        output_parquet=rd / "bad.parquet", model="siglip")
    with pytest.raises(StageFailed):
        run_checked(runner, bad)
    assert "accepts exactly SigLIP or CLIP" in bad.log_file.read_text()


# ---------------------------------------------------------------- 4. handoff spec keeps train.classify


def test_inference_handoff_spec_keeps_the_loss(tmp_path: Path) -> None:
    doc = inference_spec(_template(), checkpoint=tmp_path / "best.pth", threshold=0.42,
                         infer_csv=tmp_path / "kpi.csv", infer_images=tmp_path / "images")
    assert doc["train"] == {"classify": {"loss": "ce", "cls_weight": [1.0, 10.0]}}
    assert not _rule(tao_rules.spec_rules(_effective(doc), "inference"), "loss matches difference module").failed
    del doc["train"]  # what deft wrote before: TAO would build the default contrastive loss
    result = _rule(tao_rules.spec_rules(_effective(doc), "inference"), "loss matches difference module")
    assert result.failed and "contrastive" in result.message


# ---------------------------------------------------------------- 5. paths TAO's launcher re-splits


@pytest.mark.parametrize("name", ["my ws", "ws,2", "a=b", "ws(1)"])
def test_paths_that_break_tao_command_line_are_refused(name: str) -> None:
    result = tao_rules.paths_rule({"workspace": f"/data/{name}"})
    assert result.failed and "workspace" in result.message and "shlex" in str(result.source)
    assert tao_rules.paths_rule({"workspace": "/data/ws_2-b.v1"}).ok


def test_preflight_names_a_workspace_path_with_a_space(deeppcb_dev: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "my workspace"
    shutil.copytree(deeppcb_dev, ws)
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    result = cli.invoke(app, ["preflight", "--workspace", str(ws), "--backend", "docker", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 1
    assert checks["TAO rule: paths survive TAO's command line"]["status"] == "fail"
    assert "space" in checks["TAO rule: paths survive TAO's command line"]["detail"]


# ---------------------------------------------------------------- 6-8. image_ext, batch_size, rows, square input


def test_image_ext_needs_its_dot() -> None:
    doc = _template()
    doc["dataset"]["classify"]["image_ext"] = "jpg"
    result = _rule(tao_rules.spec_rules(_effective(doc)), "image_ext has a leading dot")
    assert result.failed and "_<light>jpg" in result.message


def test_batch_rows_and_classes() -> None:
    doc = _template()
    doc["dataset"]["classify"]["batch_size"] = 1
    assert _rule(tao_rules.spec_rules(_effective(doc)), "batch_size > 1").failed
    # only the training loader asserts it: inference runs a batch of 1 (NVIDIA's hand-off writes 1)
    assert not _rule(tao_rules.spec_rules(_effective(doc), "inference"), "batch_size > 1").failed
    doc["dataset"]["classify"]["batch_size"] = 0
    assert _rule(tao_rules.spec_rules(_effective(doc), "inference"), "batch_size > 1").failed
    spec = _effective(_template())  # batch_size 16
    few = tao_rules.DatasetFacts("training", "t.csv", 15, ("PASS",) * 10 + ("open",) * 5)
    assert tao_rules.rows_rule(spec, [few]).failed
    enough = tao_rules.DatasetFacts("training", "t.csv", 16, ("PASS",) * 10 + ("open",) * 6)
    assert tao_rules.rows_rule(spec, [enough]).ok
    # TAO's _dataloader_batch_check runs for the validation, test and predict loaders too, not only training.
    for name in ("validation", "test", "KPI"):
        small = tao_rules.DatasetFacts(name, f"{name}.csv", 15, ("PASS",) * 10 + ("open",) * 5)
        result = tao_rules.rows_rule(spec, [enough, small])
        assert result.failed and f"{name} CSV {name}.csv has 15 row(s)" in result.message
        assert "_dataloader_batch_check" in str(result.source)
    two_gpus = {**spec, "train": {**spec["train"], "num_gpus": 2}}  # batch_size x devices
    assert "= 32" in tao_rules.rows_rule(two_gpus, [enough]).message
    no_defect = tao_rules.DatasetFacts("training", "t.csv", 16, ("PASS",) * 16)
    assert "defect" in tao_rules.training_classes_rule([no_defect]).message
    assert tao_rules.training_classes_rule([no_defect]).failed
    no_pass = tao_rules.DatasetFacts("training", "t.csv", 16, ("open",) * 16)
    assert tao_rules.training_classes_rule([no_pass]).failed


@pytest.mark.parametrize(("edit", "rule"), [
    ({"num_input": 2, "input_map": {"SolderLight": 0, "UniformLight": 1}}, "ViT/RADIO input is square"),
    ({"image_width": 100, "image_height": 100}, "ViT adapter input is a multiple of 32"),
    ({"image_width": 128, "image_height": 128}, "C-RADIO adapter input is 224x224"),
    ({"image_width": 256, "image_height": 256}, "C-RADIO adapter input is 224x224"),
])
def test_vit_input_shape_rules(edit: dict[str, Any], rule: str) -> None:
    doc = _template()
    doc["dataset"]["classify"].update(edit)
    assert _rule(tao_rules.spec_rules(_effective(doc)), rule).failed
    doc["model"]["classify"]["difference_module"] = "euclidean"
    doc["train"]["classify"]["loss"] = "contrastive"
    if rule.startswith(("ViT adapter", "C-RADIO")):  # only the adapter (learnable module) has these limits
        assert not _rule(tao_rules.spec_rules(_effective(doc)), rule).applies


def test_the_c_radio_rule_passes_224_and_spares_other_vits() -> None:
    doc = _template()
    assert (doc["dataset"]["classify"]["image_width"], doc["dataset"]["classify"]["image_height"]) == (224, 224)
    assert _rule(tao_rules.spec_rules(_effective(doc)), "C-RADIO adapter input is 224x224").ok
    doc["model"]["backbone"]["type"] = "vit_large_nvdinov2"  # the DINOv2 adapter takes img_size from the spec
    doc["dataset"]["classify"].update(image_width=128, image_height=128)
    assert not _rule(tao_rules.spec_rules(_effective(doc)), "C-RADIO adapter input is 224x224").applies


def test_a_vit_with_linear_concat_takes_one_light() -> None:
    doc = _template()
    doc["dataset"]["classify"].update(num_input=2, input_map={"SolderLight": 0, "UniformLight": 1},
                                      image_width=112, image_height=224)  # square as the model is built
    result = _rule(tao_rules.spec_rules(_effective(doc)), "ViT with linear concat takes one light")
    assert result.failed and "along the height" in result.message and "oi_dataset.py" in str(result.source)
    doc["dataset"]["classify"].update(num_input=1, input_map={"SolderLight": 0}, image_width=224)
    assert _rule(tao_rules.spec_rules(_effective(doc)), "ViT with linear concat takes one light").ok


def test_num_epochs_not_a_multiple_of_checkpoint_interval_warns_and_is_not_refused() -> None:
    doc = _template()
    doc["train"].update(num_epochs=7, checkpoint_interval=5)
    result = _rule(tao_rules.spec_rules(_effective(doc)), "num_epochs a multiple of checkpoint_interval")
    assert result.warns and not result.failed and "epochs 6-7" in result.message
    assert result not in tao_rules.failures(tao_rules.spec_rules(_effective(doc)))  # TAO runs: nothing refuses it
    doc["train"].update(num_epochs=10)
    assert _rule(tao_rules.spec_rules(_effective(doc)), "num_epochs a multiple of checkpoint_interval").ok


def test_a_euclidean_score_is_refused_by_deft_not_by_tao() -> None:
    doc = _template()
    doc["model"]["classify"]["difference_module"] = "euclidean"
    doc["train"]["classify"]["loss"] = "contrastive"
    assert not tao_rules.failures(tao_rules.spec_rules(_effective(doc)))  # TAO trains it
    (result,) = tao_rules.loop_rules(_effective(doc))
    assert result.failed and "distance" in result.message and "cn_pl_model.py" in str(result.source)
    assert tao_rules.loop_rules(_effective(_template()))[0].ok


def test_a_tilde_in_a_path_breaks_hydra() -> None:
    result = tao_rules.paths_rule({"workspace": "/home/me/~ws"})
    assert result.failed and "'~'" in result.message
    assert tao_rules.paths_rule({"workspace": "/home/me/ws-1.2_a@b"}).ok


def test_numeric_looking_path_columns_are_named_with_file_row_and_field(tmp_path: Path) -> None:
    csv = tmp_path / "kpi.csv"
    csv.write_text("input_path,golden_path,label,object_name\n0042,g/1,PASS,c1\n0043,g/2,open,c2\n")
    facts = tao_rules.dataset_facts("KPI", str(csv))
    result = tao_rules.path_types_rule([facts])
    assert result.failed and f"{csv} row 2, field input_path: '0042'" in result.message
    assert "golden_path" not in result.message  # one text value keeps pandas' column text
    csv.write_text("input_path,golden_path,label,object_name\n0042,g/1,PASS,c1\nb/0043,g/2,open,c2\n")
    assert tao_rules.path_types_rule([tao_rules.dataset_facts("KPI", str(csv))]).ok


def test_fake_tao_refuses_what_tao_refuses(small_ws: Path) -> None:
    ws = WorkspaceLayout.at(small_ws)
    spec = load_spec(ws.spec_file)
    ctx = TaoContext(workspace=ws, spec=spec, image="nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt", env={}, batch_size=4)
    runner = DockerRunner(FakeDockerClient(state_dir=ws.root / ".f"), ws, name="fake")
    rd = ws.root / "results" / "r" / "train"
    job = train_job(ctx, results_dir=rd, train_csv=ws.train_csv, train_images_dir=ws.kpi_images,
                    val_csv=ws.validation_csv, val_images_dir=ws.kpi_images, num_epochs=1,
                    pretrained_checkpoint=None)
    # TAO reads the CSV as written: a lower-case pass trains as a defect (int(label != 'PASS'))
    text = ws.train_csv.read_text()
    ws.train_csv.write_text(text.replace(",PASS,", ",pass,", 1))
    with pytest.raises(StageFailed, match="exited with code 1"):
        run_checked(runner, job)
    assert "not exactly 'PASS'" in job.log_file.read_text()
    ws.train_csv.write_text(text)
    run_checked(runner, job)
    # 14 training rows cannot fill a batch of 16: TAO's loader drops the partial batch
    big = TaoContext(workspace=ws, spec=spec, image=ctx.image, env={}, batch_size=16)
    job = train_job(big, results_dir=rd.parent / "t16", train_csv=ws.train_csv, train_images_dir=ws.kpi_images,
                    val_csv=ws.validation_csv, val_images_dir=ws.kpi_images, num_epochs=1,
                    pretrained_checkpoint=None)
    with pytest.raises(StageFailed):
        run_checked(runner, job)
    log = job.log_file.read_text()  # TAO checks every loader (validation has 10 rows) before it starts
    assert "has 14 row(s); TAO needs ≥ batch_size (16) = 16 in every set" in log
    assert "validation CSV" in log and "has 10 row(s)" in log


# ---------------------------------------------------------------- 9. labels as written


def test_preflight_refuses_a_lower_case_pass(deeppcb_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = deeppcb_copy / "kpi" / "testing_set.csv"
    csv.write_text(csv.read_text().replace(",PASS,", ",Pass,", 1))
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    result = cli.invoke(app, ["preflight", "--workspace", str(deeppcb_copy), "--backend", "docker", "--json"])
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["TAO rule: labels: PASS exactly"]
    assert result.exit_code == 1 and check["status"] == "fail"
    assert "testing_set.csv row" in check["detail"] and "'Pass'" in check["detail"]


# ---------------------------------------------------------------- 10. the backbone file


def test_null_backbone_is_refused_by_real_docker_preflight_only(deeppcb_copy: Path) -> None:
    ws = WorkspaceLayout.at(deeppcb_copy)
    spec = load_spec(ws.spec_file)
    assert spec.get("model.backbone.pretrained_backbone_path") is None

    def names(runner_name: str) -> dict[str, str]:
        runner = DockerRunner(FakeDockerClient(state_dir=deeppcb_copy / ".f"), ws, name=runner_name)
        return {c.name: c.status for c in runner.preflight(ws, spec, 16)}

    assert names("docker")["TAO rule: backbone weights staged"] == "fail"
    assert "TAO rule: backbone weights staged" not in names("fake")
    staged = deeppcb_copy / "augmentation" / "backbone" / "b.pth"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"w")
    doc = with_defaults(spec.raw)
    doc["model"]["backbone"]["pretrained_backbone_path"] = str(staged)
    assert tao_rules.backbone_rule(doc, str(deeppcb_copy)).ok
    doc["model"]["backbone"]["pretrained_backbone_path"] = "/data/pretrained_models/C-RADIOv2_B.pth"
    assert "outside the workspace" in tao_rules.backbone_rule(doc, str(deeppcb_copy)).message


# ---------------------------------------------------------------- 11. shm, not host IPC (see test_tao_commands)
# ---------------------------------------------------------------- 12. checkpoints


def test_template_checkpoints_every_5_epochs_and_the_loop_prunes(tmp_path: Path) -> None:
    assert _template()["train"]["checkpoint_interval"] == 5
    for epoch in range(4):
        (tmp_path / checkpoint_name(epoch, epoch + 1)).write_text("x")
    (tmp_path / "changenet_model_classify_latest.pth").symlink_to(checkpoint_name(3, 4))
    keep = {tmp_path / checkpoint_name(1, 2), tmp_path / checkpoint_name(3, 4)}
    gone = prune_checkpoints(tmp_path, keep)
    assert sorted(p.name for p in gone) == [checkpoint_name(0, 1), checkpoint_name(2, 3)]
    assert {p.name for p in tmp_path.glob("model_epoch_*")} == {p.name for p in keep}
    assert (tmp_path / "changenet_model_classify_latest.pth").exists()


def test_a_short_run_lowers_the_intervals_tao_would_assert_on(small_ws: Path) -> None:
    ws = WorkspaceLayout.at(small_ws)
    spec = load_spec(ws.spec_file).model_copy(update={"raw": {**_template(), "dataset": load_spec(
        ws.spec_file).raw["dataset"]}})
    ctx = TaoContext(workspace=ws, spec=spec, image="x:7.1.0-pyt", env={}, batch_size=4)
    rd = ws.root / "results" / "r" / "train"
    train_job(ctx, results_dir=rd, train_csv=ws.train_csv, train_images_dir=ws.kpi_images,
              val_csv=ws.validation_csv, val_images_dir=ws.kpi_images, num_epochs=2, pretrained_checkpoint=None)
    written = yaml.safe_load((rd / "spec.yaml").read_text())["train"]
    assert written["checkpoint_interval"] == 2 and written["num_epochs"] == 2


# ---------------------------------------------------------------- 13. augmentation


def test_template_trains_with_nvidias_augmentation() -> None:
    aug = _template()["dataset"]["classify"]["augmentation_config"]
    nvidia = load_spec_document(NVIDIA_SPEC)["dataset"]["classify"]["augmentation_config"]
    assert aug["augment"] is True and aug == nvidia


def test_template_samples_defects_as_nvidias_deft_template() -> None:
    ours = _template()["dataset"]["classify"]["fpratio_sampling"]
    assert ours == load_spec_document(NVIDIA_SPEC)["dataset"]["classify"]["fpratio_sampling"] == 0.2
    assert snapshot_for_image(None)[0].keys["dataset.classify.fpratio_sampling"]["default"] == 0.1  # TAO's own


# ---------------------------------------------------------------- 14-15. loading like TAO; NVIDIA's schema


def test_spec_loads_like_tao(tmp_path: Path) -> None:
    doc = _template()
    doc["train"]["optim"]["lr"] = "LR"
    doc["evaluate"] = {"batch_size": "${dataset.classify.batch_size}"}
    doc["train"]["results_dir"] = "${results_dir}/train"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc).replace("lr: LR", "lr: 1e-5"))
    loaded = load_spec_document(path)
    assert loaded["train"]["optim"]["lr"] == 1e-5 and isinstance(loaded["train"]["optim"]["lr"], float)
    assert loaded["evaluate"]["batch_size"] == "${dataset.classify.batch_size}"  # kept for TAO to resolve
    check_schema(loaded, None)
    assert effective_spec(loaded)["evaluate"]["batch_size"] == 16
    assert load_spec(path).learning_rate == 1e-5
    loaded["evaluate"]["batch_size"] = "${dataset.classify.no_such_key}"
    with pytest.raises(InputError, match="interpolation"):
        check_schema(loaded, None)


def test_clearml_is_not_a_visual_changenet_key() -> None:
    doc = _template()
    doc["clearml"] = {"project": "x"}
    with pytest.raises(InputError, match="unknown spec key 'clearml'"):
        check_schema(doc, None)


def test_nvidia_deft_spec_passes_our_schema_unchanged() -> None:
    doc = load_spec_document(NVIDIA_SPEC)
    for release in supported_releases():
        check_schema(doc, None, image=f"nvcr.io/nvidia/tao/tao-toolkit:{release}-pyt")
    assert not tao_rules.failures(tao_rules.spec_rules(_effective(doc)))


def test_nvidia_deft_spec_preflight_names_only_its_backbone(deeppcb_copy: Path) -> None:
    shutil.copy(NVIDIA_SPEC, deeppcb_copy / "specs" / "baseline_spec.yaml")
    ws = WorkspaceLayout.at(deeppcb_copy)
    runner = DockerRunner(FakeDockerClient(state_dir=deeppcb_copy / ".f"), ws, name="docker")
    failed = [c for c in runner.preflight(ws, load_spec(ws.spec_file), 16) if c.failed]
    assert [c.name for c in failed] == ["TAO rule: backbone weights staged"]
    assert "/data/pretrained_models/C-RADIOv2_B.pth" in failed[0].detail and "\n" not in failed[0].detail


def test_snapshot_follows_the_image_tag() -> None:
    assert supported_releases() == ["6.26.3", "7.0.1", "7.1.0", "7.3.0"]
    assert snapshot_for_image("x:7.3.0-pyt")[0].release == "7.3.0"
    # nvidia-tao-core 7.3.0's one change to Visual ChangeNet's schema over 7.1.0: the DINOv3 7B backbone
    assert "vit_7b_dinov3" in snapshot_for_image("x:7.3.0-pyt")[0].keys["model.backbone.type"]["choices"]
    assert "vit_7b_dinov3" not in snapshot_for_image("x:7.1.0-pyt")[0].keys["model.backbone.type"]["choices"]
    assert snapshot_for_image("nvcr.io/nvidia/tao/tao-toolkit:6.26.3-pyt")[0].release == "6.26.3"
    assert "train.checkpointer" not in snapshot_for_image("x:6.26.3-pyt")[0].keys
    assert "train.checkpointer" in snapshot_for_image("x:7.1.0-pyt")[0].keys
    snap, note = snapshot_for_image("x:7.0.5-pyt")
    assert snap.release == "7.0.1" and note and "7.0.5" in note
    doc = _template()
    doc["train"]["checkpointer"] = {"enable_topk": False}  # a 7.1 key
    check_schema(doc, None, image="x:7.1.0-pyt")
    with pytest.raises(InputError, match=r"unknown spec key 'train\.checkpointer'"):
        check_schema(doc, None, image="x:6.26.3-pyt")


def test_validate_spec_refuses_a_rule_breaker_before_launch(tmp_path: Path) -> None:
    doc = _template()
    doc["dataset"]["classify"]["image_ext"] = "png"
    doc["results_dir"] = str(tmp_path / "r")
    for key in ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset"):
        doc["dataset"]["classify"][key] = {"csv_path": str(tmp_path / "a.csv"), "images_dir": str(tmp_path)}
    with pytest.raises(InputError, match=r"image_ext = 'png' has no leading dot.*oi_dataset\.py"):
        validate_spec(doc, tmp_path)


# ---------------------------------------------------------------- acceptance, by the CLI


def test_acceptance_preflight_lists_rules_and_names_both_problems(deeppcb_copy: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from deft_aoi.runners import factory

    def real_docker_over_fake_client(backend: str, workspace: WorkspaceLayout, config: object = None) -> DockerRunner:
        return DockerRunner(FakeDockerClient(state_dir=workspace.root / ".f"), workspace, name="docker")

    monkeypatch.setattr(factory, "make_runner", real_docker_over_fake_client)
    # Every rule is a row of `--json` (the one-screen summary collapses the passing ones into a count)
    result = cli.invoke(app, ["preflight", "--backend", "docker", "--workspace", str(deeppcb_copy), "--json"])
    rows = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"]}
    for rule in ("image_ext has a leading dot", "batch_size > 1", "ViT decode_head.feature_strides",
                 "labels: PASS exactly", "backbone weights staged"):
        assert f"TAO rule: {rule}" in rows
    assert any("source:" in d and "tao-pytorch" in d for d in rows.values())
    summary = cli.invoke(app, ["preflight", "--backend", "docker", "--workspace", str(deeppcb_copy)]).output
    assert "TAO rules" in summary and "backbone weights staged" in summary  # the failing one, in full
    spec = deeppcb_copy / "specs" / "baseline_spec.yaml"
    spec.write_text(spec.read_text().replace("image_ext: .jpg", "image_ext: jpg").replace("batch_size: 16",
                                                                                           "batch_size: 1"))
    result = cli.invoke(app, ["preflight", "--backend", "docker", "--workspace", str(deeppcb_copy), "--json"])
    assert result.exit_code == 1
    failed = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"}
    assert "image_ext = 'jpg'" in failed["TAO rule: image_ext has a leading dot"]
    assert "batch_size = 1" in failed["TAO rule: batch_size > 1"]


def test_rules_and_schema_import_without_heavy_packages() -> None:
    """The fake TAO also runs inside slim containers: the rules need the standard library alone."""
    import subprocess
    import sys

    code = ("import sys, deft_aoi.runners.tao.rules, deft_aoi.runners.tao.schema; "
            "print(sorted(m for m in ('pandas', 'numpy', 'torch', 'pydantic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


# ---------------------------------------------------------------- issue 24: C-RADIO runs only at 224x224


def _set_size(ws: Path, side: int) -> None:
    spec = ws / "specs" / "baseline_spec.yaml"
    text = spec.read_text()
    assert "image_width: 224" in text and "image_height: 224" in text
    spec.write_text(text.replace("image_width: 224", f"image_width: {side}")
                    .replace("image_height: 224", f"image_height: {side}"))


def test_docker_preflight_refuses_c_radio_at_128_and_passes_the_shared_spec(
        deeppcb_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    args = ["preflight", "--workspace", str(deeppcb_copy), "--backend", "docker", "--json"]
    result = cli.invoke(app, args)  # the shared spec: 224x224
    rows = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 0, result.output
    assert rows["TAO rule: C-RADIO adapter input is 224x224"]["status"] == "pass"
    _set_size(deeppcb_copy, 128)
    result = cli.invoke(app, args)
    failed = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"}
    assert result.exit_code == 1 and list(failed) == ["TAO rule: C-RADIO adapter input is 224x224"]
    detail = failed["TAO rule: C-RADIO adapter input is 224x224"]
    assert "is 128x128" in detail and "exactly 224x224" in detail
    assert ("source: NVIDIA-TAO/tao-pytorch:nvidia_tao_pytorch/cv/visual_changenet/backbone/vit_adapter.py "
            "(CRADIOAdapter.forward_feature_pyramid") in detail


def test_docker_preflight_refuses_a_euclidean_score(deeppcb_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFT_DOCKER", "fake")
    spec = deeppcb_copy / "specs" / "baseline_spec.yaml"
    spec.write_text(spec.read_text().replace("difference_module: learnable", "difference_module: euclidean")
                    .replace("loss: ce", "loss: contrastive").replace("    cls_weight: [1.0, 10.0]\n", ""))
    result = cli.invoke(app, ["preflight", "--workspace", str(deeppcb_copy), "--backend", "docker", "--json"])
    failed = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"}
    assert result.exit_code == 1 and list(failed) == ["TAO rule: siamese_score is a probability"], failed


def test_the_fake_tao_refuses_c_radio_at_128(deeppcb_copy: Path, tmp_path: Path) -> None:
    from deft_aoi.runners.fake.tao import Execution, run_changenet_command

    _set_size(deeppcb_copy, 128)
    doc = load_spec_document(deeppcb_copy / "specs" / "baseline_spec.yaml")
    for key in ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset"):
        ds = doc["dataset"]["classify"][key]
        ds["csv_path"], ds["images_dir"] = str(deeppcb_copy / ds["csv_path"]), str(deeppcb_copy / ds["images_dir"])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    out = Execution()
    run_changenet_command(["visual_changenet", "train", "-e", str(spec), f"results_dir={tmp_path / 'r'}",
                           f"train.results_dir={tmp_path / 'r'}"], out,
                          image="nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt")
    assert out.exit_code != 0
    assert any("[C-RADIO adapter input is 224x224]" in line for line in out.lines), out.lines
    assert not (tmp_path / "r" / "status.json").exists()
