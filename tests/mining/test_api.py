"""The one mining call (mining/api.py) and the one parameter object (mining/params.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

import deft_aoi.mining
from deft_aoi.config import resolve_config
from deft_aoi.errors import UsageError
from deft_aoi.mining.api import MineRequest, mine
from deft_aoi.mining.inputs import MiningTable
from deft_aoi.mining.params import MineConfig


def test_from_loop_config_carries_every_mining_setting() -> None:
    config = resolve_config({"top_k_per_target": 3, "min_similarity": 0.7, "encoder": "builtin",
                             "mining_executor": "ray", "mining_index": "hnsw", "mining_memory": "2G",
                             "mining_cache_dtype": "float16", "mining_recall_floor": 0.9, "allow_low_recall": True,
                             "strategy": "diverse", "pool_share_pct": 5.0, "max_pass_ratio": 2.0}, {})
    params = MineConfig.from_loop_config(config)
    assert params == MineConfig(top_k_per_target=3, min_similarity=0.7, encoder="builtin", mining_executor="ray",
                                mining_index="hnsw", mining_memory="2G", mining_cache_dtype="float16",
                                mining_recall_floor=0.9, allow_low_recall=True, strategy="diverse",
                                pool_share_pct=5.0, max_pass_ratio=2.0)
    assert params.reselects
    # Defaults: `auto` runs kpi (builtin engine, pool in memory); a --mining-memory budget: the plain k-NN.
    assert MineConfig.from_loop_config(resolve_config({}, {})).reselects
    assert not MineConfig.from_loop_config(resolve_config({"mining_memory": "2G"}, {})).reselects


def test_class_balance_is_on_by_default_only_where_the_selection_reselects() -> None:
    from deft_aoi.config import validate_config

    def ratio(flags: dict) -> float | None:
        config = resolve_config(flags, {})
        validate_config(config)  # a default cap is never "asked for" (Data Services must still start)
        return MineConfig.from_loop_config(config).max_pass_ratio

    assert ratio({}) == 2.0 and ratio({"strategy": "diverse"}) == 2.0  # auto → kpi on the builtin engine
    assert ratio({"strategy": "knn"}) is None  # the plain k-NN stays TAO's selection
    assert ratio({"mining_memory": "2G"}) is None  # auto → knn: the on-disk pool serves knn only
    assert ratio({"mining_engine": "data_services", "backend": "docker"}) is None
    assert ratio({"strategy": "knn", "max_pass_ratio": 3.0}) == 3.0  # asked for: applies to knn too
    with pytest.raises(UsageError):
        ratio({"mining_engine": "data_services", "backend": "docker", "max_pass_ratio": 3.0})
    assert MineConfig().max_pass_ratio is None and not MineConfig().reselects  # `deft mine` outside a run


@pytest.mark.parametrize("bad", [{"strategy": "random"}, {"pool_share_pct": 0.0}, {"max_pass_ratio": -1.0}])
def test_mine_config_refuses_bad_selection_settings(bad: dict) -> None:
    with pytest.raises(ValueError):
        MineConfig(**bad)


def _request(tmp_path: Path, params: MineConfig) -> MineRequest:
    table = MiningTable(pd.DataFrame({"filepath": ["/x.png"]}), tmp_path / "t.parquet")
    return MineRequest(table, table, params, tmp_path)


def test_data_services_engine_needs_containers_and_the_plain_knn(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs containers"):
        mine(_request(tmp_path, MineConfig()), engine="data_services")
    with pytest.raises(UsageError, match="apply to --mining-engine builtin"):
        mine(_request(tmp_path, MineConfig(strategy="kpi")), engine="data_services", data_services=object())  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown mining engine"):
        mine(_request(tmp_path, MineConfig()), engine="faiss")  # type: ignore[arg-type]


ABOVE_MINING = ("deft_aoi.analysis", "deft_aoi.loop", "deft_aoi.cli", "deft_aoi.report", "deft_aoi.synth")


def test_mining_imports_nothing_from_the_layers_above() -> None:
    root = Path(deft_aoi.mining.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(ABOVE_MINING):
                upward.append(f"{path.relative_to(root)}: {node.module}")
    assert upward == []
