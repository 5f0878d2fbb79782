"""Same seed → byte-identical files (whatever the worker count, even over --force); new seed → new data."""

from __future__ import annotations

from pathlib import Path

from deft_aoi.demo.generator import DemoSummary, generate_workspace
from deft_aoi.io_utils import sha256_file


def _hashes(root: Path, skip: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)).split("/")[0] not in skip
    }


def test_same_seed_identical_bytes_and_force_keeps_foreign_files(
    demo_ws: tuple[Path, DemoSummary], tmp_path: Path
) -> None:
    reference, _ = demo_ws
    out = tmp_path / "again"
    stale = out / "kpi" / "images" / "OLD_P01" / "test" / "R1_SolderLight.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    (out / "results").mkdir()
    (out / "results" / "keep.txt").write_text("a previous run")
    (out / ".env").write_text("NGC_API_KEY=dummy\n")

    generate_workspace(out, seed=7, size="small", force=True, workers=3)

    assert _hashes(out, skip={"results", ".env"}) == _hashes(reference)
    assert not stale.exists(), "--force must replace generated image trees, not merge into them"
    assert (out / "results" / "keep.txt").read_text() == "a previous run"
    assert (out / ".env").read_text() == "NGC_API_KEY=dummy\n"
    assert not list(tmp_path.glob(".again.demo-*")), "staging directory left behind"


def test_different_seed_differs(demo_ws: tuple[Path, DemoSummary], tmp_path: Path) -> None:
    reference, _ = demo_ws
    out = tmp_path / "other"
    generate_workspace(out, seed=8, size="small")
    ref, new = _hashes(reference), _hashes(out)
    for csv in ("train/base/training_set.csv", "kpi/testing_set.csv", "augmentation/mining_pool/mining_pool.csv"):
        assert ref[csv] != new[csv], csv
    synth = [k for k in ref if k.startswith("augmentation/anomalygen/original_image/")]
    assert synth and all(ref[k] != new[k] for k in synth)
    assert ref[".env.example"] == new[".env.example"]
