"""`deft preflight`: the dry run. Read-only; exit 0 ready, 1 a check failed, 2 usage error."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.options import BACKEND_HELP, MINING_ENGINE_HELP, WORKSPACE_HELP


def register(app: typer.Typer) -> None:
    @app.command("preflight")
    def preflight(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP + " (omit: skip backend checks)"),
        kpi: str | None = typer.Option(None, "--kpi", help='KPI target, e.g. "FAR<0.1%@recall=100%".'),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        deep: bool = typer.Option(False, "--deep", help="Also decode every image (slow)."),
        mining_engine: str | None = typer.Option(None, "--mining-engine", help=MINING_ENGINE_HELP),
    ) -> None:
        """Check the workspace without writing anything and print the Pre-Flight Summary."""
        import json

        from deft_aoi.cli.views import preflight_document, print_preflight_summary
        from deft_aoi.loop.session import config_from_flags, runner_factory, try_load_spec
        from deft_aoi.workspace.layout import WorkspaceLayout
        from deft_aoi.workspace.preflight import run_preflight

        root = workspace.expanduser()
        layout = WorkspaceLayout.at(root)
        factory = runner_factory(backend, layout) if backend else None
        config = config_from_flags({"kpi": kpi, "backend": backend, "mining_engine": mining_engine},
                                   try_load_spec(layout))
        report = run_preflight(layout.root, config=config, runner_factory=factory, deep=deep)
        if as_json:
            typer.echo(json.dumps(preflight_document(report, config), indent=2, ensure_ascii=False))
        else:
            print_preflight_summary(report, config)
        raise typer.Exit(0 if report.ready else 1)
