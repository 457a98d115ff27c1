"""The example third-party plugin (``examples/genzoo-plugin-example``) made importable and
discoverable for a test, as if ``pip install`` had put it into ``site-packages``: its ``src``
folder on ``sys.path`` and a ``genzoo_plugin_example-<version>.dist-info`` with its entry point
in a site folder. Nothing about discovery is mocked."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from plugin_fixtures import make_distribution

import genzoo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = ROOT / "examples" / "genzoo-plugin-example"
EXAMPLE_SRC = EXAMPLE_DIR / "src"
EXAMPLE_DIST = "genzoo-plugin-example"
EXAMPLE_MODULE = "genzoo_vdvae"
EXAMPLE_PLUGIN = "vdvae"  # the entry point's name: the plugin's name in genzoo


def example_version() -> str:
    """The version in the example's ``pyproject.toml``."""
    text = (EXAMPLE_DIR / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    assert match, "no version in examples/genzoo-plugin-example/pyproject.toml"
    return match.group(1)


def install_example(site: Path, monkeypatch) -> str:
    """Make the example discoverable for one test: its metadata in ``site`` (a folder already on
    ``sys.path``, e.g. the ``site_dir`` fixture) and its sources on ``sys.path``. Returns the
    version. Pair with :func:`forget_example` after the test."""
    version = example_version()
    make_distribution(site, EXAMPLE_DIST, version, {}, {EXAMPLE_PLUGIN: EXAMPLE_MODULE})
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    return version


def forget_example() -> None:
    """Drop the example's modules from ``sys.modules`` (its monitor keeps per-process state)."""
    for name in [n for n in sys.modules if n == EXAMPLE_MODULE or n.startswith(EXAMPLE_MODULE + ".")]:
        del sys.modules[name]


def loaded_host() -> genzoo.PluginHost:
    """What ``genzoo`` loads at start-up: the built-in plugins, then the installed ones."""
    host = genzoo.PluginHost()
    host.load_builtin()
    host.load_entry_points()
    return host
