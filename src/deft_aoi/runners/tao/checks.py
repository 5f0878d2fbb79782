"""Pre-flight rows for TAO's run-time rules (`tao_rules`): one CheckResult per rule, each naming its source.

The facts come from the workspace as the docker backend will hand it to TAO: the baseline spec rendered as a
train job renders it, merged over the schema defaults of the pinned image's release, and the three base CSVs as
written (TAO reads them without deft's label normalisation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deft_aoi.checks import CheckResult, failed, passed, skipped, warned
from deft_aoi.errors import DeftError
from deft_aoi.runners.tao import rules as tao_rules

if TYPE_CHECKING:
    from deft_aoi.runners.gpus import GpuPlan
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout

PREFIX = "TAO rule: "


def as_check(result: tao_rules.RuleResult) -> CheckResult:
    detail = f"{result.message} · source: {result.source}"
    if not result.applies:
        return skipped(PREFIX + result.rule, f"not applicable ({result.message}) · source: {result.source}")
    if result.warns:
        return warned(PREFIX + result.rule, detail)
    return (passed if result.ok else failed)(PREFIX + result.rule, detail)


def rendered_train_spec(workspace: WorkspaceLayout, spec: ChangeNetSpec, image: str,
                        batch_size: int | None, gpu_plan: GpuPlan | None = None) -> dict[str, Any]:
    """The baseline train job's spec, exactly as `tao_commands.train_job` would write it (nothing written): with
    the runner's GPU count as train.num_gpus, so the per-GPU batch rules count the job's real GPUs."""
    from deft_aoi.runners.tao.commands import TaoContext, self_contained_overrides
    from deft_aoi.runners.tao.spec import render_spec

    ctx = TaoContext(workspace=workspace, spec=spec, image=image, env={}, batch_size=batch_size, gpu_plan=gpu_plan)
    probe = workspace.results_root / "preflight"
    return render_spec(spec, {**self_contained_overrides(ctx, probe), "train.results_dir": str(probe)})


def tao_rule_checks(workspace: WorkspaceLayout, spec: ChangeNetSpec, *, pyt_image: str, ds_image: str | None,
                    batch_size: int | None, mining_engine: str | None, real_tao: bool,
                    gpu_plan: GpuPlan | None = None) -> list[CheckResult]:
    """Every TAO rule as a pre-flight row. `real_tao` adds the rules only a real container meets (a staged
    backbone file); the fake and local backends have no backbone to load."""
    from deft_aoi.runners.tao.spec import effective_spec

    try:
        doc = effective_spec(rendered_train_spec(workspace, spec, pyt_image, batch_size, gpu_plan), image=pyt_image,
                             source=spec.path)
    except DeftError as exc:
        return [failed(PREFIX + "spec", exc.render())]
    results = [*tao_rules.spec_rules(doc), *tao_rules.loop_rules(doc)]
    datasets = []
    unread = []
    for name, path in (("training", workspace.train_csv), ("validation", workspace.validation_csv),
                       ("KPI", workspace.kpi_csv)):
        try:
            datasets.append(tao_rules.dataset_facts(name, str(path)))
        except (OSError, UnicodeDecodeError):
            unread.append(str(path))  # the workspace checks above already name it
    results.extend(tao_rules.data_rules(doc, datasets))
    results.append(tao_rules.paths_rule({"workspace": str(workspace.root),
                                         "results directory": str(workspace.results_root)}))
    if real_tao:
        results.append(tao_rules.backbone_rule(doc, str(workspace.root)))
    results.append(tao_rules.mining_engine_rule(mining_engine, ds_image))
    checks = [as_check(r) for r in results]
    if unread:
        checks.append(warned(PREFIX + "data", f"not checked, unreadable: {', '.join(unread)}"))
    return checks


def spec_schema_check(workspace: WorkspaceLayout, spec: ChangeNetSpec, *, image: str | None = None,
                      batch_size: int | None = None, gpu_plan: GpuPlan | None = None) -> CheckResult:
    """Pre-flight row: the baseline train spec as the loop would render it passes TAO's schema, for every
    backend (the local one reads the same spec: an unknown key must fail before anything starts, not at train).
    `image` picks the schema snapshot; None = the workspace's versions.yaml (or the package default)."""
    from deft_aoi.runners.tao.schema import snapshot_for_image
    from deft_aoi.runners.tao.spec import check_schema

    if image is None:
        from deft_aoi.runners.tao.versions import load_versions

        try:
            image = load_versions(workspace).pyt
        except DeftError:
            image = None  # versions.yaml has its own check; the default schema applies meanwhile
    snapshot, _ = snapshot_for_image(image)
    try:
        check_schema(rendered_train_spec(workspace, spec, image or "", batch_size, gpu_plan), workspace.root,
                     source=spec.path,
                     image=image)
    except DeftError as exc:
        return failed("spec schema", exc.render())
    return passed("spec schema", f"{spec.path.name} matches TAO {snapshot.release}'s Visual ChangeNet "
                                 f"ExperimentConfig ({snapshot.source})")
