from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deft_aoi.errors import InputError
from deft_aoi.mining.cache import EmbeddingCache, embed_with_cache, pair_keys

from ._mining_util import CountingEmbedder, make_pairs


def test_rerun_embeds_nothing_and_matches(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 10)
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path / "cache", emb.fingerprint, shard_size=4)
    first, stats = embed_with_cache(inputs, goldens, emb, cache)
    assert stats.embedded == 10 and emb.embedded == 10
    assert len(cache.shards()) == 3
    second, stats2 = embed_with_cache(inputs, goldens, emb, cache)
    assert stats2.embedded == 0 and stats2.cached == 10
    assert emb.embedded == 10
    np.testing.assert_array_equal(first, second)


def test_append_embeds_only_new_rows(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 8)
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path / "cache", emb.fingerprint, shard_size=100)
    embed_with_cache(inputs, goldens, emb, cache)
    more_in, more_gd = make_pairs(tmp_path / "img", 3, start=8)
    out, stats = embed_with_cache(inputs + more_in, goldens + more_gd, emb, cache)
    assert stats.embedded == 3 and emb.embedded == 11
    np.testing.assert_array_equal(out[8:], CountingEmbedder().embed(more_in, more_gd))


def test_resume_after_interrupted_shard(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 10)
    crashing = CountingEmbedder(fail_after_calls=2)
    cache = EmbeddingCache(tmp_path / "cache", crashing.fingerprint, shard_size=3)
    with pytest.raises(KeyboardInterrupt):
        embed_with_cache(inputs, goldens, crashing, cache)
    assert len(cache.shards()) == 2  # the two finished shards survive, nothing half-written
    assert not [p for p in cache.dir.iterdir() if p.name.endswith(".tmp")]
    resumed = CountingEmbedder()
    out, stats = embed_with_cache(inputs, goldens, resumed, cache)
    assert stats.cached == 6 and stats.embedded == 4 and resumed.embedded == 4
    np.testing.assert_array_equal(out, CountingEmbedder().embed(inputs, goldens))


def test_duplicate_contents_embedded_once(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 3)
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path / "cache", emb.fingerprint)
    out, stats = embed_with_cache(inputs + inputs[:2], goldens + goldens[:2], emb, cache)
    assert stats.unique == 3 and emb.embedded == 3
    np.testing.assert_array_equal(out[3:], out[:2])


def test_key_depends_on_content_not_path(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "a", 2)
    copy_in = tmp_path / "b" / "x.png"
    copy_in.parent.mkdir()
    copy_in.write_bytes(Path(inputs[0]).read_bytes())
    k = pair_keys([inputs[0], str(copy_in), inputs[1]], [goldens[0], goldens[0], goldens[1]])
    assert k[0] == k[1] != k[2]


def test_other_fingerprint_uses_other_dir(tmp_path: Path) -> None:
    inputs, goldens = make_pairs(tmp_path / "img", 2)
    a, b = CountingEmbedder(name="a"), CountingEmbedder(name="b")
    embed_with_cache(inputs, goldens, a, EmbeddingCache(tmp_path / "cache", a.fingerprint))
    _, stats = embed_with_cache(inputs, goldens, b, EmbeddingCache(tmp_path / "cache", b.fingerprint))
    assert stats.embedded == 2
    with pytest.raises(InputError, match="fingerprint mismatch"):
        embed_with_cache(inputs, goldens, a, EmbeddingCache(tmp_path / "cache", b.fingerprint))


def test_missing_image_names_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.png"):
        pair_keys([str(tmp_path / "nope.png")], [None])
