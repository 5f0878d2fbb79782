"""Everything a mining run leaves in its directory: specs, embeddings, mined rows, summaries, report.

Builders return text/frames (pure); `write_outputs` is the one thin writer (atomic, io_utils).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deft_aoi.workspace.catalog import name as catalog_name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deft_aoi.mining.engine import MineRun

# Writing a copy of a huge pool's embeddings into every run dir would cost GBs; past this many floats the
# run dir holds a pointer to the cache shards instead.
MAX_INLINE_FLOATS = 50_000_000


def _verdict(run: MineRun) -> tuple[str, str]:
    c = run.knn.counts
    if c["after_dedup"] == 0:
        return "FAIL", "nothing was mined"
    if run.warnings:
        return "WARN", f"{c['after_dedup']} row(s) mined, with {len(run.warnings)} warning(s)"
    return "PASS", f"{c['after_dedup']} row(s) mined for {c['targets']} target(s)"


def knn_summary_frame(run: MineRun) -> pd.DataFrame:
    import pandas as pd

    pt = run.knn.per_target.copy()
    t = run.targets.frame
    pt.insert(0, "target_filepath", t["filepath"].to_numpy()[pt["target"].to_numpy()])
    if "label" in t.columns:
        pt.insert(1, "target_label", t["label"].to_numpy()[pt["target"].to_numpy()])
    pt = pt.drop(columns=["target"])
    total: dict[str, Any] = {c: "" for c in pt.columns}
    total["target_filepath"] = "TOTAL"
    for col in ("candidate_count", "after_cutoff", "after_history", "backfilled", "kept_count", "rejected_count"):
        total[col] = int(pt[col].sum())
    total["max_similarity"] = float(pt["max_similarity"].max()) if len(pt) else ""
    total["similarity_threshold"] = run.config.min_similarity
    order = ["target_filepath", *(["target_label"] if "target_label" in pt else []), "candidate_count",
             "kept_count", "rejected_count", "similarity_threshold", "after_cutoff", "after_history",
             "backfilled", "max_similarity"]
    return pd.concat([pt, pd.DataFrame([total])], ignore_index=True)[order]


def knn_unique(counts: dict[str, int]) -> int:
    """Rows the k-NN keeps after de-duplication: what the selection step (if any) chooses from. Computed from
    its parts because a selection overwrites `after_dedup` with the rows it took."""
    return counts["after_history"] + counts["backfilled"] - counts["duplicates_removed"]


def selection_line(run: MineRun) -> str | None:
    """The selection step among the k-NN's neighbours, in the report's words (None when the k-NN is the
    selection)."""
    sel = run.selection
    if run.strategy is None:
        return None
    mined = run.mined
    synthetic = int((mined["source"].astype(str) == "synthetic").sum()) if "source" in mined.columns else 0
    line = (f"selection ({run.strategy}): {sel['selected']} of the {sel['budget']} rows above "
            f"({sel['selected_pass']} PASS : {sel['selected_defect']} defect, {synthetic} synthetic)")
    if sel.get("balance_dropped"):
        line += f"; {sel['balance_dropped']} PASS row(s) dropped by the class balance"
    if run.strategy == "kpi" and sel["selected"] < sel["budget"]:
        line += "; kpi takes only rows near targets wrong at the threshold"
    return line


def summary_text(run: MineRun) -> str:
    c = run.knn.counts
    selection = selection_line(run)
    lines = [
        "mining summary",
        f"encoder: {run.fingerprint.describe()}",
        f"queries (targets): {c['targets']}",
        f"pool rows: {c['pool']}",
        f"topn: {run.config.top_k_per_target}  metric: {run.config.metric}  "
        f"min_similarity: {run.config.min_similarity}",
        f"neighbours (raw): {c['raw']}",
        f"after similarity cut-off: {c['after_cutoff']}",
        f"after history exclusion: {c['after_history']} (ledger: {run.ledger_size} row(s))",
        f"back-filled (next fresh neighbour for a slot lost to history): {c['backfilled']}",
        f"duplicates removed: {c['duplicates_removed']}",
        *([selection] if selection else []),
        f"mined (unique filepaths): {len(run.mined)}",
        f"label filter: {'on' if run.label_filter_applied else 'off'}",
        f"search: {run.search.describe()}",
    ]
    lc = run.knn.label_counts
    if lc is not None and len(lc):
        lines.append("")
        lines.append("per label: targets / pool rows / candidates / kept (by target label) / mined with label")
        for row in lc.to_dict("records"):  # a record's values are typed (Any), an itertuples row's are not
            pool_rows = row["pool_rows"] if row["pool_rows"] >= 0 else "n/a"
            own = row["mined_with_label"] if row["mined_with_label"] >= 0 else "n/a"
            counts = f"{row['targets']} / {pool_rows} / {row['candidates']} / {row['kept']} / {own}"
            lines.append(f"  {row['label']}: {counts}")
    if run.info:
        lines.append("")
        lines.extend(f"info: {i}" for i in run.info)
    if run.warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in run.warnings)
    return "\n".join(lines) + "\n"


def _table(df: pd.DataFrame) -> str:
    cols = list(map(str, df.columns))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        out.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(out)


def _head(run: MineRun, n: int) -> np.ndarray:
    """The pool's first `n` embedding rows, wherever the matrix lives."""
    import numpy as np

    emb = run.pool_emb
    return emb[:n] if isinstance(emb, np.ndarray) else emb.read_rows(0, n)


