from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deft_aoi.errors import InputError
from deft_aoi.mining.embedders.builtin import BuiltinEmbedder, BuiltinParams, align_golden

from ._mining_util import save, trace_image


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_shifted_identical_pair_is_far_from_real_defect() -> None:
    emb = BuiltinEmbedder()
    bright, dark = 235 / 255, 20 / 255
    golden = np.full((64, 64), bright, dtype=np.float32)
    golden[10:15, :] = dark
    golden[:, 40:45] = dark
    golden[30:34, 5:30] = dark
    shifted = np.roll(golden, (2, -1), axis=(0, 1))  # same board, mis-registered by (2, -1) px
    defect = golden.copy()
    defect[20:26, 14:20] = dark  # a copper blob on bare board
    defect2 = golden.copy()
    defect2[48:53, 20:26] = dark  # the same kind of defect elsewhere
    x = np.stack([golden, shifted, defect, defect2])
    e = emb.embed_arrays(x, np.stack([golden] * 4))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    identical, shift, d1, d2 = e
    # The shifted pair reads "nothing changed": close to the identical pair, far from the defects.
    assert _cos(shift, identical) > 0.8
    assert _cos(shift, d1) < 0.3
    assert _cos(shift, d2) < 0.3
    # Two blobs in different places are the same kind of change.
    assert _cos(d1, d2) > 0.9


def test_alignment_recovers_integer_shift() -> None:
    golden = trace_image(3).astype(np.float32) / 255
    x = np.roll(golden, (2, -3), axis=(0, 1))[None]
    _, _, shifts, ratio = align_golden(x, golden[None], 3)
    assert shifts[0].tolist() == [-2.0, 3.0]
    assert ratio[0] < 0.1


def test_fingerprint_is_stable_and_tracks_params() -> None:
    a, b = BuiltinEmbedder(), BuiltinEmbedder()
    assert a.fingerprint == b.fingerprint
    c = BuiltinEmbedder(BuiltinParams(max_shift=2))
    assert c.fingerprint != a.fingerprint
    assert a.fingerprint.dim == a.embed_arrays(np.zeros((1, 64, 64)), np.zeros((1, 64, 64))).shape[1]


def test_embed_files_matches_arrays(tmp_path: Path) -> None:
    golden = trace_image(11)
    test = golden.copy()
    test[10:15, 10:15] = 20
    gp, tp = save(golden, tmp_path / "g.png"), save(test, tmp_path / "t.png")
    emb = BuiltinEmbedder()
    from_files = emb.embed([tp, tp], [gp, None])
    from_arrays = emb.embed_arrays(np.stack([test, test]) / 255.0, np.stack([golden, test]) / 255.0)
    np.testing.assert_allclose(from_files, from_arrays, atol=1e-5)


def test_missing_image_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.jpg"):
        BuiltinEmbedder().embed([str(tmp_path / "missing.jpg")], [None])


def test_real_pairs_defects_cluster_by_type(deeppcb_dev: Path) -> None:
    """On real DeepPCB crops the nearest neighbours of a defect mostly share its defect type."""
    from deft_aoi.workspace.changenet_csv import read_changenet_csv

    pool_dir = deeppcb_dev / "augmentation" / "mining_pool"
    df = read_changenet_csv(pool_dir / "mining_pool.csv")
    df = df[df["label"] != "PASS"].head(240).reset_index(drop=True)
    paths = [str(pool_dir / p / f"{o}_SolderLight.jpg") for p, o in zip(df.input_path, df.object_name, strict=True)]
    golds = [str(pool_dir / p / f"{o}_SolderLight.jpg") for p, o in zip(df.golden_path, df.object_name, strict=True)]
    e = BuiltinEmbedder().embed(paths, golds)
    s = e @ e.T
    np.fill_diagonal(s, -2)
    nn = np.argsort(-s, axis=1)[:, :5]
    labels = df["label"].to_numpy()
    precision = float((labels[nn] == labels[:, None]).mean())
    chance = float(sum((labels == lab).mean() ** 2 for lab in set(labels)))
    assert precision > 2 * chance


def test_calibration_matches_feature_layout() -> None:
    """The frozen centre/scale constants must cover exactly the raw feature vector, with no zero scale."""
    from deft_aoi.mining.embedders.builtin import VERSION, feature_dim
    from deft_aoi.mining.embedders.builtin_calibration import FEATURE_MEAN, FEATURE_STD

    p = BuiltinParams()
    assert len(FEATURE_MEAN) == len(FEATURE_STD) == feature_dim(p)
    assert VERSION == "2"
    assert BuiltinEmbedder().fingerprint.preprocessing.endswith(p.calibration)


def test_similarity_cutoff_is_selective_on_real_pairs(deeppcb_dev: Path) -> None:
    """v1's raw features put ≈ 96 % of real top-5 neighbours above cosine 0.9, so the contract's cut-off
    filtered nothing; the standardised space must leave a clear share of them below it."""
    from deft_aoi.workspace.changenet_csv import read_changenet_csv

    pool_dir = deeppcb_dev / "augmentation" / "mining_pool"
    df = read_changenet_csv(pool_dir / "mining_pool.csv").iloc[::4].head(400).reset_index(drop=True)
    paths = [str(pool_dir / p / f"{o}_SolderLight.jpg") for p, o in zip(df.input_path, df.object_name, strict=True)]
    golds = [str(pool_dir / p / f"{o}_SolderLight.jpg") for p, o in zip(df.golden_path, df.object_name, strict=True)]
    e = BuiltinEmbedder().embed(paths, golds)
    s = e @ e.T
    np.fill_diagonal(s, -2)
    top5 = -np.sort(-s, axis=1)[:, :5]
    share = float((top5 >= 0.9).mean())
    assert 0.05 < share < 0.8


def _reference_box3(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = p[:, :-2, :] + p[:, 1:-1, :] + p[:, 2:, :]
    blurred: np.ndarray = (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9.0
    return blurred


def _reference_morph(a: np.ndarray, radius: int, op: str) -> np.ndarray:
    fn = np.maximum if op == "max" else np.minimum
    p = np.pad(a, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    h, w = a.shape[1], a.shape[2]
    rows = p[:, 0:h, :]
    for k in range(1, 2 * radius + 1):
        rows = fn(rows, p[:, k : k + h, :])
    out = rows[:, :, 0:w]
    for k in range(1, 2 * radius + 1):
        out = fn(out, rows[:, :, k : k + w])
    return out


def test_embeddings_equal_the_slice_based_reference_on_real_pairs(deeppcb_dev: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The flat-array box blur and morphology (speed, issue 29) give the vectors of the 2-D slice code they
    replaced, kept here as the reference, on real crops."""
    import glob

    from deft_aoi.mining.embedders import builtin

    tests = sorted(glob.glob(str(deeppcb_dev / "kpi" / "images" / "*" / "test" / "*.jpg")))[:200]
    assert tests
    emb = BuiltinEmbedder(workers=1)
    now = emb.embed(tests, [t.replace("/test/", "/golden/") for t in tests])
    monkeypatch.setattr(builtin, "_box3", _reference_box3)
    monkeypatch.setattr(builtin, "_morph", _reference_morph)
    before = emb.embed(tests, [t.replace("/test/", "/golden/") for t in tests])
    assert np.abs(before @ before.T - np.eye(len(tests))).max() > 0.5  # distinct vectors, not a constant
    np.testing.assert_allclose(now, before, rtol=0, atol=1e-6)
    assert (now == before).mean() > 0.999  # in fact bit for bit: the same float operations in the same order
