"""`deft kpi INFERENCE_CSV`: the KPI of one inference CSV, on its own (no workspace, no run), through the front
door (api.kpi)."""

from __future__ import annotations

from pathlib import Path

import typer

from deft_aoi.cli.settings import given_settings, settings_command
from deft_aoi.console import echo_json


def register(app: typer.Typer) -> None:
    @app.command("kpi", cls=settings_command(("kpi",), with_defaults=True))  # --kpi: the loop's own option
    def kpi(
        ctx: typer.Context,
        inference_csv: Path = typer.Argument(
            ..., help="A Visual ChangeNet inference.csv (the ChangeNet columns + siamese_score)."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the KPI report as JSON on stdout."),
        out_dir: Path | None = typer.Option(
            None,
            "--out",
            help="Also write metrics.json, metrics.csv, confusion.json and the SVG plots into this folder.",
        ),
    ) -> None:
        """Compute FAR at the recall constraint, the threshold, and best F1 for one inference CSV.

        Predicts NO_PASS iff siamese_score > threshold; the threshold is the highest one meeting the recall
        constraint.
        """
        from deft_aoi import api
        from deft_aoi.analysis.kpi import display_threshold
        from deft_aoi.config import KpiTarget
        from deft_aoi.console import out_console, say

        target = KpiTarget.parse(given_settings(ctx)["kpi"])
        report = api.kpi(inference_csv, target, out_dir)
        if json_out:
            echo_json(report.model_dump_json(indent=2))
        else:
            out = out_console()

            def pct(value: float | None) -> str:
                return "undefined" if value is None else f"{value:.4g}%"

            out.print(f"KPI target      {target.describe()}", markup=False)
            rows = f"{report.n_rows} (PASS {report.n_pass}, NO_PASS {report.n_defect})"
            out.print(f"rows            {rows}", markup=False)
            if report.reachable:
                out.print(f"threshold       {display_threshold(report.threshold)}", markup=False)
                out.print(f"FAR             {pct(report.far_pct)}", markup=False)
                if report.far_ci_low_pct is not None and report.far_ci_high_pct is not None:
                    out.print(f"FAR {report.ci_level_pct:g}% CI      {report.far_ci_low_pct:.4g}–"
                              f"{report.far_ci_high_pct:.4g}% (bootstrap, {report.bootstrap_samples} resamples, "
                              f"seed {report.bootstrap_seed})", markup=False)
                out.print(f"FAR@recall99    {pct(report.far_at_recall99_pct)}", markup=False)
                for item in report.threshold_defects[:1]:
                    out.print(f"set by          {item['label']} (row {item['row']}, score {item['score']:.4g}), "
                              "the lowest-scored defect", markup=False)
                out.print(f"recall          {pct(report.recall_pct)}", markup=False)
                out.print(f"precision       {pct(report.precision_pct)}", markup=False)
                out.print(f"TP FP TN FN     {report.tp} {report.fp} {report.tn} {report.fn}", markup=False)
            else:
                out.print(f"KPI unreachable {report.unreachable_reason}", markup=False)
            if report.best_f1 is not None:
                out.print(
                    f"best F1         {report.best_f1:.4f} at threshold {display_threshold(report.best_f1_threshold)}",
                    markup=False,
                )
            out.print(f"KPI met         {'yes' if report.kpi_met else 'no'}", markup=False)
        if report.support_note:
            say(f"note: {report.support_note}")
        if out_dir is not None:
            say(f"wrote metrics and plots to {out_dir}")