def _sanity(run: MineRun) -> list[str]:
    import numpy as np

    m = run.mined
    checks = []
    unique = m["filepath"].is_unique
    checks.append(f"- {'ok' if unique else 'FAIL'}: mined filepaths unique ({len(m)} rows)")
    if len(m):
        lo, hi = float(m["similarity"].min()), float(m["similarity"].max())
        ok = lo >= run.config.min_similarity - 1e-6 and hi <= 1 + 1e-5
        checks.append(f"- {'ok' if ok else 'FAIL'}: similarities within [{run.config.min_similarity}, 1] "
                      f"(min {lo:.4f}, max {hi:.4f})")
    self_hits = int(m["filepath"].isin(run.targets.frame["filepath"]).sum())
    checks.append(f"- {'ok' if self_hits == 0 else 'warn'}: {self_hits} mined row(s) are target images themselves")
    norms = np.linalg.norm(_head(run, 10_000).astype(np.float32), axis=1)
    ok = bool(np.all(np.abs(norms - 1) < 1e-3)) if len(norms) else True
    checks.append(f"- {'ok' if ok else 'warn'}: pool embeddings unit-norm (checked {len(norms)})")
    if run.cache_stats is not None:
        s = run.cache_stats
        checks.append(f"- ok: embedding cache: {s.cached} of {s.unique} distinct pool pairs reused, "
                      f"{s.embedded} embedded now")
    if "matched_target_label" in m.columns and "label" in m.columns and len(m):
        agree = float((m["label"] == m["matched_target_label"]).mean())
        checks.append(f"- info: {agree:.1%} of mined rows carry their matched target's label")
    return checks


def golden_note(run: MineRun) -> str | None:
    """Targets without a golden image cannot match pool pairs: the cause to name when little is mined."""
    n = run.targets_without_golden
    if not n:
        return None
    return (f"{n} of {run.knn.counts['targets']} target(s) have no golden image (no golden_filepath): the pair "
            f"encoder {run.fingerprint.name} describes the change between an image and its golden, so a lone "
            "image matches no pool pair; give the targets their golden (a golden_filepath column, or ChangeNet "
            "rows with golden_path)")


def _actions(run: MineRun) -> list[str]:
    c = run.knn.counts
    acts = []
    golden = golden_note(run)
    if golden and c["after_cutoff"] < c["raw"]:
        acts.append(golden[0].upper() + golden[1:] + ".")
    elif c["raw"] and c["after_cutoff"] < 0.2 * c["raw"]:
        acts.append(f"Only {c['after_cutoff']}/{c['raw']} neighbours pass min_similarity "
                    f"{run.config.min_similarity}: lower --min-similarity or grow the pool with similar samples.")
    if c["after_cutoff"] and c["after_history"] + c["backfilled"] < 0.5 * c["after_cutoff"]:
        acts.append("Most close neighbours were mined in earlier iterations: the pool is exhausted near these "
                    "targets; append fresh production samples.")
    if c["after_history"] and c["duplicates_removed"] > 0.5 * (c["after_history"] + c["backfilled"]):
        acts.append("Targets share most neighbours (many duplicates): raise --topn for more diversity.")
    acts.extend(f"Resolve: {w}" for w in run.warnings)
    if not acts:
        acts.append("None: add the mined rows to the next training set.")
    return [f"{i}. {a}" for i, a in enumerate(acts, 1)]


