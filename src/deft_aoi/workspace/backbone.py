"""`deft fetch-backbone`: stage the Visual ChangeNet backbone weights where the workspace spec names them.

NVIDIA's DEFT recipe takes C-RADIOv2-B (`model.safetensors` of Hugging Face `nvidia/C-RADIOv2-B`) with `HF_TOKEN`
and stages it under the workspace (tao-skill-bank `scripts/stage_backbone.py`); TAO itself downloads nothing
(docs/TAO.md). Here `huggingface_hub` downloads it:
- the token comes from the environment or the workspace's `.env` (`secrets.credential`), is handed to
  huggingface_hub only and never printed (error texts go through `secrets.redact`);
- resumable: huggingface_hub's `http_get` writes `<dest>.part` (beside it `<dest>.part.etag`, the Hub version
  it belongs to) and continues it with a Range request, on a dropped link inside one call as on the next
  `deft fetch-backbone` after an interruption (huggingface_hub's own hf_hub_download deletes a partial file
  since 1.x, so the part file is ours);
- checked: the file's sha256 must equal the Hub's (the `X-Linked-Etag` of an LFS file; a git-stored file's
  etag is its git blob sha1, checked as such). A mismatch deletes the file: a wrong backbone never stays staged;
- `HF_ENDPOINT` selects another Hub (a mirror, or a test server), as huggingface_hub itself reads it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deft_aoi.config import BACKBONE_FILENAME, BACKBONE_REPO_ID
from deft_aoi.dotted import get_dotted
from deft_aoi.errors import InputError, UsageError
from deft_aoi.io_utils import fsync_dir, sha256_file
from deft_aoi.secrets import credential, redact
from deft_aoi.workspace.layout import WorkspaceLayout
from deft_aoi.workspace.spec_file import load_yaml_mapping

BACKBONE_KEY = "model.backbone.pretrained_backbone_path"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False: the file was already staged with the Hub's checksum
    source: str  # repo_id/filename@revision


def destination(workspace: WorkspaceLayout, dest: Path | None = None) -> Path:
    """Where the backbone goes: `dest`, else the path the workspace spec names (relative = under the workspace,
    where deft's container sees it)."""
    if dest is not None:
        return Path(dest).expanduser().absolute()
    spec = load_yaml_mapping(workspace.spec_file)
    named: Any = get_dotted(spec, BACKBONE_KEY)
    if not isinstance(named, str) or not named.strip():
        raise UsageError(
            f"{workspace.spec_file} sets no {BACKBONE_KEY} (TAO would train from random weights)",
            hint="set it, e.g. augmentation/backbone/c_radio_v2_b.safetensors (the template's), or pass --dest",
        )
    path = Path(named)
    return path if path.is_absolute() else workspace.root / path


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file (the etag the Hub gives a file stored in git rather than LFS)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def matches(path: Path, etag: str) -> bool:
    """Does `path` hold the file the Hub's etag names (sha256 for LFS, git blob sha1 otherwise)?"""
    etag = etag.strip('"').lower()
    if len(etag) == 64:
        return sha256_file(path) == etag
    if len(etag) == 40:
        return git_blob_sha1(path) == etag
    raise InputError(f"the Hub gave no checksum for this file (etag {etag!r}): cannot verify the download")


def fetch_backbone(
    workspace: WorkspaceLayout,
    *,
    dest: Path | None = None,
    repo_id: str = BACKBONE_REPO_ID,
    filename: str = BACKBONE_FILENAME,
    revision: str | None = None,
    force: bool = False,
) -> Fetched:
    """Download `repo_id`/`filename` into `destination(workspace, dest)`, verify it, and return where it is."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
    except ImportError as exc:  # a dependency; only a broken install lacks it
        raise UsageError("huggingface_hub is not installed", hint="pip install 'huggingface_hub>=0.23'") from exc

    target = destination(workspace, dest)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    token = credential("HF_TOKEN", workspace.env_file)
    source = f"{repo_id}/{filename}@{revision or 'main'}"
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint),
                                    token=token, endpoint=endpoint)
    except Exception as exc:  # HTTP and network errors: their classes differ per huggingface_hub release
        raise InputError(f"cannot reach {source} on the Hub: {redact(str(exc)).splitlines()[0]}",
                         hint="check HF_TOKEN in .env (gated models need one) and the network, or stage the "
                              f"file by hand at {target}") from exc
    etag = meta.etag or ""
    if target.is_file() and not force and matches(target, etag):
        return Fetched(target, sha256_file(target), target.stat().st_size, downloaded=False, source=source)

    part, marker = partial_paths(target)
    # A partial file continues only for the same file version on the Hub (its etag); anything else starts over.
    if force or not (part.is_file() and marker.is_file() and marker.read_text().strip() == etag):
        part.unlink(missing_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(etag + "\n")
    try:
        with open(part, "r+b" if part.exists() else "wb") as fh:
            fh.seek(0, os.SEEK_END)
            # The Hub's bearer header, as huggingface_hub builds it (its builder's import path differs per release).
            headers = {"authorization": f"Bearer {token}"} if token else {}
            http_get(meta.location, fh, resume_size=fh.tell(), headers=headers, expected_size=meta.size)
    except Exception as exc:  # as above; Ctrl-C (a BaseException) passes through and keeps the partial file too
        raise InputError(f"download of {source} failed: {redact(str(exc)).splitlines()[0]}",
                         hint="run `deft fetch-backbone` again: it resumes where this one stopped") from exc
    if not matches(part, etag):
        part.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        raise InputError(f"{source}: the downloaded file does not match the Hub's checksum {etag}; deleted it",
                         hint="run `deft fetch-backbone` again; a mirror (HF_ENDPOINT) may serve a stale file")
    os.replace(part, target)
    marker.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return Fetched(target, sha256_file(target), target.stat().st_size, downloaded=True, source=source)


def partial_paths(target: Path) -> tuple[Path, Path]:
    """The partial download beside the destination (same filesystem: the final move is a rename) and the Hub
    etag it belongs to."""
    return target.with_name(target.name + ".part"), target.with_name(target.name + ".part.etag")
