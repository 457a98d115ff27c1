"""The package reads by layer, and its imports agree: every module of ``genzoo/`` belongs to one
layer (by its folder), imports only its own layer and those below it, and no chain of imports
leads back to where it started. The layers, lowest first, are written here once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genzoo"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors", ("genzoo.errors",)),
    ("io", ("genzoo.io",)),
    ("machine", ("genzoo.machine",)),
    ("interfaces", ("genzoo.interfaces",)),
    ("plugin", ("genzoo.plugin", "genzoo._moved", "genzoo")),
    ("layers", ("genzoo.layers",)),
    ("testing", ("genzoo.testing",)),
    ("engine", ("genzoo.engine",)),
    ("experiment", ("genzoo.experiment",)),
    ("cli", ("genzoo.cli",)),
)
"""(layer, module prefixes), lowest first. ``genzoo`` itself (its ``__init__``: the public names
of the plugin system) sits with the plugin system; the conformance kit (``genzoo.testing``)
checks components and needs no engine."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"{module} is in no layer: add its folder to LAYERS"
    return rank


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The genzoo modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def test_every_module_imports_only_its_layer_and_those_below(graph):
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module) and target != "genzoo"
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle(graph):
    """Module-level imports only: an import inside a function runs when it is called, after
    both modules are loaded, so it cannot make a module see another half-initialized."""
    top_level = {}
    for name in graph:
        path = next(p for p in PACKAGE.rglob("*.py") if module_name(p) == name)
        tree = ast.parse(path.read_text())
        body_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = set()
        for node in body_imports:
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        top_level[name] = (names & set(graph)) - {name}
    # a package's __init__ importing its own submodules is how packages re-export: not a cycle
    edges = {
        m: {t for t in targets if not (t.startswith(m + ".") or m.startswith(t + "."))}
        for m, targets in top_level.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_tree_has_no_loose_module_beside_the_layers():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "_moved.py", "cli.py", "errors.py"], loose
