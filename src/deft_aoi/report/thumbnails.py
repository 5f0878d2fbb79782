"""Small PNG thumbnails as data URIs, so the report carries its images inside the HTML."""

from __future__ import annotations

import base64
import io
from pathlib import Path

MAX_PX = 96


class ThumbnailCache:
    """Decodes each image once per report: the same golden often backs several weak samples."""

    def __init__(self, max_px: int = MAX_PX) -> None:
        self.max_px = max_px
        self._seen: dict[Path, str | None] = {}

    def __call__(self, path: str | Path | None) -> str | None:
        if path is None or str(path).strip() == "":
            return None
        key = Path(path)
        if key not in self._seen:
            self._seen[key] = thumbnail_data_uri(key, self.max_px)
        return self._seen[key]


def _display_mode(mode: str) -> str:
    """Keep transparency and greyscale (smaller PNGs); 16-bit and float greys become 8-bit."""
    if mode in ("RGBA", "LA", "P", "PA"):
        return "RGBA"
    return "L" if mode in ("1", "L", "I", "I;16", "F") else "RGB"


def thumbnail_data_uri(path: Path, max_px: int = MAX_PX) -> str | None:
    """`data:image/png;base64,...` of the image scaled to fit max_px × max_px; None when the file is
    missing or not an image (the report then shows "—" instead of failing)."""
    from PIL import Image, UnidentifiedImageError

    from deft_aoi.errors import InputError
    from deft_aoi.imaging import open_image, to_8bit

    try:
        with open_image(path) as img:
            img.load()
            img = to_8bit(img)
            small = img.convert(_display_mode(img.mode))
            small.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            small.save(buf, format="PNG", optimize=True)
    except (OSError, UnidentifiedImageError, ValueError, InputError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
