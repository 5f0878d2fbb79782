"""Pre-flight checks of CONTRACTS §4, plus pool hygiene (preflight/hygiene.py). Only caches are written.

Each check yields a CheckResult; a failing input never raises out of `run_preflight`, so the user sees
every problem at once instead of the first one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deft_aoi.analysis.kpi import RULE_OF_THREE_PCT, support_note
from deft_aoi.analysis.leakage import key_leakage
from deft_aoi.checks import HYGIENE_CHECK, TRAINING_LEAK_CHECK, CheckResult, failed, passed, skipped, warned
from deft_aoi.config import SETTINGS, KpiTarget, LoopConfig, parse_memory
from deft_aoi.console import progress
from deft_aoi.errors import HEADROOM_MB, DeftError, InputError, free_mb
from deft_aoi.preflight.hygiene import HygieneResult, check_hygiene, listing
from deft_aoi.preflight.pool_stream import chunk_rows_for_budget
from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec, load_spec
from deft_aoi.runners.tao.checks import spec_schema_check
from deft_aoi.runners.tao.versions import load_versions
from deft_aoi.synth.pairing import pair_stems
from deft_aoi.workspace.changenet_csv import (
    check_paths_inside,
    find_missing_images,
    image_paths,
    iter_changenet_csv,
    missing_value_labels,
    read_changenet_csv,
    rebase_paths,
)
from deft_aoi.workspace.layout import WorkspaceLayout

if TYPE_CHECKING:
    import pandas as pd

    from deft_aoi.runners.base import Runner


@dataclass
class PreflightReport:
    workspace: Path
    checks: list[CheckResult] = field(default_factory=list)
    spec: ChangeNetSpec | None = None
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # the small CSVs (the mining pool streams)
    hygiene: HygieneResult | None = None
    pool_rows: int | None = None  # the mining pool's rows once it parsed (it is never held whole)
    chunk_rows: int = 0  # mining-pool rows per streamed chunk (from the mining memory budget)
    executor: str = "inprocess"  # the mining executor pool hashing and decoding run on

    @property
    def ready(self) -> bool:
        return not any(c.failed for c in self.checks)

    def add(self, result: CheckResult) -> None:
        self.checks.append(result)

    def require_ready(self) -> ChangeNetSpec:
        """The parsed spec a run starts from, or the refusal to start one: InputError naming every failed
        check (the Pre-Flight Summary shows them too)."""
        if not self.ready or self.spec is None:
            failures = "".join(f"\n  {c.name}: {c.detail}" for c in self.checks if c.failed)
            raise InputError(f"pre-flight failed: fix the checks marked FAIL above, then run again{failures}")
        return self.spec


def _guard(report: PreflightReport, name: str, fn: Callable[[], CheckResult | list[CheckResult]]) -> None:
    try:
        result = fn()
    except DeftError as exc:
        report.add(failed(name, exc.render()))
        return
    for item in result if isinstance(result, list) else [result]:
        report.add(item)


def _csv_check(
    report: PreflightReport,
    key: str,
    label: str,
    path: Path,
    images_dir: Path,
    layout: WorkspaceLayout,
) -> None:

    spec = report.spec

    def check() -> CheckResult:
        df = read_changenet_csv(path)
        check_paths_inside(df, images_dir, layout.root, file=path, lights=spec.lights if spec else (),
                           image_ext=spec.image_ext if spec else "")
        report.frames[key] = df
        if spec is None:
            return warned(label, f"{len(df)} rows; images not checked (spec unreadable)")
        paths = image_paths(df, images_dir, spec.lights, spec.image_ext)
        missing = find_missing_images(paths["path"].tolist())
        if missing:
            first = paths[paths["path"] == missing[0]].iloc[0]
            raise InputError(
                f"{len(missing)} image file(s) missing, first: {missing[0]} (light {first['light']}, "
                f"{first['side']} of row {int(first['row']) + 2})",
                file=path,
                row=int(first["row"]) + 2,
            )
        labels = df["label"].value_counts()
        return _csv_verdict(label, path, len(df), int(labels.get("PASS", 0)), len(paths), spec.lights,
                            missing_value_labels(df))

    _guard(report, label, check)


def _csv_verdict(label: str, path: Path, rows: int, n_pass: int, n_images: int, lights: Sequence[str],
                 suspicious: Mapping[str, int]) -> CheckResult:
    """A ChangeNet CSV that read whole (in memory or streamed): its counts, or a warning for labels that look like
    missing values (they would train as defect classes of their own)."""
    detail = (f"{rows} rows ({n_pass} PASS, {rows - n_pass} defect); "
              f"{n_images} images present for lights {', '.join(lights)}")
    if suspicious:
        words = ", ".join(f"'{k}' ×{v}" for k, v in sorted(suspicious.items()))
        return warned(label, f"{detail}; labels {words} look like missing values and train as defect "
                             f"classes of their own: fix them in {path.name}")
    return passed(label, detail)


def _synthetic_check(layout: WorkspaceLayout) -> CheckResult:

    name = "synthetic NG/OK pairs"
    for d in (layout.synth_ng_dir, layout.synth_ok_dir):
        if not d.is_dir():
            return failed(name, f"{d}: directory missing")
    pairing = pair_stems(layout.synth_ng_dir, layout.synth_ok_dir)
    if not pairing.pairs and not pairing.unpaired_ng and not pairing.unpaired_ok:
        return failed(name, f"{layout.synth_ng_dir} and {layout.synth_ok_dir} hold no images")
    if pairing.unpaired_ng or pairing.unpaired_ok:
        parts = []
        if pairing.unpaired_ng:
            parts.append(f"NG without OK partner: {', '.join(pairing.unpaired_ng[:10])}")
        if pairing.unpaired_ok:
            parts.append(f"OK without NG partner: {', '.join(pairing.unpaired_ok[:10])}")
        more = len(pairing.unpaired_ng) + len(pairing.unpaired_ok)
        return failed(name, f"{more} unpaired stem(s) — " + "; ".join(parts))
    return passed(name, f"{len(pairing.pairs)} pairs, stems matched 1-to-1")


def _leakage_check(report: PreflightReport, layout: WorkspaceLayout) -> CheckResult:

    name = "no validation leakage"
    val = report.frames.get("validation")
    if val is None:
        return skipped(name, "validation CSV unreadable")
    images = layout.kpi_images
    val_ws = rebase_paths(val, images, layout.root)
    problems = []
    for key, label in (("training", "training"), ("kpi", "KPI")):
        other = report.frames.get(key)
        if other is None:
            continue
        leaked = key_leakage(rebase_paths(other, images, layout.root), val_ws)
        if len(leaked):
            row = leaked.index[0]
            problems.append(
                f"{len(leaked)} {label} row(s) also in validation, first: row {int(row) + 2} "
                f"({leaked.iloc[0]['input_path']}/{leaked.iloc[0]['object_name']})"
            )
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, "validation shares no (input_path, golden_path, label, object_name, boardname) key")


KPI_DUPLICATES_CHECK = "KPI set duplicates"
SAME_BOARD_CHECK = "same board in training and KPI"


def _hygiene_checks(report: PreflightReport, layout: WorkspaceLayout, *, threshold: float,
                    exclude: bool) -> list[CheckResult]:
    """Pool hygiene (preflight/hygiene.py) as four pre-flight rows. Pool and synthetic leaks are excluded
    from mining (a warning), or fail pre-flight with `exclude=False` (--no-exclude)."""

    if report.spec is None or "validation" not in report.frames or "kpi" not in report.frames:
        return [skipped(HYGIENE_CHECK, "spec, validation CSV or KPI CSV unreadable")]
    pool_chunks = None
    if report.pool_rows is not None:

        def pool_chunks() -> Iterator[pd.DataFrame]:
            return iter_changenet_csv(layout.mining_pool_csv, report.chunk_rows)

    small = {k: v for k, v in report.frames.items() if k != "mining_pool"}
    result = check_hygiene(layout, report.spec, small, threshold=threshold, pool_chunks=pool_chunks,
                           executor=report.executor)
    report.hygiene = result
    counts = result.counts()
    how = f"near duplicate = min(input, golden) cosine ≥ {threshold:g}, {result.encoder}"
    if result.index.get("kind") == "ivf":
        recall = result.index.get("recall")
        measured = f"recall@{result.index['k']} {recall:.4f} against exact on {result.index['queries']} pool rows" \
            if recall is not None else "recall not measured (no pool rows)"
        how += f"; candidates from an IVF index, {measured}"
    excl = result.exclusions

    def by_kind(source_counts: dict[str, int]) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in source_counts.items() if n) or "none"

    out = []
    if excl.empty:
        out.append(passed(HYGIENE_CHECK, f"no mining-pool or synthetic row repeats a validation/KPI row by key, "
                                         f"input pixels or near duplicate ({how})"))
    else:
        sources = ", ".join(f"{src.replace('_', ' ')} {int((excl['source'] == src).sum())}"
                            for src in ("mining_pool", "synthetic") if (excl["source"] == src).any())
        kinds = by_kind({k: counts["mining_pool"][k] + counts["synthetic"][k] for k in counts["mining_pool"]})
        if exclude:
            out.append(warned(HYGIENE_CHECK, f"{len(excl)} row(s) excluded from mining ({kinds}; {sources}); "
                                             f"{how}"))
        else:
            out.append(failed(HYGIENE_CHECK, f"{len(excl)} row(s) would leak validation/KPI data ({kinds}; "
                                             f"{sources}) and --no-exclude keeps them: {listing(excl)}"))
    train = result.findings[result.findings["source"] == "training"]
    hard = train[train["kind"] != "near_duplicate"]
    if not hard.empty:
        out.append(failed(TRAINING_LEAK_CHECK, f"{len(hard)} base training row(s) repeat validation/KPI rows (the "
                                               f"validate stage would stop the run): {listing(hard)}"))
    elif not train.empty:
        out.append(warned(TRAINING_LEAK_CHECK, f"{len(train)} base training row(s) are near duplicates of "
                                               f"validation/KPI rows: {listing(train, 3)}"))
    else:
        out.append(passed(TRAINING_LEAK_CHECK, "no base training row repeats a validation/KPI row"))
    kpi = result.findings[result.findings["source"] == "kpi"]
    if kpi.empty:
        out.append(passed(KPI_DUPLICATES_CHECK, "no KPI row repeats another"))
    else:
        out.append(warned(KPI_DUPLICATES_CHECK, f"{len(kpi)} KPI row(s) repeat another KPI row and count twice in "
                                                f"FAR ({by_kind(counts['kpi'])}): {listing(kpi, 3)}"))
    board = result.same_board
    if board["kpi_rows"]:
        names = ", ".join(board["boards"][:5]) + (" …" if len(board["boards"]) > 5 else "")
        out.append(warned(SAME_BOARD_CHECK, f"{board['kpi_rows']} of {board['kpi_total']} KPI rows "
                                            f"({100 * board['share']:.1f} %) come from a boardname also in the "
                                            f"training set or mining pool ({names})"))
    else:
        out.append(passed(SAME_BOARD_CHECK, "no KPI boardname occurs in the training set or mining pool"))
    return out


def _mining_pool_check(report: PreflightReport, layout: WorkspaceLayout) -> None:
    """The mining pool's CSV check, streamed chunk by chunk: the same checks and messages as `_csv_check`
    (the first fault in file order: parse and path faults before missing images, as a whole read reports them),
    with every row number counted from the file's start."""

    label, path, images_dir = "mining pool", layout.mining_pool_csv, layout.mining_pool_dir
    if not path.exists():
        report.add(failed(label, f"{path}: file not found"))
        return
    spec = report.spec

    def check() -> CheckResult:
        import numpy as np
        import pandas as pd

        rows = n_pass = n_images = n_missing = 0
        first_missing: tuple[str, str, str, int] | None = None
        suspicious: dict[str, int] = {}
        outside: InputError | None = None
        # Rows whose (input_path, golden_path, object_name) passed in an earlier chunk (64-bit hashes, sorted):
        # their files are not resolved and stat'ed again, so a pool listing the same images many times costs
        # one check per distinct row. A row with a missing image is never remembered: counts stay per row.
        passed_rows = np.zeros(0, dtype=np.uint64)
        for chunk in iter_changenet_csv(path, report.chunk_rows):
            rows += len(chunk)
            if outside is not None:
                continue  # keep parsing: a parse error further down is reported first, as a whole read would
            ident = pd.util.hash_pandas_object(chunk[["input_path", "golden_path", "object_name"]],
                                               index=False).to_numpy()
            fresh = chunk[~np.isin(ident, passed_rows)]
            try:
                check_paths_inside(fresh, images_dir, layout.root, file=path, lights=spec.lights if spec else (),
                                   image_ext=spec.image_ext if spec else "", positions=fresh.index.tolist())
            except InputError as exc:
                outside = exc
                continue
            n_pass += int((chunk["label"] == "PASS").sum())
            for word, n in missing_value_labels(chunk).items():
                suspicious[word] = suspicious.get(word, 0) + n
            if spec is None:
                continue
            n_images += 2 * len(spec.lights) * len(chunk)
            paths = image_paths(fresh, images_dir, spec.lights, spec.image_ext)
            missing = find_missing_images(paths["path"].tolist())
            bad = set(paths.loc[paths["path"].isin(missing), "row"]) if missing else set()
            good = ~fresh.index.isin(list(bad))
            passed_rows = np.union1d(passed_rows, ident[~np.isin(ident, passed_rows)][good])
            n_missing += len(missing)
            if missing and first_missing is None:
                first = paths[paths["path"] == missing[0]].iloc[0]
                first_missing = (missing[0], str(first["light"]), str(first["side"]), int(first["row"]) + 2)
        if outside is not None:
            raise outside
        report.pool_rows = rows
        if spec is None:
            return warned(label, f"{rows} rows; images not checked (spec unreadable)")
        if first_missing is not None:
            miss, light, side, row = first_missing
            raise InputError(f"{n_missing} image file(s) missing, first: {miss} (light {light}, {side} of row {row})",
                             file=path, row=row)
        return _csv_verdict(label, path, rows, n_pass, n_images, spec.lights, suspicious)

    _guard(report, label, check)


