"""Mining_Report.md adds up (issue 27 point 7): every count is explained by the lines above it, expected facts
are info (not warnings), and a zero-row run names its real cause."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ._mining_util import check_report_adds_up
from .test_cli import _mine, small  # noqa: F401  (fixture)


def test_topk_times_targets_beyond_the_pool_is_info_not_a_warning(small: dict[str, Path]) -> None:  # noqa: F811
    result = _mine(small, "--min-similarity", "0.5")  # 24 targets × top-5 = 120 > 90 pool rows
    assert result.exit_code == 0, result.output
    out = Path(json.loads(result.stdout)["out_dir"])
    text = (out / "Mining_Report.md").read_text()
    assert "info: topn × targets = 5 × 24 = 120 exceeds the 90 pool row(s)" in text
    assert "**WARN**" not in text and "Resolve:" not in text
    assert "info: topn × targets" in (out / "mining_summary.txt").read_text()
    check_report_adds_up(text)


def test_targets_without_golden_name_the_pair_encoder_not_the_cutoff(small: dict[str, Path],  # noqa: F811
                                                                    tmp_path: Path) -> None:
    lone = tmp_path / "lone_targets.parquet"
    pd.read_parquet(small["targets"])[["filepath", "label"]].to_parquet(lone)
    result = _mine(small, targets=lone)
    assert result.exit_code == 0, result.output
    text = (Path(json.loads(result.stdout)["out_dir"]) / "Mining_Report.md").read_text()
    assert "24 without a golden image" in text
    actions = text.split("## Recommended Actions", 1)[1]
    assert "no golden image" in actions and "golden_filepath" in actions
    assert "lower --min-similarity" not in actions
    check_report_adds_up(text)
