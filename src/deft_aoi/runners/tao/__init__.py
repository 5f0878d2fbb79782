"""THE TAO contract: spec loading/render/validation, the command line, outputs, run-time rules, schema snapshots,
pre-flight rows and versions. Every backend reads TAO through this package."""
