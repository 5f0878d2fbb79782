"""`deft preflight`: the dry run. Exit 0 ready, 1 a check failed, 2 usage error. Writes caches and the list
of leaking pool rows only."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.options import WORKSPACE_HELP
from deft_aoi.cli.settings import given_settings, settings_command
from deft_aoi.console import echo_json


def register(app: typer.Typer) -> None:
    @app.command("preflight", cls=settings_command())
    def preflight(
        ctx: typer.Context,
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        deep: bool = typer.Option(False, "--deep", help="Also decode every image (slow)."),
    ) -> None:
        """Check the workspace and print the Pre-Flight Summary (with --backend: also that backend's checks).
        Writes only caches and the list of leaking pool rows (results/preflight/pool_exclusions.csv); the
        workspace's data is never touched."""
        import json

        from deft_aoi.api import Loop
        from deft_aoi.cli.views import preflight_document, print_preflight_summary

        settings = given_settings(ctx)
        loop = Loop(workspace, **settings)
        layout = loop.layout
        # Without --backend, the backend's own checks are skipped (its default still shows in the summary).
        report, config = loop.preflight(deep=deep, backend_checks=settings.get("backend") is not None)
        list_file = None
        if report.hygiene is not None:
            from deft_aoi.preflight.hygiene import write_findings

            try:
                write_findings(report.hygiene, layout.preflight_exclusions)
                list_file = str(layout.preflight_exclusions)
            except OSError as exc:  # a read-only workspace: the checks still stand, only the list is not kept
                from deft_aoi.console import say

                say(f"warning: cannot write {layout.preflight_exclusions}: {exc.strerror}")
        if as_json:
            echo_json(json.dumps(preflight_document(report, config, list_file), indent=2, ensure_ascii=False))
        else:
            print_preflight_summary(report, config)
            if list_file:
                from deft_aoi.console import say

                say(f"leaking pool rows listed in {list_file}")
        raise typer.Exit(0 if report.ready else 1)
