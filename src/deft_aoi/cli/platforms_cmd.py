"""`deft platforms`: what this machine can reach and what each platform needs (runners/platforms.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("platforms")
    def platforms(json_out: bool = typer.Option(False, "--json", help="Print the platforms as JSON on stdout.")
                  ) -> None:
        """List local CPU/CUDA, the Docker Engine and its GPUs, Slurm partitions and their GPUs, and the
        credentials each needs (never their values). Starts, pulls and submits nothing."""
        import json

        from deft_aoi.console import out_console
        from deft_aoi.runners.platforms import discover

        found = discover()
        if json_out:
            typer.echo(json.dumps([p.as_dict() for p in found], indent=2))
            return
        out = out_console()
        for p in found:
            mark = "✓" if p.available else "✗"
            out.print(f"{mark} {p.name}  (--backend {p.backend})", markup=False)
            out.print(f"    {p.detail}", markup=False)
            for gpu in p.gpus:
                out.print(f"    GPU {gpu}", markup=False)
            if p.credentials:
                out.print(f"    needs: {'; '.join(p.credentials)}", markup=False)
