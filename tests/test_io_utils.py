"""io_utils: a killed atomic write leaves only a temp file, which resume removes (outside scratch dirs)."""

from __future__ import annotations

from pathlib import Path

from deft_aoi.io_utils import atomic_open, remove_torn_writes


def test_torn_writes_are_removed_except_under_the_kept_dir(tmp_path: Path) -> None:
    (tmp_path / "iter1").mkdir()
    (tmp_path / ".scratch" / "iter2").mkdir(parents=True)
    torn = [tmp_path / ".deft_state.json.ab12cd.tmp", tmp_path / "iter1" / ".kpi_gaps.parquet.x9.tmp"]
    live = tmp_path / ".scratch" / "iter2" / ".inference.csv.q1.tmp"  # a re-attached job may be writing it
    for path in [*torn, live]:
        path.write_text("partial")
    with atomic_open(tmp_path / "keep.txt") as fh:  # finished writes and plain dot files stay
        fh.write("whole")
    (tmp_path / ".env.tmpl").write_text("x")
    assert remove_torn_writes(tmp_path, keep=tmp_path / ".scratch") == 2
    assert not any(p.exists() for p in torn) and live.exists()
    assert (tmp_path / "keep.txt").read_text() == "whole" and (tmp_path / ".env.tmpl").exists()
