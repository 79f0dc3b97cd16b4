"""The import rule of docs/architecture.md, over every import in src/sisr (module level and deferred).

cli -> experiments -> training / evaluation -> inference -> weights -> models -> metrics -> data -> utils -> errors;
imports run downwards (or within a package) only, and no modules import each other in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LAYERS = [["sisr.errors"], ["sisr.utils"], ["sisr.data"], ["sisr.metrics"], ["sisr.models"], ["sisr.weights"],
          ["sisr.inference"], ["sisr.training", "sisr.evaluation"], ["sisr.experiments", "sisr.serve"], ["sisr.cli"]]
RANK = {pkg: rank for rank, pkgs in enumerate(LAYERS) for pkg in pkgs}
SIDEWAYS = {("sisr.training", "sisr.evaluation")}  # a finished run scores its test sets (training/scoring.py)


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "sisr").rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The sisr modules ``name`` imports anywhere in its code (``from pkg import mod`` -> ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("sisr") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(name: str) -> str | None:
    return next((p for p in RANK if name == p or name.startswith(p + ".")), None)


def test_the_graph_sees_deferred_imports():
    assert "sisr.inference.forward" in GRAPH["sisr.evaluation.protocol"]  # imported inside _forward
    assert "sisr.utils.device" in GRAPH["sisr.utils.memory"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downwards(name):
    own = _package(name)
    if own is None:  # sisr itself, sisr.__main__
        return
    upward = [t for t in sorted(GRAPH[name]) if _package(t) not in (None, own) and RANK[_package(t)] >= RANK[own]
              and (own, _package(t)) not in SIDEWAYS]
    assert not upward, f"{name} imports {upward}, which are not below {own} (docs/architecture.md)"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
