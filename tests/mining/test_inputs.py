from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deft_aoi.errors import InputError, UsageError
from deft_aoi.mining.engine import MineConfig, run_mining
from deft_aoi.mining.fingerprint import write_embedding_parquet
from deft_aoi.mining.inputs import Lights, load_table

from ._mining_util import CountingEmbedder, make_pairs


def test_csv_pool_with_filepaths_keeps_columns(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 3)
    rel = [str(Path(p).relative_to(tmp_path)) for p in inputs]
    pd.DataFrame({"filepath": rel, "golden_filepath": goldens, "label": ["Short ", "PASS", "pass"],
                  "extra": ["a", "b", "c"]}).to_csv(tmp_path / "pool.csv", index=False)
    table = load_table(tmp_path / "pool.csv", what="pool")
    assert table.converted_from_csv
    assert list(table.frame["filepath"]) == inputs  # relative paths resolve against the CSV's dir
    assert list(table.frame["label"]) == ["short", "PASS", "PASS"]
    assert list(table.frame["extra"]) == ["a", "b", "c"]


def test_changenet_csv_resolves_first_light(tmp_path: Path) -> None:
    pd.DataFrame({"input_path": ["images/1/test"], "golden_path": ["images/1/golden"], "label": ["open"],
                  "object_name": ["d00"]}).to_csv(tmp_path / "mining_pool.csv", index=False)
    table = load_table(tmp_path / "mining_pool.csv", lights=Lights("Top", ".png"))
    row = table.frame.iloc[0]
    assert row["filepath"] == f"{tmp_path}/images/1/test/d00_Top.png"
    assert row["golden_filepath"] == f"{tmp_path}/images/1/golden/d00_Top.png"
    assert row["boardname"] == ""  # the 14 ChangeNet columns are all present
    with pytest.raises(UsageError, match="--spec"):
        load_table(tmp_path / "mining_pool.csv")


def test_blank_filepath_names_row(tmp_path: Path) -> None:
    pd.DataFrame({"filepath": ["/a.png", " ", "/c.png"], "label": ["PASS"] * 3}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError) as info:
        load_table(tmp_path / "t.csv")
    assert info.value.row == 3 and "t.csv" in info.value.render()


def test_table_without_usable_columns(tmp_path: Path) -> None:
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="filepath"):
        load_table(tmp_path / "t.parquet")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(UsageError, match=r"\.parquet or \.csv"):
        load_table(tmp_path / "t.json")


def test_embedding_parquet_roundtrip_and_encoder_mismatch(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 4)
    emb = CountingEmbedder()
    frame = pd.DataFrame({"filepath": inputs, "golden_filepath": goldens})
    vectors = emb.embed(inputs, goldens)
    write_embedding_parquet(frame, vectors, emb.fingerprint, tmp_path / "t.parquet")
    table = load_table(tmp_path / "t.parquet")
    assert table.fingerprint == emb.fingerprint
    np.testing.assert_array_equal(table.embeddings, vectors)

    # Pool to embed with a different encoder than the targets' → hard error naming both.
    frame.to_parquet(tmp_path / "pool.parquet")
    pool = load_table(tmp_path / "pool.parquet")
    other = CountingEmbedder(name="another")
    with pytest.raises(InputError) as info:
        run_mining(table, pool, MineConfig(), embedder=other)
    text = info.value.render()
    assert "counting" in text and "another" in text

    # Same encoder: pool embedded, nothing cached without a cache root, targets reused.
    run = run_mining(table, pool, MineConfig(top_k_per_target=1, min_similarity=0.99), embedder=emb)
    assert run.embedded_targets == 0
    assert sorted(run.mined["filepath"]) == sorted(inputs)  # each target's nearest is itself (sim 1)


def test_unknown_fingerprints_are_flagged(tmp_path: Path) -> None:
    frame = pd.DataFrame({"filepath": ["/a", "/b"], "embedding": [[1.0, 0.0], [0.0, 1.0]]})
    frame.to_parquet(tmp_path / "t.parquet")
    t = load_table(tmp_path / "t.parquet")
    assert t.fingerprint is not None and t.fingerprint.is_unknown
    run = run_mining(t, load_table(tmp_path / "t.parquet"), MineConfig(min_similarity=0.5))
    assert any("cannot be verified" in w for w in run.warnings)
    assert len(run.mined) == 2