def _support_check(report: PreflightReport, kpi: KpiTarget) -> CheckResult:
    name = "KPI set size vs target"
    df = report.frames.get("kpi")
    if df is None:
        return skipped(name, "KPI CSV unreadable")
    n_pass = int((df["label"] == "PASS").sum())
    n_def = len(df) - n_pass
    if n_def == 0:
        return failed(name, "the KPI set has no defect rows: recall (and the KPI) is undefined")
    if n_pass == 0:
        return failed(name, "the KPI set has no PASS rows: FAR is undefined")

    note = support_note(n_pass, kpi)  # the one owner of the rule-of-three arithmetic (a 0 % target included)
    if note:
        return warned(name, note)
    return passed(name, f"{n_pass} PASS rows support FAR claims down to ≈{RULE_OF_THREE_PCT / n_pass:.2g}%")


def _deep_decode(report: PreflightReport, layout: WorkspaceLayout) -> CheckResult:
    from PIL import Image


    name = "images decode (--deep)"
    spec = report.spec
    if spec is None:
        return skipped(name, "spec unreadable")
    roots = {"training": layout.kpi_images, "validation": layout.kpi_images, "kpi": layout.kpi_images,
             "mining_pool": layout.mining_pool_dir}
    def frames() -> Iterator[tuple[str, pd.DataFrame]]:
        yield from ((k, df) for k, df in report.frames.items() if k != "mining_pool")
        if report.pool_rows is not None:  # streamed: the pool is never held whole

            yield from (("mining_pool", df) for df in iter_changenet_csv(layout.mining_pool_csv, report.chunk_rows))

    bad: list[str] = []
    decoded = 0
    with progress() as bar:
        task = bar.add_task("decoding images", total=None, rate="")
        for key, df in frames():
            for path in dict.fromkeys(image_paths(df, roots[key], spec.lights, spec.image_ext)["path"].tolist()):
                try:
                    with Image.open(path) as img:
                        img.load()
                except Exception:  # any decoder failure means a corrupt image
                    bad.append(path)
                decoded += 1
                bar.advance(task)
    if bad:
        return failed(name, f"{len(bad)} image(s) cannot be decoded, first: {bad[0]}")
    return passed(name, f"{decoded} images decoded")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _writable_check(layout: WorkspaceLayout, min_free_bytes: int | None = None) -> CheckResult:
    """Writable, with room for a run: a run that starts here and finds a read-only or full disk fails later,
    resumably, but only after the user has walked away."""
    import os


    name = "workspace writable"
    results, root = os.path.realpath(layout.results_root), os.path.realpath(layout.root)
    if os.path.commonpath([root, results]) != root:
        # A run records workspace-relative paths and re-roots them on a move; a results/ that leads out of
        # the workspace breaks both (its state would live outside, then fail on every resume).
        return failed(name, f"{layout.results_root} resolves outside the workspace ({results}); a run writes "
                            "its state and artefacts there  hint: make results/ a folder inside the workspace")
    target = layout.results_root if layout.results_root.is_dir() else layout.root
    try:
        read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return failed(name, f"{target}: cannot inspect the filesystem ({exc.strerror})")
    if read_only:
        return failed(name, f"{target} is on a read-only file system: results/ cannot be written")
    if not os.access(target, os.W_OK):
        return failed(name, f"{target}: this user may not write there (results/ goes there)")
    # The staged synthetic pool copies every pair once per light; checkpoints, CSVs and reports come on top.
    need = 2 * _dir_bytes(layout.anomalygen_dir) // 2**20 + HEADROOM_MB
    free = free_mb(target)
    if free is not None and min_free_bytes is not None and free < min_free_bytes // 2**20:
        return failed(name, f"only {free} MB free on the device holding {target}; --min-free-disk asks for "
                            f"{min_free_bytes // 2**20} MB")
    if free is not None and free < need:
        return warned(name, f"only {free} MB free on the device holding {target}; a run needs about {need} MB "
                            "(when it fills up, the stage fails: free space and `deft resume`)")
    return passed(name, f"{target}: writable, {free if free is not None else '?'} MB free")


