"""The run record keeps the typed config once; states written before that still load and resume.

fixtures/deft_state_before_settings.json was written by the code of main@d382618 (`deft run --backend fake
--max-iterations 1 --epochs 1 --min-similarity 0.5 --stage-timeout 600` on a demo workspace): settings as
the Pre-Flight Summary's text rows, the KPI as text, max_iterations both at the top and in those rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deft_aoi.config import KpiTarget, resolve_config
from deft_aoi.loop.session import config_from_state
from deft_aoi.loop.state import RunConfigRecord, RunState
from deft_aoi.workspace.catalog import CHECKPOINT_KEYS

from .test_cli_loop import FAST, deft, only_run, state

OLD_STATE = Path(__file__).parent / "fixtures" / "deft_state_before_settings.json"


def test_a_state_written_before_settings_reads_back_typed() -> None:
    old = json.loads(OLD_STATE.read_text())
    assert "settings" not in old["config"] and old["config"]["parameters"]
    loaded = RunState.model_validate(old)
    config = config_from_state(loaded)
    assert config.max_iterations.value == 1 and config.max_iterations.source == "flag"
    assert config.min_similarity.value == 0.5 and isinstance(config.min_similarity.value, float)
    assert config.stage_timeout.value == 600.0 and config.num_epochs.value == 1
    assert config.mining_memory.value is None  # "—" in the old rows
    assert isinstance(config.kpi.value, KpiTarget) and loaded.kpi.target_pct == 0.1
    assert loaded.max_iterations == 1 and loaded.kpi_target == old["kpi_target"]
    old_rows = [tuple(row) for row in old["config"]["parameters"]]
    old_names = {row[0] for row in old_rows}
    assert [row for row in loaded.config.parameters if row[0] in old_names] == old_rows
    # Settings added after that state was written read back at their defaults (a new setting needs no migration).
    assert all(row[2] == "default" for row in loaded.config.parameters if row[0] not in old_names)


def test_the_saved_config_is_typed_json_and_holds_each_setting_once() -> None:
    config = resolve_config({"max_iterations": 2, "kpi": "FAR<=1%@recall=99%", "mining_memory": "64M"}, {})
    record = json.loads(RunConfigRecord.model_validate(
        {**json.loads(OLD_STATE.read_text())["config"], "settings": config.model_dump(mode="json")}
    ).model_dump_json())
    assert "parameters" not in record  # the table is derived from the settings, never stored beside them
    assert record["settings"]["kpi"]["value"]["target_pct"] == 1.0  # typed, not text to re-parse
    assert record["settings"]["max_iterations"] == {"value": 2, "source": "flag"}
    assert RunConfigRecord.model_validate(record).settings == config


def test_max_iterations_and_kpi_have_one_owner_in_the_state() -> None:
    loaded = RunState.model_validate(json.loads(OLD_STATE.read_text()))
    dumped = json.loads(loaded.model_dump_json())
    # The top-level fields (CONTRACTS §8) are views written from the settings; a state whose top-level
    # value differs (an older writer) sets the setting itself, so the two can never disagree.
    dumped["max_iterations"] = 9
    assert RunState.model_validate(dumped).config.settings.max_iterations.value == 9
    del dumped["max_iterations"], dumped["kpi_target"]
    again = RunState.model_validate(dumped)
    assert again.max_iterations == 1 and again.kpi_target == loaded.kpi_target


def _to_old_format(run: Path) -> None:
    """Rewrite a run's state the way main@d382618 wrote it (no `settings`: text rows + top-level copies)."""
    doc = state(run)
    settings = doc["config"].pop("settings")
    rows = []
    for name, field in settings.items():
        value = field["value"]
        text = "—" if value is None else value["text"] if name == "kpi" else str(value)
        rows.append([name, text, field["source"]])
    doc["config"]["parameters"] = rows
    (run / "deft_state.json").write_text(json.dumps(doc, indent=2))


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_an_old_format_state_resumes(demo_ws: Path) -> None:
    env = {"DEFT_DOCKER": "fake", "DEFT_FAKE_FAULT": "inference:exit1:once"}
    args = ["run", "-w", str(demo_ws), "--yes", *FAST, "--min-similarity", "0.5"]
    args[args.index("fake")] = "docker"
    assert deft(*args, env=env).exit_code == 1
    run = only_run(demo_ws)
    _to_old_format(run)
    assert "settings" not in state(run)["config"]
    resumed = deft("resume", "-w", str(demo_ws), env=env)
    assert resumed.exit_code == 0, resumed.output
    after = state(run)
    assert after["status"] == "finished"
    assert after["config"]["settings"]["min_similarity"] == {"value": 0.5, "source": "flag"}
    assert after["max_iterations"] == 1


