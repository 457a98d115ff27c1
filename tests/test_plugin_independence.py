"""Plugins do not import each other: each built-in plugin package (plugins/<name>/) loads
without any other, so a user can leave one out and a third party can copy one as a template.
What several plugins share lives in the core (genzoo.layers.composition, genzoo.layers.activations,
genzoo.layers.cpu_kernels, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PACKAGES = sorted(p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module an import statement of ``path`` names, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "genzoo_plugins":  # from genzoo_plugins import nvae
                found += [(node.lineno, f"genzoo_plugins.{alias.name}") for alias in node.names]
    return found


def test_the_scan_sees_a_cross_plugin_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom genzoo_plugins.nvae.activations import elu\nfrom genzoo_plugins import data\n"
    )
    assert imported_modules(module) == [
        (1, "os"),
        (2, "genzoo_plugins.nvae.activations"),
        (3, "genzoo_plugins"),
        (3, "genzoo_plugins.data"),
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_plugin_imports_no_other_plugin(package):
    assert len(PACKAGES) >= 3, PACKAGES  # nvae, baselines, data at least: the scan found them
    offending = []
    for path in sorted((PLUGINS / package).rglob("*.py")):
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "genzoo_plugins" and len(parts) > 1 and parts[1] != package:
                offending.append(f"{path.relative_to(PLUGINS.parent)}:{line} imports {module}")
    assert offending == [], (
        "plugins must not import each other (move the shared piece to genzoo/):\n" + "\n".join(offending)
    )
