"""Issue 29: pre-flight streams the mining pool in chunks, through a manifest and per-chunk caches."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.pixels import PixelPairEmbedder
from deft_aoi.preflight import manifest as manifest_mod
from deft_aoi.preflight import pool_stream
from deft_aoi.preflight.checks import run_preflight
from deft_aoi.preflight.hygiene import check_hygiene
from deft_aoi.preflight.manifest import ImageManifest
from deft_aoi.runners.tao.changenet_spec import load_spec
from deft_aoi.workspace.changenet_csv import iter_changenet_csv, read_changenet_csv
from deft_aoi.workspace.layout import WorkspaceLayout

from .leaky_pool import PER_KIND, add_leaks

THRESHOLD = 0.998


def _fresh(ws: Path) -> Path:
    """The copy without caches or results another process may have left in the shared workspace."""
    for d in (".deft_cache", "results"):
        shutil.rmtree(ws / d, ignore_errors=True)
    return ws


def _small(layout: WorkspaceLayout) -> dict[str, pd.DataFrame]:
    return {"training": read_changenet_csv(layout.train_csv), "validation": read_changenet_csv(layout.validation_csv),
            "kpi": read_changenet_csv(layout.kpi_csv)}


def _hygiene(layout: WorkspaceLayout, chunk_rows: int, **kw: object):  # type: ignore[no-untyped-def]
    return check_hygiene(layout, load_spec(layout.spec_file), _small(layout), threshold=THRESHOLD,
                         pool_chunks=lambda: iter_changenet_csv(layout.mining_pool_csv, chunk_rows), **kw)


@pytest.fixture()
def leaky(deeppcb_copy: Path) -> WorkspaceLayout:
    ws = _fresh(deeppcb_copy)
    add_leaks(ws)
    return WorkspaceLayout.at(ws)


def test_small_chunks_find_exactly_what_the_whole_pool_finds(leaky: WorkspaceLayout) -> None:
    layout = leaky
    spec = load_spec(layout.spec_file)
    whole = check_hygiene(layout, spec, {**_small(layout), "mining_pool": read_changenet_csv(layout.mining_pool_csv)},
                          threshold=THRESHOLD)
    assert whole.counts()["mining_pool"] == {"key": PER_KIND, "content": PER_KIND, "near_duplicate": PER_KIND}
    # 7 rows per chunk: the 30 planted rows at the end straddle five chunk boundaries.
    streamed = _hygiene(layout, 7)
    pd.testing.assert_frame_equal(streamed.findings, whole.findings)
    assert streamed.n_rows == whole.n_rows and streamed.same_board == whole.same_board
    assert streamed.index["kind"] == "exact" and streamed.index["recall"] is None


def test_ivf_candidates_report_their_measured_recall_and_find_the_same_leaks(leaky: WorkspaceLayout) -> None:
    exact = _hygiene(leaky, 500)
    ivf = _hygiene(leaky, 500, ivf_min_rows=1)
    assert ivf.index["kind"] == "ivf" and ivf.index["queries"] == 256
    assert 0.5 < ivf.index["recall"] <= 1.0
    pd.testing.assert_frame_equal(ivf.findings, exact.findings)


def test_warm_rerun_reads_no_image(leaky: WorkspaceLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    decoded: list[int] = []
    digest_file, read_image = manifest_mod.digest_file, manifest_mod.read_image
    embed = PixelPairEmbedder.embed

    def counting_digest(path: str) -> str | None:
        reads.append(path)
        return digest_file(path)

    def counting_read(path: str, size: int) -> tuple[str | None, np.ndarray | None]:
        reads.append(path)
        return read_image(path, size)

    def counting_embed(self: PixelPairEmbedder, inputs: list[str], goldens: list[str | None]) -> np.ndarray:
        decoded.append(len(inputs))
        return embed(self, inputs, goldens)

    monkeypatch.setattr(manifest_mod, "digest_file", counting_digest)
    monkeypatch.setattr(manifest_mod, "read_image", counting_read)
    monkeypatch.setattr(PixelPairEmbedder, "embed", counting_embed)
    cold = _hygiene(leaky, 300)
    # Each image is read once: pool images are hashed and decoded from that one read (no embed call for them).
    assert cold.hashed == len(reads) == len(set(reads)) > 0 and sum(decoded) > 0
    reads.clear()
    decoded.clear()
    warm = _hygiene(leaky, 300)
    assert reads == [] and decoded == [] and warm.hashed == 0 and warm.embedded == 0
    pd.testing.assert_frame_equal(warm.findings, cold.findings)
    # One pool image rewritten in place (new mtime): that file alone is read again, its chunk re-embedded.
    image = next((leaky.mining_pool_dir / "images").rglob("*.jpg"))
    image.write_bytes(image.read_bytes())
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = _hygiene(leaky, 300)
    assert reads == [str(image)] and again.hashed == 1
    pd.testing.assert_frame_equal(again.findings, cold.findings)


def test_manifest_keeps_digests_ending_in_zero_bytes_and_rehashes_a_replaced_file(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    files = [tmp_path / f"f{i}" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 10)
    monkeypatch.setattr(manifest_mod, "hash_batch", lambda paths: ["ab" * 31 + "00" for _ in paths])
    first = ImageManifest(tmp_path / "m.npz")
    digests, fresh = first.digests([str(f) for f in files])
    first.save()
    assert fresh == 3 and set(digests.values()) == {"ab" * 31 + "00"}
    again, fresh = ImageManifest(tmp_path / "m.npz").digests([str(f) for f in files])
    assert fresh == 0 and again == digests
    # Same size and mtime, another inode (a file replaced by a copy): not trusted.
    st = files[0].stat()
    files[0].unlink()
    files[0].write_bytes(bytes([0]) * 10)
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    if files[0].stat().st_ino != st.st_ino:
        _, fresh = ImageManifest(tmp_path / "m.npz").digests([str(f) for f in files])
        assert fresh == 1


def test_chunks_concatenate_to_the_whole_read_with_file_row_positions(deeppcb_dev: Path) -> None:
    csv = WorkspaceLayout.at(deeppcb_dev).mining_pool_csv
    chunks = list(iter_changenet_csv(csv, 250))
    assert len(chunks) > 2 and chunks[1].index[0] == 250
    pd.testing.assert_frame_equal(pd.concat(chunks), read_changenet_csv(csv))


@pytest.fixture()
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_stream, "chunk_rows_for_budget", lambda memory_bytes: 5)


def _pool_detail(ws: Path) -> str:
    report = run_preflight(ws)
    check = next(c for c in report.checks if c.name == "mining pool")
    assert check.failed
    return check.detail


@pytest.mark.usefixtures("tiny_chunks")
@pytest.mark.parametrize("fault", ["blank_label", "missing_image", "outside"])
def test_a_fault_deep_in_a_streamed_pool_names_file_row_and_field(deeppcb_copy: Path, fault: str) -> None:
    ws = _fresh(deeppcb_copy)
    csv = WorkspaceLayout.at(ws).mining_pool_csv
    pool = pd.read_csv(csv, dtype=str, keep_default_na=False)
    pos = 1000  # far past the first chunk of 5 rows: spreadsheet row 1002
    if fault == "blank_label":
        pool.loc[pos, "label"] = " "
    elif fault == "missing_image":
        pool.loc[pos, "object_name"] = "no_such_part"
    else:
        pool.loc[pos, "input_path"] = "../../../etc"
    csv.chmod(0o644)
    pool.to_csv(csv, index=False)
    detail = _pool_detail(ws)
    assert "mining_pool.csv" in detail and "1002" in detail
    expected = {"blank_label": "blank 'label'", "missing_image": "no_such_part", "outside": "'input_path'"}[fault]
    assert expected in detail


def test_memory_budget_sets_the_chunk_size() -> None:
    assert pool_stream.chunk_rows_for_budget(2**30) == 2**30 // pool_stream.BYTES_PER_ROW
    assert pool_stream.chunk_rows_for_budget(1) == pool_stream.MIN_CHUNK_ROWS
    assert pool_stream.MIN_CHUNK_ROWS <= pool_stream.chunk_rows_for_budget(None) <= pool_stream.MAX_CHUNK_ROWS


def test_unreadable_pool_image_is_named(leaky: WorkspaceLayout) -> None:
    image = next((leaky.mining_pool_dir / "images").rglob("*.jpg"))
    image.unlink()
    with pytest.raises(InputError, match="image unreadable"):
        _hygiene(leaky, 100)


@pytest.mark.slow  # starts a local Ray: `make test-slow`
def test_ray_executor_finds_what_threads_find(leaky: WorkspaceLayout) -> None:
    threads = _hygiene(leaky, 400)
    shutil.rmtree(leaky.root / ".deft_cache")
    on_ray = _hygiene(leaky, 400, executor="ray")
    assert on_ray.hashed == threads.hashed and on_ray.embedded == threads.embedded
    pd.testing.assert_frame_equal(on_ray.findings, threads.findings)


def test_manifest_stats_each_distinct_file_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [str(tmp_path / f"f{i}") for i in range(4)]
    for i, f in enumerate(files):
        Path(f).write_bytes(bytes([i]) * 10)
    stat_all = manifest_mod._stat_all
    stated: list[str] = []

    def counting(paths: list[str]) -> np.ndarray:
        stated.extend(paths)
        return stat_all(paths)

    monkeypatch.setattr(manifest_mod, "_stat_all", counting)
    manifest = ImageManifest(None)
    first, fresh = manifest.digests(files[:3])
    assert fresh == 3 and sorted(stated) == sorted(files[:3])
    stated.clear()
    # A later chunk repeating two of them and one new file: only the new one is stat'ed (and read).
    again, fresh = manifest.digests([files[1], files[2], files[3]])
    assert stated == [files[3]] and fresh == 1
    assert again[files[1]] == first[files[1]] and again[files[3]] is not None
    # A new run (a new manifest loaded from the same state) stats again.
    stated.clear()
    manifest.save()
    assert ImageManifest(None).digests(files[:1])[1] == 1 and stated == files[:1]
