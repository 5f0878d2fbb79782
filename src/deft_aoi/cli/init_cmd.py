"""`deft init`: scaffold an empty workspace (template spec, .env.example, CSV headers, directories)."""

from __future__ import annotations

from pathlib import Path

import typer


def _shown(path: Path, root: Path) -> str:
    if path == root:
        return f"{root}/"
    rel = path.relative_to(root)
    return f"{rel}/" if path.is_dir() else str(rel)


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w",
                                       help="Workspace directory (created when missing)."),
        json_out: bool = typer.Option(False, "--json", help="Print created/kept paths as JSON on stdout."),
        fetch_backbone: bool = typer.Option(False, "--fetch-backbone", help="Then download the backbone the "
                                            "spec names (as `deft fetch-backbone`; HF_TOKEN from .env)."),
    ) -> None:
        """Lay out a workspace: specs/baseline_spec.yaml (template), .env.example, the four CSVs with their
        14-column header, and the image and synthetic-pool directories. Never overwrites an existing file."""
        from deft_aoi.console import out_console, say
        from deft_aoi.workspace.scaffold import BACKBONE_HINT, init_workspace

        result = init_workspace(workspace)
        if fetch_backbone:
            from deft_aoi.cli.backbone_cmd import say_fetched

            say_fetched(result.root)  # on stderr: --json's stdout stays one document
        if json_out:
            out_console().print_json(result.model_dump_json())
            return
        for path in result.created:
            say(f"created  {_shown(path, result.root)}")
        for path in result.kept:
            say(f"kept     {_shown(path, result.root)} (already there)")
        say(f"workspace ready at {result.root}: edit specs/baseline_spec.yaml, fill the CSVs and images, "
            "then run `deft preflight`")
        if not fetch_backbone:
            say(BACKBONE_HINT)
