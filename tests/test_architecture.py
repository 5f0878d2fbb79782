"""The import graph of src/deft_aoi, read with `ast` (nothing is imported): no cycle, no upward import.

ONE layer map below says which layer every top-level module or package of deft_aoi belongs to. A module may import
its own layer and the layers under it, never one above. The upward edges that exist today and are being removed are
listed, each with why, in KNOWN_UPWARD; the test also fails when one of them no longer exists, so the list can only
shrink (empty it as the moves land). A new top-level module must be given a layer here before its imports are
checked: the test names it. Every import counts, those inside functions and under TYPE_CHECKING too: a lazy or
type-only import is still a dependency of the importer.
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
