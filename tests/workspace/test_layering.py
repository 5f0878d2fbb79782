"""workspace/ is the data layer: it imports nothing that orchestrates (pre-flight moved up to preflight/), and
loop/ renders no report (the front door hands the engine its after-iteration hook)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "deft_aoi"


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deft_aoi."):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("deft_aoi."))
        found[str(path.relative_to(SRC))] = names
    return found


def test_workspace_imports_nothing_above_the_data_layer() -> None:
    above = ("analysis", "mining", "synth", "preflight", "loop", "report", "cli", "api", "demo")
    # workspace/spec_file.py → runners.tao_schema is the TAO-contract split's to move (issue 13, part C).
    allowed = {"deft_aoi.runners.tao_schema"}
    for module, names in _imports("workspace").items():
        bad = {n for n in names if n.split(".")[1] in above or (n.split(".")[1] == "runners" and n not in allowed)}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_loop_does_not_import_report_or_the_front_door() -> None:
    for module, names in _imports("loop").items():
        bad = {n for n in names if n.split(".")[1] in ("report", "cli", "api")}
        assert not bad, f"{module} imports {sorted(bad)}"