def _iter_workspace_checks(report: PreflightReport, layout: WorkspaceLayout, *, threshold: float,
                           exclude: bool) -> Iterator[None]:

    def spec_check() -> CheckResult:
        report.spec = load_spec(layout.spec_file)
        s = report.spec
        return passed("spec", f"{layout.spec_file.name}: lights {', '.join(s.lights)}, {s.image_ext}, "
                              f"{s.image_width}x{s.image_height}, backbone {s.backbone}")

    _guard(report, "spec", spec_check)
    if report.spec is not None:

        _guard(report, "spec schema", lambda: spec_schema_check(layout, report.spec))  # type: ignore[arg-type]
    yield

    def versions_check() -> CheckResult:

        v = load_versions(layout)
        return passed("container images", f"pyt {v.pyt}; data_services {v.data_services} (from {v.source})")

    _guard(report, "versions.yaml", versions_check)
    yield
    _csv_check(report, "training", "training CSV", layout.train_csv, layout.kpi_images, layout)
    _csv_check(report, "validation", "validation CSV", layout.validation_csv, layout.kpi_images, layout)
    _csv_check(report, "kpi", "KPI CSV", layout.kpi_csv, layout.kpi_images, layout)
    yield
    _mining_pool_check(report, layout)
    _guard(report, "synthetic NG/OK pairs", lambda: _synthetic_check(layout))
    _guard(report, "no validation leakage", lambda: _leakage_check(report, layout))
    yield
    _guard(report, HYGIENE_CHECK, lambda: _hygiene_checks(report, layout, threshold=threshold, exclude=exclude))
    yield


