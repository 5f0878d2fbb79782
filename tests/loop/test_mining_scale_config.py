"""The loop's mining-at-scale settings (issue 14): defaults, flags, validation, resume, and a run that
mines with a memory budget and a refused low-recall approximate search."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

from deft_aoi.config import resolve_config
from deft_aoi.errors import UsageError
from run_files import artefacts

from .test_cli_loop import FAST, deft, only_run, state


def test_defaults_keep_the_in_process_search() -> None:
    c = resolve_config({}, {})
    assert (c.mining_executor.value, c.mining_index.value, c.mining_memory.value) == ("inprocess", "auto", None)
    assert c.mining_recall_floor.value == 0.99 and c.allow_low_recall.value is False
    assert c.mining_cache_dtype.value == "float32"


@pytest.mark.parametrize(("flags", "message"), [
    ({"mining_executor": "spark"}, "mining executor"),
    ({"mining_index": "lsh"}, "mining index"),
    ({"mining_cache_dtype": "int8"}, "mining cache dtype"),
    ({"mining_memory": "plenty"}, "memory size"),
    ({"mining_recall_floor": 1.5}, "recall"),
])
def test_bad_values_are_usage_errors(flags: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_config(flags, {})


def test_resume_of_a_state_without_these_settings_gets_the_defaults() -> None:
    """A run recorded before issue 14 (its Pre-Flight rows lack these settings) resumes with their defaults;
    one recorded with them gets them back typed."""
    from deft_aoi.loop.session import config_from_state
    from deft_aoi.loop.state import RunState

    from .test_state_compat import OLD_STATE

    old = resolve_config({"backend": "fake"}, {})
    added = {"mining_executor", "mining_index", "mining_memory", "mining_cache_dtype", "mining_recall_floor",
             "allow_low_recall"}
    doc = json.loads(OLD_STATE.read_text())
    doc["config"]["parameters"] = [list(row) for row in old.table() if row[0] not in added]
    restored = config_from_state(RunState.model_validate(doc))
    assert restored.mining_executor.value == "inprocess" and restored.mining_index.value == "auto"
    new = resolve_config({"mining_memory": "64M", "allow_low_recall": True, "mining_recall_floor": 0.5}, {})
    doc["config"]["parameters"] = [list(row) for row in new.table()]
    again = config_from_state(RunState.model_validate(doc))
    assert again.mining_memory.value == "64M" and again.allow_low_recall.value is True
    assert again.mining_recall_floor.value == 0.5


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_loop_mines_with_a_memory_budget(demo_ws: Path) -> None:
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--mining-index", "exact", "--mining-memory", "64M")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load(artefacts(only_run(demo_ws), "mine.spec")["iter1"].read_text())
    assert spec["search"]["memory_bytes"] == 64 * 2**20 and spec["search"]["shard_rows"] >= 1024
    assert spec["search"]["method"] == "exact"


@pytest.mark.slow  # a whole loop run: `make test-slow`
def test_loop_refuses_a_low_recall_approximate_search(demo_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deft_aoi.mining import ann

    monkeypatch.setattr(ann, "AnnParams", functools.partial(ann.AnnParams, nprobe=1, nlist=8))
    result = deft("run", "-w", str(demo_ws), "--yes", *FAST, "--mining-index", "ivf")
    assert result.exit_code == 1
    assert "below the floor 0.99" in result.output
    st = state(only_run(demo_ws))
    assert st["iterations"]["iter1"]["stages"]["mine"]["status"] == "failed"
