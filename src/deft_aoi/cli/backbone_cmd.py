"""`deft fetch-backbone`: download the backbone weights the workspace spec names (workspace/backbone.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def say_fetched(workspace: Path, *, dest: Path | None = None, repo_id: str | None = None,
                filename: str | None = None, revision: str | None = None, force: bool = False) -> None:
    """Fetch and say where the file is (shared by `deft fetch-backbone` and `deft init --fetch-backbone`).
    `repo_id` / `filename` None: config's defaults (imported here: config loads pydantic, `deft --help` must not)."""
    from deft_aoi.config import BACKBONE_FILENAME, BACKBONE_REPO_ID
    from deft_aoi.console import say
    from deft_aoi.workspace.backbone import fetch_backbone
    from deft_aoi.workspace.layout import WorkspaceLayout

    got = fetch_backbone(WorkspaceLayout.at(workspace), dest=dest, repo_id=repo_id or BACKBONE_REPO_ID,
                         filename=filename or BACKBONE_FILENAME, revision=revision, force=force)
    verb = "downloaded" if got.downloaded else "already staged"
    say(f"{verb} {got.source} → {got.path} ({got.size / 2**20:.1f} MiB, sha256 {got.sha256} matches the Hub)")


def register(app: typer.Typer) -> None:
    @app.command("fetch-backbone")
    def fetch_backbone_cmd(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help="Workspace directory."),
        dest: Path | None = typer.Option(None, "--dest", help="Where to put the file (default: the path "
                                         "model.backbone.pretrained_backbone_path of specs/baseline_spec.yaml)."),
        repo_id: str | None = typer.Option(None, "--repo-id", help="Hugging Face repository (default: NVIDIA's "
                                           "C-RADIOv2-B, the backbone of the DEFT recipe)."),
        filename: str | None = typer.Option(None, "--filename", help="File in the repository (default: its "
                                            "safetensors weights)."),
        revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
        force: bool = typer.Option(False, "--force", help="Download again even when the staged file matches."),
    ) -> None:
        """Download the backbone weights (C-RADIOv2-B, as NVIDIA's DEFT recipe) with HF_TOKEN from .env into the
        place the spec names; resumes an interrupted download and checks the Hub's sha256."""
        say_fetched(workspace, dest=dest, repo_id=repo_id, filename=filename, revision=revision, force=force)
