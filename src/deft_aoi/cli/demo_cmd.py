"""`deft demo-data`: write a procedural, deterministic demo AOI workspace (no downloads)."""

from __future__ import annotations

import enum
from pathlib import Path

import typer


class DemoSize(enum.StrEnum):
    small = "small"
    medium = "medium"


def register(app: typer.Typer) -> None:
    @app.command("demo-data")
    def demo_data(
        out: Path = typer.Option(..., "--out", "-o", help="Directory to create (must be new or empty)."),
        seed: int = typer.Option(7, "--seed", min=0, help="Random seed; the same seed gives identical files."),
        size: DemoSize = typer.Option(DemoSize.small, "--size", help="small (~1.6k rows) or medium (~4x)."),
        force: bool = typer.Option(False, "--force", help="Replace the demo files in a non-empty directory "
                                                          "(other files there are kept)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Generate a demo AOI workspace: rendered component crops with golden partners, defects, nuisance
        that causes real false calls, base training/validation/KPI sets, a mining pool and synthetic pairs."""
        from deft_aoi.console import out_console, say
        from deft_aoi.demo.generator import generate_workspace

        summary = generate_workspace(out, seed=seed, size=size.value, force=force)
        if json_out:
            out_console().print_json(summary.model_dump_json())
            return
        say(f"demo workspace written to {summary.path} (seed {summary.seed}, size {summary.size})")
        for split, labels in summary.labels.items():
            defects = ", ".join(f"{k} {v}" for k, v in labels.items() if k != "PASS")
            say(f"  {split:<12} {summary.rows[split]:>5} rows: PASS {labels.get('PASS', 0)}, {defects}; "
                f"nuisance on {summary.nuisance_rows[split]}")
        synth = ", ".join(f"{k} {v}" for k, v in summary.synthetic_pairs.items())
        say(f"  synthetic    {sum(summary.synthetic_pairs.values()):>5} pairs: {synth}")
        say(f"  {summary.files} files, {summary.total_bytes / 1e6:.1f} MB")
