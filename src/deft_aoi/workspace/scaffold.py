"""`deft init`: lay out an empty customer workspace (CONTRACTS §1) without ever overwriting anything.

Creates the template spec, `.env.example`, the four CSVs with only the 14-column header, and the empty
image / synthetic-pool directories. Whatever already exists is left alone and reported as kept.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from deft_aoi.errors import InputError
from deft_aoi.io_utils import fsync_dir
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS
from deft_aoi.workspace.layout import WorkspaceLayout

SPEC_TEMPLATE = "baseline_spec.yaml"
ENV_TEMPLATE = "env.example"
CSV_HEADER = ",".join(CHANGENET_COLUMNS) + "\n"
# How to get the backbone the template spec names (TAO downloads nothing; a null path trains from random weights).
BACKBONE_HINT = ("docker backend: stage the backbone weights before the first run: `deft fetch-backbone` "
                 "downloads Hugging Face nvidia/C-RADIOv2-B model.safetensors (HF_TOKEN from .env) to "
                 "augmentation/backbone/c_radio_v2_b.safetensors (the path model.backbone.pretrained_backbone_path "
                 "names); see docs/TAO.md")


class ScaffoldResult(BaseModel):
    root: Path
    created: list[Path]
    kept: list[Path]


def resource_text(name: str) -> str:
    """A file shipped in deft_aoi/resources (the template spec, env.example)."""
    return resources.files("deft_aoi").joinpath("resources", name).read_text(encoding="utf-8")


def scaffold_dirs(layout: WorkspaceLayout) -> tuple[Path, ...]:
    return (
        layout.spec_file.parent,
        layout.train_csv.parent,
        layout.kpi_images,
        layout.mining_pool_dir / "images",
        layout.backbone_dir,
        layout.synth_ng_dir,
        layout.synth_ok_dir,
    )


def scaffold_files(layout: WorkspaceLayout) -> dict[Path, str]:
    return {
        layout.spec_file: resource_text(SPEC_TEMPLATE),
        layout.root / ".env.example": resource_text(ENV_TEMPLATE),
        layout.train_csv: CSV_HEADER,
        layout.validation_csv: CSV_HEADER,
        layout.kpi_csv: CSV_HEADER,
        layout.mining_pool_csv: CSV_HEADER,
    }


def _ensure_dir(path: Path) -> bool:
    """True when created; InputError when a non-directory is in the way (named precisely)."""
    for parent in (*reversed(path.parents), path):
        if parent.exists() and not parent.is_dir():
            raise InputError("exists but is not a directory", file=parent,
                             hint="move it aside or choose another --workspace")
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise InputError(f"cannot create directory: {exc.strerror or exc}", file=path) from exc
    return True


def _create_exclusive(path: Path, text: str) -> bool:
    """Write a new file atomically; False (and nothing written) if anything already exists at `path`.

    The content goes to a temp file that is hard-linked into place: a link never replaces an existing
    entry, so even a file created concurrently is never overwritten, and readers never see a torn file.
    """
    if path.is_dir():
        raise InputError("expected a file, found a directory", file=path)
    if path.exists() or path.is_symlink():
        return False
    data = text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a workspace file gets the user's ordinary modes.
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # Filesystems without hard links: exclusive create is still never-overwrite.
            try:
                with open(path, "xb") as fh:
                    fh.write(data)
            except FileExistsError:
                return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def init_workspace(root: Path) -> ScaffoldResult:
    """Scaffold the workspace at `root`; existing files and directories are kept untouched."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError("workspace path is a file, not a directory", file=root,
                         hint="pass a directory (it is created when missing)")
    layout = WorkspaceLayout.at(root)
    created: list[Path] = []
    kept: list[Path] = []
    if _ensure_dir(layout.root):
        created.append(layout.root)
    for directory in scaffold_dirs(layout):
        (created if _ensure_dir(directory) else kept).append(directory)
    for path, text in scaffold_files(layout).items():
        _ensure_dir(path.parent)
        (created if _create_exclusive(path, text) else kept).append(path)
    return ScaffoldResult(root=layout.root, created=created, kept=kept)
