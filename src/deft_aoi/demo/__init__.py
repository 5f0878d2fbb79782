"""`deft demo-data`: a procedural, deterministic AOI workspace generator (numpy + PIL, no downloads).

Public API: `deft_aoi.demo.generator.generate_workspace(out, *, seed, size, force) -> DemoSummary`.
Modules: scene (vector model of a crop), components (nominal parts), render (rasteriser), defects,
nuisance, samples (one row → image pair), splits (row plan), spec/readme (texts), writer (filesystem).
"""
