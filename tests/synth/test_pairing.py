from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.errors import InputError
from deft_aoi.synth.pairing import pair_stems


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_pairs_by_stem_across_extensions(tmp_path: Path) -> None:
    _touch(tmp_path / "ng", "b.png", "a.jpg", "c.JPEG", "notes.txt")
    _touch(tmp_path / "ok", "a.png", "b.jpg", "c.png")
    pairing = pair_stems(tmp_path / "ng", tmp_path / "ok")
    assert [p[0] for p in pairing.pairs] == ["a", "b", "c"]
    assert pairing.pairs[0][1].name == "a.jpg" and pairing.pairs[0][2].name == "a.png"
    assert pairing.ok and not pairing.unpaired_ng and not pairing.unpaired_ok


def test_reports_unpaired_stems(tmp_path: Path) -> None:
    _touch(tmp_path / "ng", "a.png", "only_ng.png")
    _touch(tmp_path / "ok", "a.png", "only_ok.jpg")
    pairing = pair_stems(tmp_path / "ng", tmp_path / "ok")
    assert pairing.unpaired_ng == ["only_ng"] and pairing.unpaired_ok == ["only_ok"]
    assert not pairing.ok
    assert "only_ng" in pairing.describe_unpaired() and "only_ok" in pairing.describe_unpaired()


def test_missing_dir_is_input_error(tmp_path: Path) -> None:
    _touch(tmp_path / "ng", "a.png")
    with pytest.raises(InputError, match="not found"):
        pair_stems(tmp_path / "ng", tmp_path / "ok")


def test_ambiguous_stem_is_input_error(tmp_path: Path) -> None:
    _touch(tmp_path / "ng", "a.png", "a.jpg")
    _touch(tmp_path / "ok", "a.png")
    with pytest.raises(InputError, match="share the stem 'a'"):
        pair_stems(tmp_path / "ng", tmp_path / "ok")
