"""The run record keeps the typed config once; states written before that still load and resume.

fixtures/deft_state_before_settings.json was written by the code of main@d382618 (`deft run --backend fake
--max-iterations 1 --epochs 1 --min-similarity 0.5 --stage-timeout 600` on a demo workspace): settings as
the Pre-Flight Summary's text rows, the KPI as text, max_iterations both at the top and in those rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deft_aoi.config import KpiTarget, resolve_config
from deft_aoi.loop.session import config_from_state
from deft_aoi.loop.state import RunConfigRecord, RunState

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
