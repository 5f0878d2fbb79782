"""The import graph of src/deft_aoi, read with `ast` (nothing is imported): no cycle, no upward import.

ONE layer map below says which layer every top-level module or package of deft_aoi belongs to. A module may import
its own layer and the layers under it, never one above. The upward edges that exist today and are being removed are
listed, each with why, in KNOWN_UPWARD; the test also fails when one of them no longer exists, so the list can only
shrink (empty it as the moves land). A new top-level module must be given a layer here before its imports are
checked: the test names it. Every import counts, those inside functions and under TYPE_CHECKING too: a lazy or
type-only import is still a dependency of the importer.

Inside a layer, INSIDE_RULES say which way the arrows go between packages and sub-packages (mining, synth and analysis
never import a backend; the TAO contract and the runner protocol never import a backend; backends do not import each
other; only the session builds the loop's stages, and stages never reach the engine or the store). Edges that break
them today are listed in KNOWN_INSIDE, each with why, and that list too can only shrink.

Imports of deft_aoi's own modules made inside a function body are counted against IN_FUNCTION_CEILING, which only
goes down: the test fails above it and asks for the lower figure below it. Those kept lazy so that `deft --help`
stays fast are not counted: they are the command modules' (LAZY_FOR_HELP).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "deft_aoi"

# Highest layer first. Each entry names top-level modules/packages of deft_aoi (the first dotted part after
# `deft_aoi.`). `api` is the front door (above report/ and loop/);
# `preflight` orchestrates the checks over analysis/mining/runners/synth.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("api",),
    ("report",),
    ("loop",),
    ("preflight",),
    ("analysis",),
    ("mining", "synth", "runners", "demo"),
    ("workspace",),
    ("config", "console", "imaging"),
    ("errors", "io_utils", "secrets", "interrupts", "checks", "textutil", "dotted", "bounded", "__init__"),
)

# (importer module, imported module) pairs that go upward today, each being removed by a part of issue 13. The
# test fails when one of them disappears, so that this list is emptied as the moves land, never left stale.
KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset(
    {
    }
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name → file."""
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The deft_aoi modules `module` imports anywhere in its body (function-level imports included: a lazy import
    is still a dependency). `from pkg import name` counts as an import of `pkg.name` when that is a module, else
    of `pkg`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(path) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set()
        for name in _imported(module, path, known):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            # `import deft_aoi.a.b.C`-style names that are not modules resolve to their longest module prefix.
            while name not in known and "." in name:
                name = name.rpartition(".")[0]
            if name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _layer_of(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return len(LAYERS) - rank
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    edges = set()
    for module, targets in graph.items():
        own = _layer_of(module)
        for target in targets:
            theirs = _layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                edges.add((module, target))
    return edges


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    unmapped = sorted({m for m in graph if _layer_of(m) is None})
    assert not unmapped, f"give these modules a layer in LAYERS of {Path(__file__).name}: {unmapped}"


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    cycles = _cycles(graph)
    assert not cycles, "import cycles (each line one strongly connected set):\n" + "\n".join(
        " ↔ ".join(c) for c in cycles
    )


def test_no_upward_import_beyond_the_known_list(graph: dict[str, set[str]]) -> None:
    new = sorted(_upward(graph) - KNOWN_UPWARD)
    assert not new, "imports from a layer above the importer's own:\n" + "\n".join(f"{a} → {b}" for a, b in new)


def test_known_upward_list_is_not_stale(graph: dict[str, set[str]]) -> None:
    gone = sorted(KNOWN_UPWARD - _upward(graph))
    assert not gone, "KNOWN_UPWARD names edges that no longer exist; remove them:\n" + "\n".join(
        f"{a} → {b}" for a, b in gone
    )


def test_the_checker_sees_a_cycle_and_an_upward_edge() -> None:
    """The graph logic itself: a planted cycle and a planted upward edge are reported (so a pass above means
    something)."""
    planted = {
        "deft_aoi.errors": {"deft_aoi.io_utils"},
        "deft_aoi.io_utils": {"deft_aoi.errors"},
        "deft_aoi.analysis.kpi": {"deft_aoi.loop.engine"},
        "deft_aoi.loop.engine": {"deft_aoi.analysis.kpi"},
        "deft_aoi.report.render": set(),
    }
    assert sorted(map(tuple, _cycles(planted))) == [
        ("deft_aoi.analysis.kpi", "deft_aoi.loop.engine"),
        ("deft_aoi.errors", "deft_aoi.io_utils"),
    ]
    assert _upward(planted) == {("deft_aoi.analysis.kpi", "deft_aoi.loop.engine")}


def test_relative_and_from_imports_resolve_to_modules(tmp_path: Path) -> None:
    known = {"deft_aoi.loop.engine": Path(), "deft_aoi.loop.state": Path(), "deft_aoi.loop": Path()}
    source = tmp_path / "engine.py"
    source.write_text("from . import state\nfrom .state import X\nfrom deft_aoi.loop import nothing\n")
    assert set(_imported("deft_aoi.loop.engine", source, known)) == {"deft_aoi.loop.state", "deft_aoi.loop"}


# (importer prefix, imported prefix, why the arrow may not go that way). A prefix matches the module and its
# sub-modules.
_BACKENDS = ("deft_aoi.runners.docker", "deft_aoi.runners.local", "deft_aoi.runners.slurm", "deft_aoi.runners.fake")
INSIDE_RULES: tuple[tuple[str, str, str], ...] = (
    *((importer, backend, "pure code and mining run on any backend: they never import one")
      for importer in ("deft_aoi.mining", "deft_aoi.synth", "deft_aoi.analysis", "deft_aoi.preflight")
      for backend in (*_BACKENDS, "deft_aoi.runners.factory")),
    *((importer, backend, "the TAO contract and the runner protocol are what the backends share: below them")
      for importer in ("deft_aoi.runners.tao", "deft_aoi.runners.base", "deft_aoi.runners.jobs")
      for backend in (*_BACKENDS, "deft_aoi.runners.factory")),
    *((a, b, "a backend does not import another (runners.factory picks one)")
      for a in _BACKENDS for b in _BACKENDS if a != b),
    *((importer, "deft_aoi.loop.stages", "the engine knows stages through the Stage protocol; the session builds them")
      for importer in ("deft_aoi.loop.engine", "deft_aoi.loop.graph", "deft_aoi.loop.state", "deft_aoi.loop.store",
                       "deft_aoi.loop.results", "deft_aoi.loop.stage_contract", "deft_aoi.loop.artefacts",
                       "deft_aoi.loop.commit", "deft_aoi.loop.apply", "deft_aoi.loop.status_view")),
    *(("deft_aoi.loop.stages", engine_part, "a stage returns a StageOutcome; the engine commits it")
      for engine_part in ("deft_aoi.loop.engine", "deft_aoi.loop.store", "deft_aoi.loop.commit",
                          "deft_aoi.loop.session")),
)

# Edges that break INSIDE_RULES today, with why; the test fails when one disappears (remove it then).
KNOWN_INSIDE: frozenset[tuple[str, str]] = frozenset({
    # the shape encoder reuses the local backend's model and crop loader (encoders work moves them out)
    ("deft_aoi.mining.embedders.shape", "deft_aoi.runners.local.model"),
    ("deft_aoi.mining.embedders.shape", "deft_aoi.runners.local.data"),
    # the embedders pick their torch device through the backend factory's device probe
    ("deft_aoi.mining.embedders", "deft_aoi.runners.factory"),
    # the docker runner runs against the fake docker client when DEFT_DOCKER=fake (CI's stand-in)
    ("deft_aoi.runners.docker.runner", "deft_aoi.runners.fake.docker_client"),
})


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _inside_breaks(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    found = {}
    for module, targets in graph.items():
        for target in targets:
            for importer, imported, why in INSIDE_RULES:
                if _matches(module, importer) and _matches(target, imported):
                    found[(module, target)] = why
    return found


def test_no_import_against_the_direction_inside_a_layer(graph: dict[str, set[str]]) -> None:
    new = {edge: why for edge, why in _inside_breaks(graph).items() if edge not in KNOWN_INSIDE}
    assert not new, "imports against the direction inside a layer:\n" + "\n".join(
        f"{a} → {b}: {why}" for (a, b), why in sorted(new.items()))


def test_known_inside_list_is_not_stale(graph: dict[str, set[str]]) -> None:
    gone = sorted(KNOWN_INSIDE - set(_inside_breaks(graph)))
    assert not gone, "KNOWN_INSIDE names edges that no longer break a rule; remove them:\n" + "\n".join(
        f"{a} → {b}" for a, b in gone)


def test_the_inside_rules_see_a_planted_edge() -> None:
    planted = {"deft_aoi.mining.knn": {"deft_aoi.runners.docker.runner"},
               "deft_aoi.loop.engine": {"deft_aoi.loop.stages.model"},
               "deft_aoi.loop.stages.data": {"deft_aoi.loop.store", "deft_aoi.loop.artefacts"}}
    assert set(_inside_breaks(planted)) == {("deft_aoi.mining.knn", "deft_aoi.runners.docker.runner"),
                                            ("deft_aoi.loop.engine", "deft_aoi.loop.stages.model"),
                                            ("deft_aoi.loop.stages.data", "deft_aoi.loop.store")}


# In-function imports of deft_aoi modules, outside LAZY_FOR_HELP. Lower it when the count falls; never raise it:
# import at the top of the module instead (a module only the loop imports may import pandas-heavy ones at the top).
IN_FUNCTION_CEILING = 297  # 334 when counted first (issue 30); 344 after the wave-2 merges, then preflight and
# leakage imported the package at the top (they are loaded only once a pre-flight runs, never by `deft --help`);
# 303 → 297 with mining as one pass (api.py and mining/engine.py import at the top)
# The command modules: `deft --help` imports them all, so their bodies import the package lazily (< 0.5 s).
LAZY_FOR_HELP: frozenset[str] = frozenset({
    "deft_aoi.cli.__main__", "deft_aoi.cli.app", "deft_aoi.cli.backbone_cmd", "deft_aoi.cli.demo_cmd",
    "deft_aoi.cli.init_cmd", "deft_aoi.cli.kpi_cmd", "deft_aoi.cli.mine_cmd", "deft_aoi.cli.options",
    "deft_aoi.cli.platforms_cmd", "deft_aoi.cli.preflight_cmd", "deft_aoi.cli.report_cmd", "deft_aoi.cli.run_cmd",
    "deft_aoi.cli.settings", "deft_aoi.cli.status_cmd", "deft_aoi.cli.views",
})


def _in_function_imports(path: Path) -> int:
    """Import statements of deft_aoi modules (absolute or relative) inside any function body, each counted once."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    seen: set[int] = set()
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            own = (isinstance(node, ast.ImportFrom) and (node.level > 0 or _matches(node.module or "", PACKAGE))) or (
                isinstance(node, ast.Import) and any(_matches(a.name, PACKAGE) for a in node.names))
            if own:
                seen.add(id(node))
    return len(seen)


def _in_function_counts() -> dict[str, int]:
    return {module: n for module, path in _modules().items() if (n := _in_function_imports(path))}


def test_in_function_imports_of_the_package_only_go_down() -> None:
    counts = _in_function_counts()
    total = sum(n for module, n in counts.items() if module not in LAZY_FOR_HELP)
    top = sorted(((n, m) for m, n in counts.items() if m not in LAZY_FOR_HELP), reverse=True)[:8]
    assert total <= IN_FUNCTION_CEILING, (
        f"{total} in-function imports of deft_aoi modules (ceiling {IN_FUNCTION_CEILING}): import at module level "
        "instead; most in " + ", ".join(f"{m} ({n})" for n, m in top))
    assert total == IN_FUNCTION_CEILING, f"down to {total}: lower IN_FUNCTION_CEILING to {total}"


def test_the_lazy_for_help_list_names_command_modules() -> None:
    modules = _modules()
    assert not LAZY_FOR_HELP - set(modules), sorted(LAZY_FOR_HELP - set(modules))
    assert all(_matches(m, "deft_aoi.cli") for m in LAZY_FOR_HELP)


def test_in_function_imports_are_counted_once_each(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom deft_aoi import errors\n\ndef f():\n    import json\n"
                      "    from deft_aoi.io_utils import x\n    def g():\n        from . import y\n"
                      "        import deft_aoi.config\n")
    assert _in_function_imports(source) == 3
