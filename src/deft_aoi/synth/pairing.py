"""Match customer-supplied synthetic NG images with their OK partners by file stem.

The two folders hold the same stems 1-to-1 but the extensions may differ (`sdg_1.png` ↔ `sdg_1.jpg`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from deft_aoi.errors import InputError
from deft_aoi.io_utils import refuse_special_file

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


@dataclass
class StemPairing:
    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)  # (stem, ng_path, ok_path), by stem
    unpaired_ng: list[str] = field(default_factory=list)
    unpaired_ok: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and not self.unpaired_ng and not self.unpaired_ok

    def describe_unpaired(self, limit: int = 20) -> str:
        parts = []
        for side, stems in (("NG without OK", self.unpaired_ng), ("OK without NG", self.unpaired_ok)):
            if stems:
                shown = ", ".join(stems[:limit])
                more = f" (+{len(stems) - limit} more)" if len(stems) > limit else ""
                parts.append(f"{side}: {shown}{more}")
        return "; ".join(parts)


def list_images(folder: Path) -> dict[str, Path]:
    """stem -> image file. Two images with one stem (`a.png` and `a.jpg`) are ambiguous: an error."""
    if not folder.is_dir():
        raise InputError("synthetic image directory not found", file=folder)
    found: dict[str, Path] = {}
    root = os.path.realpath(folder)
    for path in folder.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            refuse_special_file(path)  # a pipe named like an image is refused by name, not called unpaired
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:  # as check_paths_inside refuses it for the CSV sets
            raise InputError(f"'{path.name}' resolves outside the images root {root} ({real})", file=path,
                             hint="keep images inside the workspace; a symlink may not lead out of it")
        if path.stem in found:
            raise InputError(
                f"two images share the stem '{path.stem}': {found[path.stem].name} and {path.name}",
                file=folder,
                hint="keep one image per stem so NG/OK pairs are unambiguous",
            )
        found[path.stem] = path
    return found


def pair_stems(ng_dir: Path, ok_dir: Path) -> StemPairing:
    """Pair `*.jpg|*.jpeg|*.png` files of the two folders by stem; raises InputError for a missing folder."""
    ng = list_images(Path(ng_dir))
    ok = list_images(Path(ok_dir))
    common = sorted(ng.keys() & ok.keys())
    return StemPairing(
        pairs=[(stem, ng[stem], ok[stem]) for stem in common],
        unpaired_ng=sorted(ng.keys() - ok.keys()),
        unpaired_ok=sorted(ok.keys() - ng.keys()),
    )