def _checkpoints_to_paths(run: Path) -> dict[str, str]:
    """Rewrite a run the way versions before checkpoints were catalog artefacts left it: the train stage's
    checkpoints as paths among its values (state and record), the chosen one as `best_ckpt_path`, no links."""
    doc = state(run)
    paths: dict[str, str] = {}
    for name, it in doc["iterations"].items():
        train = it["stages"].get("train")
        if train is None or train["status"] != "complete":
            continue
        record_file = run / train["output_dir"] / ".stage.json"
        record = json.loads(record_file.read_text())
        kinds = {key.split(".")[1]: str((run / train["outputs"][key]["path"]).resolve()) for key in CHECKPOINT_KEYS}
        for rec in (train, record):
            rec["outputs"] = {k: v for k, v in rec["outputs"].items() if k not in CHECKPOINT_KEYS}
        record["updates"]["checkpoints"] = it["checkpoints"] = kinds
        it["best_ckpt_path"] = kinds.get(it.get("chosen_checkpoint") or "")
        record_file.write_text(json.dumps(record, indent=2))
        shutil.rmtree(run / train["output_dir"] / "checkpoints")
        paths[name] = kinds["best_val"]
    (run / "deft_state.json").write_text(json.dumps(doc, indent=2))
    return paths


def test_a_run_that_recorded_checkpoint_paths_resumes(demo_ws: Path) -> None:
    """A run stopped after its baseline trained, rewritten as older versions recorded checkpoints (paths among
    the values, no catalog links), resumes: inference, evaluate, RCA, the next fine-tune and the hand-off read the
    recorded paths; the new train stage writes the catalog's links."""
    env = {"DEFT_DOCKER": "fake", "DEFT_FAKE_FAULT": "inference:exit1:once"}
    args = ["run", "-w", str(demo_ws), "--yes", *FAST, "--min-similarity", "0.5", "--finetune-from", "baseline"]
    args[args.index("fake")] = "docker"
    assert deft(*args, env=env).exit_code == 1
    run = only_run(demo_ws)
    recorded = _checkpoints_to_paths(run)
    assert set(recorded) == {"baseline"} and not (run / "baseline" / "train" / "checkpoints").exists()

    resumed = deft("resume", "-w", str(demo_ws), env=env)
    assert resumed.exit_code == 0, resumed.output
    after = state(run)
    assert after["status"] == "finished"
    baseline, iter1 = after["iterations"]["baseline"], after["iterations"]["iter1"]
    assert set(baseline["recorded_checkpoints"].values()) == {recorded["baseline"]}
    assert baseline["best_ckpt_path"] == recorded["baseline"]
    # the baseline's inference scored the recorded file; iter1 fine-tuned from it and wrote the catalog's links
    scored = Path(recorded["baseline"]).relative_to(demo_ws.resolve()).as_posix()  # logs name it workspace-relative
    inference_log = next((run / baseline["stages"]["inference"]["output_dir"]).rglob("*.log")).read_text()
    assert f"inference.checkpoint={scored}" in inference_log
    assert scored in (run / iter1["stages"]["train"]["output_dir"] / "train.log").read_text()
    assert "recorded_checkpoints" not in iter1 and set(CHECKPOINT_KEYS) <= set(iter1["stages"]["train"]["outputs"])
    best = json.loads((run / "best_model.json").read_text())
    assert Path(best["checkpoint"]).is_file()