def run_preflight(
    workspace: Path,
    *,
    config: LoopConfig | None = None,
    runner_factory: Callable[[], Runner] | None = None,
    deep: bool = False,
) -> PreflightReport:
    """All checks. `runner_factory` is None when no backend was selected: the backend checks (images,
    credentials, GPU) are then reported as skipped rather than guessed. Read-only for the workspace's data;
    the only writes are the workspace caches under `.deft_cache/` (image hashes, near-duplicate vectors)."""

    threshold = config.near_duplicate_threshold.value if config else SETTINGS["near_duplicate_threshold"].default
    exclude = config.exclude_leaks.value if config else SETTINGS["exclude_leaks"].default

    memory = config.mining_memory.value if config else None
    report = PreflightReport(workspace=workspace)
    report.chunk_rows = chunk_rows_for_budget(parse_memory(memory) if memory else None)
    report.executor = config.mining_executor.value if config else "inprocess"
    if not workspace.exists():
        report.add(failed("workspace", f"{workspace}: does not exist"))
        return report
    if not workspace.is_dir():
        report.add(failed("workspace", f"{workspace}: is a file, not a workspace directory"))
        return report
    layout = WorkspaceLayout.at(workspace)
    report.add(passed("workspace", str(layout.root)))
    min_free = config.min_free_disk.value if config else None
    _guard(report, "workspace writable",
           lambda: _writable_check(layout, parse_memory(min_free) if min_free else None))
    for _ in _iter_workspace_checks(report, layout, threshold=threshold, exclude=exclude):
        pass
    if config is not None:
        _guard(report, "KPI set size vs target", lambda: _support_check(report, config.kpi_target))
    if deep:
        _guard(report, "images decode (--deep)", lambda: _deep_decode(report, layout))
    if runner_factory is None:
        report.add(skipped("backend (images, credentials, GPU)", "skipped: backend not selected"))
    elif (spec := report.spec) is not None:
        batch = config.batch_size.value if config else spec.batch_size
        engine = config.mining_engine.value if config else None
        shown = {c.name for c in report.checks}  # e.g. the spec schema, already checked for every backend
        _guard(report, "backend", lambda: [c for c in runner_factory().preflight(
            layout, spec, batch, mining_engine=engine) if c.name not in shown])
    report.add(skipped("synthetic pool staged", "staged once after confirmation, into results/run_<TS>/synth_pool"))
    return report
