from __future__ import annotations

import importlib
import sys

import pytest
from example_plugin import forget_example, install_example

import genzoo


@pytest.fixture
def fresh_host(monkeypatch):
    """A process-wide plugin host that is rebuilt on first use and discarded afterwards."""
    genzoo.reset_host(None)
    yield
    genzoo.reset_host(None)


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A fresh folder on ``sys.path`` standing in for ``site-packages``; modules imported from
    it are forgotten afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(site)):
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def example(site_dir, monkeypatch):
    """The example third-party plugin (``examples/genzoo-plugin-example``), discoverable as an
    installed distribution for one test; yields its version."""
    monkeypatch.delenv(genzoo.DISABLE_AUTOLOAD_ENV, raising=False)
    yield install_example(site_dir, monkeypatch)
    forget_example()
