"""Help texts shared by several commands."""

WORKSPACE_HELP = "The customer workspace (CONTRACTS §1 layout)."
BACKEND_HELP = "Where heavy work runs: local (in-process PyTorch), docker (TAO containers), fake (CI stand-in)."
RUN_HELP = "A run id (run_YYYYMMDD_HHMMSS) or path; default: the latest run of the workspace."
MINING_ENGINE_HELP = "builtin (on the host) | data_services (TAO Data Services containers; docker/fake backends)."
NO_EXCLUDE_HELP = ("Do not exclude mining-pool/synthetic rows that repeat validation/KPI rows: pre-flight fails "
                   "and names them instead.")
NEAR_DUPLICATE_HELP = "Near-duplicate cut-off: min(input, golden) pixel cosine [default: 0.998]."
