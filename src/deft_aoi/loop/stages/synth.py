"""Stage the customer's pre-generated synthetic pairs ONCE per run (CONTRACTS §3 step 3, §4)."""

from __future__ import annotations

from deft_aoi.loop.results import Counts, IterationValues
from deft_aoi.loop.stage_contract import CatalogDir, StageContext, StageOutcome
from deft_aoi.synth.staging import label_counts_text, stage_synth_pool
from deft_aoi.workspace.changenet_csv import read_changenet_csv


class StageSynthPool(CatalogDir):
    name = "stage_synth"
    in_place = True  # the staged rows name their own directory, so they are written where they stay
    reads = ()
    # Hashed at commit; resume refuses a run whose staged pool changed since (artefacts.changed_outputs).
    writes = ("stage_synth.manifest", "stage_synth.source_pool", "stage_synth.source_pool_csv",
              "stage_synth.sdg_rows")

    def run(self, ctx: StageContext) -> StageOutcome:
        s = ctx.services
        pool = read_changenet_csv(s.workspace.mining_pool_csv)
        manifest = stage_synth_pool(s.workspace, s.run.root, s.spec, pool)
        n_synth = int(manifest.counts["pairs"])
        return StageOutcome(
            summary=f"staged {n_synth} synthetic pairs "
                    f"({label_counts_text(manifest.labels, manifest.declared_types)}) + {len(pool)} "
                    "mining-pool rows",
            updates=IterationValues(counts=Counts(synthetic_pairs=n_synth, mining_pool_rows=len(pool))),
        )

