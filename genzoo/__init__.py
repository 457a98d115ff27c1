"""genzoo: a modular, plugin-based zoo of deep hierarchical VAEs.

The public API is what this module exports (``__all__``); nothing else is promised. The
interfaces (``genzoo.Cell``, ``genzoo.KINDS`` ...) are imported on first use, with torch: a bare
``import genzoo`` (a plugin module's ``@genzoo.hookimpl``, ``genzoo --version``) loads neither
torch nor the engine.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from genzoo import _moved, interfaces
from genzoo.errors import (
    ComponentTypeError,
    ConfigError,
    DuplicateKeyError,
    GenzooError,
    PluginLoadError,
    RegistryError,
    UnknownKeyError,
    WrongKindError,
)
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    PLUGIN_API_VERSION,
    PluginHookError,
    PluginHost,
    get_host,
    get_registry,
    reset_host,
)
from genzoo.plugin.hookspecs import hookimpl
from genzoo.plugin.registry import Entry, PluginInfo, Registry, component, current_registry, register_modules
from genzoo.plugin.run_info import RunInfo

_moved.install()  # the old import paths of modules that moved, for one release

try:
    __version__ = version("genzoo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


_INTERFACES = tuple(name for name in interfaces.__all__ if name != "RESAMPLE_MODES")
"""The interfaces re-exported here, on first use (they import torch)."""


_LATER_LAYERS = {"load_model": "genzoo.experiment.trained.export"}
"""Public names defined in a layer above this module's, imported by their module's name on first
use: ``genzoo`` sits with the plugin system, which must not import the experiment layer
(tests/test_layers.py reads every ``import`` statement, inside functions too), and a bare
``import genzoo`` must not load torch and the engine. ``importlib`` with a string defers the
import to the first ``genzoo.load_model``, when every layer can be loaded."""


def __getattr__(name: str):
    if name in _INTERFACES:
        value = getattr(interfaces, name)
        globals()[name] = value
        return value
    if name in _LATER_LAYERS:
        value = getattr(importlib.import_module(_LATER_LAYERS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'genzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def create(kind: str, key: str, /, **options):
    """Build the component ``key`` of ``kind`` from the process-wide registry."""
    return get_registry().create(kind, key, **options)


def list_components(pattern: str = "*", kind: str | None = None) -> list[Entry]:
    """Registered components whose key matches ``pattern`` (e.g. ``"nvae.*"``)."""
    return get_registry().list(pattern, kind)


__all__ = [
    *_INTERFACES,
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "PLUGIN_API_VERSION",
    "ComponentSpec",
    "ComponentTypeError",
    "ConfigError",
    "DuplicateKeyError",
    "Entry",
    "GenzooError",
    "PluginHookError",
    "PluginHost",
    "PluginInfo",
    "PluginLoadError",
    "Registry",
    "RegistryError",
    "RunInfo",
    "UnknownKeyError",
    "WrongKindError",
    "__version__",
    "component",
    "create",
    "current_registry",
    "get_host",
    "get_registry",
    "hookimpl",
    "list_components",
    "load_model",
    "register_modules",
    "reset_host",
]