def report_markdown(run: MineRun, *, outputs: dict[str, str]) -> str:
    verdict, why = _verdict(run)
    c = run.knn.counts
    tfp = run.targets.fingerprint
    pfp = run.pool.fingerprint
    enc = [
        f"- encoder used: {run.fingerprint.describe()}",
        f"- targets: {'precomputed, ' + tfp.describe() if tfp else f'embedded now ({run.embedded_targets} rows)'}",
        f"- pool: {'precomputed, ' + pfp.describe() if pfp else 'embedded now (through the cache)'}",
        f"- device: {run.device}",
        "- consistency: " + ("NOT VERIFIED (no fingerprint metadata)" if run.fingerprint.is_unknown
                             else "one fingerprint for targets and pool"),
    ]
    if run.cache_dir is not None and run.cache_stats is not None:
        s = run.cache_stats
        enc.append(f"- cache: `{run.cache_dir}` — {s.cached} reused, {s.embedded} embedded")
    selection = selection_line(run)
    mining = [
        f"- topn {run.config.top_k_per_target}, metric {run.config.metric}, "
        f"min_similarity {run.config.min_similarity}, "
        f"label filter {'on' if run.label_filter_applied else 'off'}",
        f"- raw neighbours {c['raw']} → after cut-off {c['after_cutoff']} → after history {c['after_history']} "
        f"+ back-filled {c['backfilled']} → after de-dup {knn_unique(c)} "
        f"({c['duplicates_removed']} duplicates removed)",
        *([f"- {selection}"] if selection else []),
        f"- mined: {len(run.mined)} row(s)",
        *(f"- info: {i}" for i in run.info),
        f"- search: {run.search.describe()}",
        f"- embedding executor: {run.search.executor}",
        "- time: " + ", ".join(f"{k} {v:.2f}" for k, v in run.timings.items()),
    ]
    lc = run.knn.label_counts
    per_label = _table(lc) if lc is not None and len(lc) else "No labels in the targets: no breakdown."
    converted = ", converted from CSV to pool.parquet" if run.pool.converted_from_csv else ""
    files = "\n".join(f"- `{name}`: {desc}" for name, desc in outputs.items())
    return "\n".join([
        "# Mining Report",
        "",
        "## Verdict",
        f"**{verdict}** — {why}.",
        "",
        "## Inputs",
        f"- targets: `{run.targets.source}` ({c['targets']} rows"
        + (f", {run.targets_without_golden} without a golden image)" if run.targets_without_golden else ")"),
        f"- pool: `{run.pool.source}` ({c['pool']} rows{converted})",
        f"- ledger (rows mined earlier): {run.ledger_size}",
        "",
        "## Encoder Consistency",
        *enc,
        "",
        "## Mining Run",
        *mining,
        "",
        "## Per-Label Breakdown",
        per_label,
        "",
        "## Output Sanity",
        *_sanity(run),
        "",
        "Files:",
        files,
        "",
        "## Recommended Actions",
        *_actions(run),
        "",
    ])


