"""What to tell the user after a hard stop (CONTRACTS §5), by kind: the `fix` of the run's failure record."""

from __future__ import annotations

HARD_STOP_FIXES = {
    "leakage": "remove the leaked rows (validation/KPI samples) from the mining pool or synthetic pool, "
    "then start a new run with `deft run`",
    "synth_changed": "restore the synthetic pool as it was, or start a new run (it stages the pool afresh)",
    "synth_missing": "supply the synthetic NG/OK pairs under augmentation/anomalygen/, then start a new run",
    "synth_unpaired": "give every NG image an OK partner with the same stem, then start a new run",
    "silent_drop": "this is a bug or a corrupted dataset dir; inspect the iteration's dataset/ and report it",
    "csv_validation": "fix the rows named above, then start a new run",
    "missing_images": "restore the missing images named above, then start a new run",
    "kpi_unreachable": "the KPI set cannot meet the recall constraint at any threshold; check its labels",
    "gpu_mismatch": "lower dataset.classify.batch_size for this GPU, then start a new run",
}

INTERRUPTED_FIX = "`deft resume` continues from this stage"
FAILED_FIX = "fix the cause, then `deft resume`"
BETWEEN_STAGES_FIX = "`deft resume` continues with the next stage"


def fix_for(kind: str, *, hard: bool, interrupted: bool) -> str | None:
    if interrupted:
        return INTERRUPTED_FIX
    return HARD_STOP_FIXES.get(kind) if hard else FAILED_FIX
