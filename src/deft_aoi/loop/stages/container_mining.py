"""The mine stage's access to containers for the `data_services` mining engine (mining/data_services.py): the
image from versions.yaml, only the known secrets (HF_TOKEN for SigLIP), the run's job labels and timeout."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deft_aoi.loop.stage_contract import StageContext
    from deft_aoi.mining.data_services import DataServicesAccess


def data_services_access(ctx: StageContext) -> DataServicesAccess:
    from deft_aoi.mining.data_services import DataServicesAccess
    from deft_aoi.runners.tao.versions import load_versions
    from deft_aoi.secrets import SECRET_NAMES, load_env_file

    s = ctx.services
    env = {k: v for k, v in load_env_file(s.workspace.env_file).items() if k in SECRET_NAMES}
    return DataServicesAccess(runner=s.runner, workspace=s.workspace, image=load_versions(s.workspace).data_services,
                              env=env, labels=dict(s.labels), timeout_for=s.config.job_timeout_s, say=s.say)