def write_rows(mined: pd.DataFrame, put: Callable[[str, str], Path],
               stored: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """The mined rows, written ONCE (`mine.rows`), and the views derived from that one frame: the ChangeNet CSV
    (`mine.pool_csv`, CONTRACTS §3.4) when the rows carry the ChangeNet columns (a loop run's always do)."""
    from deft_aoi.io_utils import atomic_write_parquet
    from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, write_changenet_csv

    atomic_write_parquet(stored(mined), put(catalog_name("mine.rows"),
                                            "mined rows: filepath, label, similarity, matched target + pool columns"))
    if set(CHANGENET_COLUMNS) <= set(mined.columns):
        # ChangeNet coordinates are relative to the images root already: written as they are.
        write_changenet_csv(mined[list(CHANGENET_COLUMNS)], put(catalog_name("mine.pool_csv"),
                                                                 "the mined rows' ChangeNet columns (a view)"))


def write_outputs(run: MineRun, out_dir: Path, paths_root: Path | None = None) -> dict[str, Path]:
    """Write every mining output into `out_dir`; returns name → path. Given `paths_root` (a run's workspace),
    the image paths of the tables are stored relative to it (workspace/stored_paths.py)."""
    import yaml

    from deft_aoi.io_utils import atomic_write_csv, atomic_write_parquet, atomic_write_text
    from deft_aoi.mining.fingerprint import write_embedding_parquet
    from deft_aoi.workspace.stored_paths import store_frame

    def stored(df: pd.DataFrame) -> pd.DataFrame:  # the tables; a run's text files are converted at commit
        return df if paths_root is None else store_frame(df, paths_root)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    desc: dict[str, str] = {}

    def put(name: str, what: str) -> Path:
        paths[name] = out_dir / name
        desc[name] = what
        return paths[name]

    emb_spec = {
        "model": run.fingerprint.name,
        "encoder": run.config.encoder,
        "fingerprint": run.fingerprint.model_dump(),
        "fingerprint_id": run.fingerprint.id,
        "input_parquet": {"targets": str(run.targets.source), "pool": str(run.pool.source)},
        "cache_dir": str(run.cache_dir) if run.cache_dir else None,
        "device": run.device,
    }
    atomic_write_text(put("embedding_spec.yaml", "encoder and inputs"), yaml.safe_dump(emb_spec, sort_keys=False))
    mining_spec = {
        "topn": run.config.top_k_per_target,
        "knn_metric": run.config.metric,
        "min_similarity": run.config.min_similarity,
        # TAO Data Services reads this flag as a string.
        "filter_by_label": "true" if run.label_filter_applied else "false",
        "filter_by_label_requested": run.config.filter_by_label,
        "allow_unfiltered": run.config.allow_unfiltered,
        "ledger_size": run.ledger_size,
        "search": {
            "method": run.search.method,
            "index_requested": run.config.mining_index,
            "memory_bytes": run.config.memory_bytes,
            "shard_rows": run.search.shard_rows,
            "pool_dtype": run.search.pool_dtype,
            "index_path": str(run.search.index_path) if run.search.index_path else None,
            "recall_k": run.search.recall_k or None,
            "recall": run.search.recall,
            "recall_floor": run.config.mining_recall_floor,
            "executor": run.config.mining_executor,
        },
    }
    atomic_write_text(put(catalog_name("mine.spec"), "k-NN parameters"), yaml.safe_dump(mining_spec, sort_keys=False))
    write_embedding_parquet(stored(run.targets.frame), run.target_emb, run.fingerprint,
                            put("target_embeddings.parquet", "targets + embedding (fingerprint in metadata)"))
    n_pool, dim = run.pool_emb.shape
    if n_pool * dim <= MAX_INLINE_FLOATS or run.cache_dir is None:
        write_embedding_parquet(stored(run.pool.frame), _head(run, n_pool), run.fingerprint,
                                put("source_embeddings.parquet", "pool + embedding (fingerprint in metadata)"))
    else:
        pointer = {"cache_dir": str(run.cache_dir), "fingerprint_id": run.fingerprint.id,
                   "rows": n_pool, "pool": str(run.pool.source),
                   "matrix": str(run.search.pool_on_disk) if run.search.pool_on_disk else None}
        atomic_write_text(put("source_embeddings.pointer.yaml", "where the pool's embeddings live (cache)"),
                          yaml.safe_dump(pointer, sort_keys=False))
    if run.pool.converted_from_csv:
        atomic_write_parquet(stored(run.pool.frame), put("pool.parquet", "the CSV pool as parquet, all columns kept"))
    write_rows(run.mined, put, stored)
    atomic_write_csv(stored(knn_summary_frame(run)), put("knn_summary.csv", "per target counts + TOTAL"))
    atomic_write_text(put("mining_summary.txt", "counts and per-label breakdown"), summary_text(run))
    report = put(catalog_name("mine.report"), "this report")
    atomic_write_text(report, report_markdown(run, outputs=desc))
    return paths
