"""Help texts shared by several commands."""

WORKSPACE_HELP = "The customer workspace (CONTRACTS §1 layout)."
BACKEND_HELP = "Where heavy work runs: local (in-process PyTorch), docker (TAO containers), fake (CI stand-in)."
RUN_HELP = "A run id (run_YYYYMMDD_HHMMSS) or path; default: the latest run of the workspace."
MINING_ENGINE_HELP = "builtin (on the host) | data_services (TAO Data Services containers; docker/fake backends)."
