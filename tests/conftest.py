from __future__ import annotations

import importlib
import sys

import pytest

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
