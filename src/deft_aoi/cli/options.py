"""Help texts of the command options that are not loop settings (those are declared on config.LoopConfig)."""

WORKSPACE_HELP = "The customer workspace (CONTRACTS §1 layout)."
RUN_HELP = "A run id (run_YYYYMMDD_HHMMSS) or path; default: the latest run of the workspace."
