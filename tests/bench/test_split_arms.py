"""bench/loop_efficacy.py's --arms parsing: an arm's options may be comma-separated like the arms."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType


def test_split_arms_keeps_an_arms_options_together(load_bench: Callable[[str], ModuleType]) -> None:
    bench = load_bench("loop_efficacy")
    arms = bench.split_arms("kpi:share=12,enc=shape,random,knn:share=10,ratio=2,all")
    assert arms == ["kpi:share=12,enc=shape", "random", "knn:share=10,ratio=2", "all"]
    parsed = bench.parse_arm(arms[0])
    assert parsed.name == "kpi" and parsed.flags == {"strategy": "kpi", "pool_share_pct": 12.0, "encoder": "shape"}
    assert bench.kept_arm("kpi_share=12_enc=shape") == "kpi:share=12,enc=shape"
    # ratio=none: the class-balance guard off (a None setting would mean "not given": the default cap)
    assert bench.parse_arm("kpi:ratio=none").flags == {"strategy": "kpi", "max_pass_ratio": bench.NO_CAP}


def test_guard_option_reaches_the_loop_as_text(load_bench: Callable[[str], ModuleType]) -> None:
    bench = load_bench("loop_efficacy")
    parsed = bench.parse_arm("kpi:guard=off")
    assert parsed.flags == {"strategy": "kpi", "on_worse": "off"}
    assert bench.kept_arm("kpi_guard=off") == "kpi:guard=off"
