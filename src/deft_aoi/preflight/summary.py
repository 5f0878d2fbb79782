"""The plan a Pre-Flight Summary opens with: what the loop will do, as NVIDIA's recipe lists it before its one
gate (KPI target and iterations first; new or resuming; KPI defect types and counts; synthetic defect types;
images dirs; encoder and backbone file; the mining budget, top-k × targets). Facts only, from what pre-flight
read; the CLI lays them out (cli/views.py) and `deft preflight --json` carries them as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deft_aoi.config import LoopConfig
    from deft_aoi.preflight.checks import PreflightReport
    from deft_aoi.workspace.layout import WorkspaceLayout


@dataclass(frozen=True)
class PlanRow:
    name: str
    value: str


def _src(config: LoopConfig, name: str) -> str:
    field = getattr(config, name)
    return f"{field.value} ({field.source})"


def _counts(counts: dict[str, int]) -> str:
    """`a 3, b 2` largest first (ties by name)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def kpi_label_counts(report: PreflightReport) -> dict[str, int]:
    df = report.frames.get("kpi")
    if df is None:
        return {}
    return {str(k): int(v) for k, v in df["label"].value_counts().items()}


def mining_targets(label_counts: dict[str, int], top_k_per_label: int, lights: int) -> int:
    """At most this many weak targets per iteration: RCA keeps the top_k_per_label weakest rows of each KPI label,
    one target per light image, and routing promotes every one of them to mining (CONTRACTS §3)."""
    return sum(min(top_k_per_label, n) for n in label_counts.values()) * max(lights, 1)


def synthetic_types(layout: WorkspaceLayout) -> str:
    """The defect types defect_spec.jsonl declares (with their counts when it gives them)."""
    from deft_aoi.errors import DeftError
    from deft_aoi.synth.staging import load_defect_spec

    if not layout.defect_spec.is_file():
        return "one type, synthetic_defect (no defect_spec.jsonl)"
    try:
        entries = load_defect_spec(layout.defect_spec)
    except DeftError as exc:
        return f"defect_spec.jsonl unreadable: {exc.message}"
    counts = {e.defect_type: int(getattr(e, "count", 0) or 0) for e in entries}
    if all(counts.values()):
        return _counts(counts)
    return ", ".join(counts)


def _pairs(report: PreflightReport) -> str:
    check = next((c for c in report.checks if c.name == "synthetic NG/OK pairs"), None)
    return "—" if check is None else check.detail.split(",")[0]


def run_words(layout: WorkspaceLayout) -> str:
    """`deft run` always starts a new run (resume is its own command); say so, and what is there already."""
    earlier = sorted(p.name for p in layout.results_root.glob("run_*") if p.is_dir()) if layout.results_root.is_dir() \
        else []
    if not earlier:
        return "new run (results/run_<TS>)"
    return f"new run; {len(earlier)} earlier kept, latest {earlier[-1]} (`deft resume` continues one)"


def plan(report: PreflightReport, config: LoopConfig) -> list[PlanRow]:
    from deft_aoi.mining.params import MineConfig
    from deft_aoi.workspace.layout import WorkspaceLayout

    layout = WorkspaceLayout.at(report.workspace)
    spec = report.spec
    labels = kpi_label_counts(report)
    defects = {k: v for k, v in labels.items() if k != "PASS"}
    lights = len(spec.lights) if spec is not None else 1
    mining = MineConfig.from_loop_config(config)
    if config.mining_engine.value == "data_services":
        encoder = "SigLIP (TAO Data Services, fixed)"
    else:
        setting = config.encoder
        encoder = mining.encoder + ("" if setting.value == mining.encoder else f" ({setting.value}, {setting.source})")
    backbone_file = spec.get("model.backbone.pretrained_backbone_path") if spec is not None else None
    targets = mining_targets(labels, config.top_k_per_label.value, lights)
    top_k = config.top_k_per_target.value
    rows = [
        PlanRow("KPI target", _src(config, "kpi")),
        PlanRow("iterations", f"at most {_src(config, 'max_iterations')} · {run_words(layout)}"),
        PlanRow("training", f"epochs {_src(config, 'num_epochs')} · batch {_src(config, 'batch_size')} · "
                            f"backend {_src(config, 'backend')}"),
        PlanRow("KPI set", "—" if not labels else
                f"{sum(labels.values())} rows: {labels.get('PASS', 0)} PASS, {sum(defects.values())} defect in "
                f"{len(defects)} types"),
        PlanRow("KPI defects", _counts(defects) or "—"),
        PlanRow("synthetic", f"{_pairs(report)} in {layout.anomalygen_dir.relative_to(layout.root)}"),
        PlanRow("synth. types", synthetic_types(layout)),
        PlanRow("images", " · ".join(str(p.relative_to(layout.root)) for p in (
            layout.kpi_images, layout.mining_pool_dir / "images"))),
        PlanRow("encoder", f"{encoder} · mining engine {_src(config, 'mining_engine')}"),
        PlanRow("backbone", "—" if spec is None else f"{spec.backbone} (spec)"),
        PlanRow("backbone file", str(backbone_file) if backbone_file else
                "none: random init (pretrained_backbone_path: null)"),
        PlanRow("mining budget", f"top-{top_k} × ≤ {targets} targets = ≤ {top_k * targets} rows/iteration, "
                                 f"cosine ≥ {config.min_similarity.value:g}"),
    ]
    from deft_aoi.runners.base import GPU_CHECK

    # The backend's own words for what each job gets (docker device ids, Slurm --gpus-per-node, local cuda/cpu)
    # and what TAO is told; absent when the backend was not checked (`deft preflight` without --backend).
    gpus = next((c.detail for c in report.checks if c.name == GPU_CHECK), None)
    if gpus is not None:
        rows.insert(3, PlanRow(GPU_CHECK, gpus))
    return rows
