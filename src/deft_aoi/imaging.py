"""Opening customer images: the one place that knows PIL's traps (imports PIL and numpy: command bodies only).

- A decompression bomb (a small PNG declaring 20000×20000 px) is refused from its header, before any
  pixel is decoded, as an InputError naming the file, not a PIL exception in the middle of a job.
- 16-bit grayscale (`I;16*`, or `I` holding 16-bit values) is scaled to 8 bits: PIL's `convert("L")` /
  `convert("RGB")` clips those values at 255, so nearly every pixel of a 16-bit image turns white.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError
from deft_aoi.io_utils import refuse_special_file

if TYPE_CHECKING:
    from PIL import Image

# AOI crops are a few hundred pixels a side; whole-board scans reach ~50 Mpx. Above this is a mistake or an
# attack, and decoding it would take gigabytes.
MAX_PIXELS = 64_000_000
_TOO_BIG = (f"above the {MAX_PIXELS / 1e6:.0f} Mpx limit (a decompression bomb, or not an AOI crop); "
            "it was not decoded")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """`Image.open` with the pixel-count limit checked on the header. Decode errors stay OSError."""
    from PIL import Image

    refuse_special_file(path)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:  # PIL's own refusal, far above our limit
        raise InputError(f"{_TOO_BIG}: {exc}", file=path) from exc
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InputError(f"image is {width}×{height} px ({width * height / 1e6:.0f} Mpx), {_TOO_BIG}",
                             file=path)
        yield image


def to_8bit(image: Image.Image) -> Image.Image:
    """The image with 16-bit grayscale scaled (not clipped) to 8-bit `L`; any other mode unchanged."""
    if image.mode not in _SIXTEEN_BIT_MODES and image.mode != "I":
        return image
    import numpy as np
    from PIL import Image as PILImage

    values = np.asarray(image).astype(np.uint32)
    if image.mode == "I" and values.size and int(values.max()) <= 255:
        return PILImage.fromarray(values.astype(np.uint8), mode="L")  # an 8-bit image stored wide
    return PILImage.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")
