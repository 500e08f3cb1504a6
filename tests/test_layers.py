"""The import graph of the installed packages follows the layers, one way.

Layers, bottom to top (a module may import its own package and any lower
layer, never a higher one and never a peer package of its own layer):

0. ``suite.core`` (and the ``suite`` package root): errors, registries,
   settings, sources, zoo, training, stores, predictor protocol, records;
1. ``compression``: compressors and deployment backends;
2. ``attacks``, ``fingerprints``, ``reports``: stages and views (peers);
3. ``suite.app``: pipeline, CLI, grid.

The graph is read from the source files of the packages as installed (AST,
every ``import`` statement including those inside functions), not from a
list typed by hand.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

# unit -> layer; a unit is a package (or the app / core part of ``suite``)
LAYERS: dict[str, int] = {"suite.core": 0, "suite": 0, "compression": 1, "attacks": 2, "fingerprints": 2,
                          "reports": 2, "suite.app": 3}
TOP_PACKAGES = ("suite", "compression", "attacks", "fingerprints", "reports")


def unit_of(module: str) -> str | None:
    """The layer unit a dotted module name belongs to (None: not ours)."""
    for prefix in ("suite.core", "suite.app"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    if module == "suite.__main__":
        return "suite.app"  # ``python -m suite`` is the command line
    top = module.split(".")[0]
    return top if top in TOP_PACKAGES else None


def package_files() -> dict[str, Path]:
    """module name -> source file of every module of the installed packages."""
    out: dict[str, Path] = {}
    for top in TOP_PACKAGES:
        spec = importlib.util.find_spec(top)
        assert spec is not None and spec.submodule_search_locations, f"{top} is not installed"
        for root in map(Path, spec.submodule_search_locations):
            for f in root.rglob("*.py"):
                parts = (top, *f.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = f
    return out


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in the file, at any depth."""
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            # ``from suite import app`` imports the submodule suite.app
            found += [(f"{name}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return found


def graph() -> list[tuple[str, str, str, int]]:
    """``(importer, imported, file, line)`` edges between our modules."""
    files = package_files()
    edges = []
    for module, path in files.items():
        for name, line in imports_of(module, path):
            if unit_of(name) is None:
                continue
            # ``from pkg import name`` where name is an attribute, not a module: keep the package
            while name not in files and "." in name:
                name = name.rsplit(".", 1)[0]
            edges.append((module, name, str(path), line))
    return edges


def test_graph_is_read_from_the_installed_sources():
    edges = graph()
    assert len(package_files()) > 100
    # sanity: known downward edges are seen, including imports inside functions
    assert any(a == "suite.app.pipeline" and b.startswith("compression") for a, b, _, _ in edges)
    assert any(a.startswith("fingerprints") and b.startswith("suite.core") for a, b, _, _ in edges)


def test_no_upward_or_peer_imports():
    bad = []
    for importer, imported, path, line in graph():
        a, b = unit_of(importer), unit_of(imported)
        assert a is not None and b is not None
        if a == b:
            continue
        if LAYERS[b] > LAYERS[a]:
            bad.append(f"{path}:{line}: {importer} (layer {LAYERS[a]}) imports {imported} (layer {LAYERS[b]})")
        elif LAYERS[b] == LAYERS[a] and {a, b} != {"suite", "suite.core"}:
            bad.append(f"{path}:{line}: {importer} imports its peer {imported} (layer {LAYERS[a]})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_cycles_between_units():
    adj: dict[str, set[str]] = {}
    for importer, imported, _, _ in graph():
        a, b = unit_of(importer), unit_of(imported)
        if a != b:
            adj.setdefault(a, set()).add(b)  # type: ignore[arg-type]
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in adj.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle between layers: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in list(adj):
        if node not in state:
            visit(node, [])


def test_package_root_imports_nothing_of_ours():
    files = package_files()
    assert [n for n, _ in imports_of("suite", files["suite"]) if unit_of(n)] == []
