"""A plugin under test: the registry it is checked in and the keys it registers."""

from __future__ import annotations

from typing import NamedTuple

from genzoo.plugin.discovery import PluginHost
from genzoo.plugin.registry import Registry


class PluginUnderTest(NamedTuple):
    registry: Registry
    keys: list[str]


def load_plugin(module: str, *, name: str | None = None, builtins: bool = True) -> PluginUnderTest:
    """A fresh registry holding the built-in plugins (unless ``builtins`` is false) and the plugin
    module ``module``, imported by name as an experiment file's ``plugins:`` entry is (so the
    plugin need not be installed), with the keys that module registers, sorted by kind and key::

        registry, keys = genzoo.testing.load_plugin("genzoo_vdvae")

    The process-wide registry is left alone.
    """
    host = PluginHost()
    if builtins:
        host.load_builtin()
    host.load_module(module, source="python", name=name)
    keys = [entry.key for entry in host.registry if entry.plugin.module == module]
    return PluginUnderTest(host.registry, keys)
