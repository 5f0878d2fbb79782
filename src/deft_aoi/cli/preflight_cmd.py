"""`deft preflight`: the dry run. Exit 0 ready, 1 a check failed, 2 usage error. Writes caches and the list
of leaking pool rows only."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.options import BACKEND_HELP, MINING_ENGINE_HELP, NEAR_DUPLICATE_HELP, NO_EXCLUDE_HELP, WORKSPACE_HELP


def register(app: typer.Typer) -> None:
    @app.command("preflight")
    def preflight(
        workspace: Path = typer.Option(Path("~/workspace"), "--workspace", "-w", help=WORKSPACE_HELP),
        backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP + " (omit: skip backend checks)"),
        kpi: str | None = typer.Option(None, "--kpi", help='KPI target, e.g. "FAR<0.1%@recall=100%".'),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        deep: bool = typer.Option(False, "--deep", help="Also decode every image (slow)."),
        mining_engine: str | None = typer.Option(None, "--mining-engine", help=MINING_ENGINE_HELP),
        no_exclude: bool = typer.Option(False, "--no-exclude", help=NO_EXCLUDE_HELP),
        near_duplicate_threshold: float | None = typer.Option(None, "--near-duplicate-threshold",
                                                              help=NEAR_DUPLICATE_HELP),
    ) -> None:
        """Check the workspace and print the Pre-Flight Summary. Writes only caches and the list of leaking
        pool rows (results/preflight/pool_exclusions.csv); the workspace's data is never touched."""
        import json

        from deft_aoi.cli.views import preflight_document, print_preflight_summary
        from deft_aoi.loop.session import config_from_flags, runner_factory, try_load_spec
        from deft_aoi.workspace.layout import WorkspaceLayout
        from deft_aoi.workspace.preflight import run_preflight

        root = workspace.expanduser()
        layout = WorkspaceLayout.at(root)
        factory = runner_factory(backend, layout) if backend else None
        flags = {"kpi": kpi, "backend": backend, "mining_engine": mining_engine,
                 "near_duplicate_threshold": near_duplicate_threshold, "exclude_leaks": False if no_exclude else None}
        config = config_from_flags(flags, try_load_spec(layout))
        report = run_preflight(layout.root, config=config, runner_factory=factory, deep=deep)
        list_file = None
        if report.hygiene is not None:
            from deft_aoi.workspace.hygiene import write_findings

            try:
                write_findings(report.hygiene, layout.preflight_exclusions)
                list_file = str(layout.preflight_exclusions)
            except OSError as exc:  # a read-only workspace: the checks still stand, only the list is not kept
                from deft_aoi.console import say

                say(f"warning: cannot write {layout.preflight_exclusions}: {exc.strerror}")
        if as_json:
            typer.echo(json.dumps(preflight_document(report, config, list_file), indent=2, ensure_ascii=False))
        else:
            print_preflight_summary(report, config)
            if list_file:
                from deft_aoi.console import say

                say(f"leaking pool rows listed in {list_file}")
        raise typer.Exit(0 if report.ready else 1)
