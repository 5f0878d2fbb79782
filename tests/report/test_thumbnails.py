from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from deft_aoi.report.thumbnails import ThumbnailCache, thumbnail_data_uri


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_downscales_keeping_aspect(tmp_path: Path) -> None:
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (400, 200), (10, 200, 30)).save(path)
    uri = thumbnail_data_uri(path)
    assert uri is not None
    img = _decode(uri)
    assert img.size == (96, 48)


def test_small_image_not_upscaled_and_16bit_grey(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 30), 40000, dtype=np.uint16)).save(path)
    uri = thumbnail_data_uri(path)
    assert uri is not None
    img = _decode(uri)
    assert img.size == (30, 40) and img.mode == "L"


def test_missing_or_broken_gives_none(tmp_path: Path) -> None:
    assert thumbnail_data_uri(tmp_path / "absent.png") is None
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    assert thumbnail_data_uri(bad) is None


def test_cache_decodes_once(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(path)
    cache = ThumbnailCache()
    first = cache(str(path))
    path.unlink()
    assert cache(str(path)) == first is not None
    assert cache(None) is None and cache("") is None
