"""Routing of RCA gaps (CONTRACTS §3.2). In the EA variant the synthetic pool is pre-generated, so there is
one bucket: every gap row goes to mining (no label filtering) and the anomalygen bucket stays empty but keeps
the same columns, so downstream readers never special-case a missing file or schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.errors import InputError
from deft_aoi.workspace.catalog import name

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_GAP_COLUMNS: tuple[str, ...] = ("filepath", "label", "siamese_score", "weakness")


@dataclass
class RoutingResult:
    mining_gaps: pd.DataFrame
    anomalygen_gaps: pd.DataFrame
    summary: str


def _summary(gaps: pd.DataFrame) -> str:
    lines = [
        "routing: single bucket (EA variant, filter_by_label: false) — every gap row is promoted to mining",
        f"gap rows: {len(gaps)}",
        f"→ mining_gaps.parquet: {len(gaps)} row(s)",
        "→ anomalygen_gaps.parquet: 0 row(s) (synthetic pairs are pre-generated and ingested, never generated)",
    ]
    if len(gaps):
        if {"input_path", "object_name"} <= set(gaps.columns):
            samples = gaps.drop_duplicates(subset=["input_path", "object_name"])
            lines.append(f"distinct samples: {len(samples)}")
        lines.append("per label (rows, mean weakness, misclassified rows):")
        grouped = gaps.groupby("label", sort=True)
        for label, group in grouped:
            wrong = int((group["weakness"] > 0).sum())
            lines.append(f"  {label}: {len(group)}, {group['weakness'].mean():+.4f}, {wrong}")
        if "light" in gaps.columns:
            per_light = gaps.groupby("light", sort=True).size()
            lines.append("per light: " + ", ".join(f"{k} {v}" for k, v in per_light.items()))
    return "\n".join(lines) + "\n"


def route(gaps: pd.DataFrame) -> RoutingResult:
    """Split gaps into the mining and anomalygen buckets (all → mining). Raises InputError when the frame
    lacks the kpi_gaps columns."""
    missing = [c for c in REQUIRED_GAP_COLUMNS if c not in gaps.columns]
    if missing:
        raise InputError(
            f"gaps frame lacks column(s) {', '.join(missing)}; found: {', '.join(map(str, gaps.columns))}",
            file=name("rca.kpi_gaps"),
        )
    mining = gaps.reset_index(drop=True).copy()
    return RoutingResult(mining_gaps=mining, anomalygen_gaps=mining.iloc[0:0].copy(), summary=_summary(mining))


def write_routing(result: RoutingResult, out_dir: Path, *, root: Path) -> None:
    """mining_gaps.parquet, anomalygen_gaps.parquet (zero rows, same columns; image paths relative to the
    workspace `root`), routing_summary.txt."""
    from deft_aoi.io_utils import atomic_write_text
    from deft_aoi.workspace.stored_paths import write_parquet

    out_dir = Path(out_dir)
    write_parquet(result.mining_gaps, out_dir / name("route.mining_gaps"), root)
    write_parquet(result.anomalygen_gaps, out_dir / name("route.anomalygen_gaps"), root)
    atomic_write_text(out_dir / name("route.summary"), result.summary)
