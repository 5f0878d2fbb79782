"""What a finished run must look like whatever happened on the way: shared by the chaos and fault tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from run_files import artefacts


def finished_run(ws: Path) -> Path:
    runs = sorted(p for p in (ws / "results").glob("run_*") if (p / "deft_state.json").exists())
    done = [r for r in runs if json.loads((r / "deft_state.json").read_text())["status"] == "finished"]
    assert len(done) == 1, f"expected one finished run, found {[r.name for r in runs]}"
    return done[0]


def fingerprint(ws: Path) -> dict:
    """What must not depend on interruptions: stage sequence, datasets, mined rows, KPI figures."""
    run = finished_run(ws)

    def norm(text: str) -> str:
        return text.replace(str(ws), "<WS>").replace(run.name, "<RUN>")

    from deft_aoi.loop.store import StateStore
    from deft_aoi.workspace.layout import RunLayout

    # Through the product's own reader: a junk line a fault left in the log is skipped there, as here.
    log = [e.model_dump() for e in StateStore(RunLayout(run)).read_log()]
    state = json.loads((run / "deft_state.json").read_text())
    out: dict = {
        "stages": [(e["iter"], e["stage"]) for e in log if e["status"] == "ok"],
        "kpi": {name: (it["far_pct"], it["threshold"], it["counts"].get("total"))
                for name, it in state["iterations"].items()},
        "best": state["best_iteration"],
    }
    for csv in artefacts(run, "assemble.train_csv").values():
        out[csv.name] = norm(csv.read_text())
    for iteration, mined in artefacts(run, "mine.rows").items():
        rows = pd.read_parquet(mined)
        out[f"{iteration}/mined"] = sorted(norm(p) for p in rows["filepath"].astype(str))
    return out


def files_naming(root: Path, old_root: Path) -> list[str]:
    """Every file under `root` that names `old_root` or a path under it, as `relative/file` (a parquet as
    `relative/file[column]`): parquet cells and schema metadata read as text, every other file as bytes (logs,
    YAML, JSON, CSV, HTML, checkpoints alike). A sibling that merely shares the prefix (`ws2` of `ws`) is no
    match."""
    import re

    import pyarrow.parquet as pq

    pattern = re.escape(str(old_root)) + r"(?![\w.-])"
    text_re, bytes_re = re.compile(pattern), re.compile(pattern.encode())
    hits: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = b" ".join(v for v in (table.schema.metadata or {}).values())
            if bytes_re.search(meta):
                hits.append(f"{rel}[metadata]")
            for column in table.column_names:
                if any(text_re.search(str(v)) for v in table.column(column).to_pylist()):
                    hits.append(f"{rel}[{column}]")
        elif bytes_re.search(path.read_bytes()):
            hits.append(rel)
    return hits


def thumbnails(report: Path) -> int:
    """How many embedded images (thumbnails) a rendered report shows."""
    return report.read_text(encoding="utf-8").count('src="data:image/png;base64,')
