"""genzoo: a modular, plugin-based zoo of deep hierarchical VAEs.

The public API is what this module exports (``__all__``); nothing else is promised.
"""

from importlib.metadata import PackageNotFoundError, version

from genzoo.discovery import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    PLUGIN_API_VERSION,
    PluginHookError,
    PluginHost,
    get_host,
    get_registry,
    reset_host,
)
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
from genzoo.hookspecs import hookimpl
from genzoo.interfaces import (
    KINDS,
    Cell,
    ChannelGate,
    GateLayer,
    GroupInfo,
    Hierarchy,
    HierarchyOutput,
    ImageDataset,
    LatentGroup,
    LatentOutput,
    Metric,
    OutputLikelihood,
    Regularizer,
    TrainProgress,
)
from genzoo.registry import Entry, PluginInfo, Registry, current_registry, register_modules
from genzoo.run_info import RunInfo
from genzoo.spec import ComponentSpec

try:
    __version__ = version("genzoo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def create(kind: str, key: str, /, **options):
    """Build the component ``key`` of ``kind`` from the process-wide registry."""
    return get_registry().create(kind, key, **options)


def list_components(pattern: str = "*", kind: str | None = None) -> list[Entry]:
    """Registered components whose key matches ``pattern`` (e.g. ``"nvae.*"``)."""
    return get_registry().list(pattern, kind)


__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PLUGIN_API_VERSION",
    "Cell",
    "ChannelGate",
    "ComponentSpec",
    "ComponentTypeError",
    "ConfigError",
    "DuplicateKeyError",
    "Entry",
    "GateLayer",
    "GenzooError",
    "GroupInfo",
    "Hierarchy",
    "HierarchyOutput",
    "ImageDataset",
    "LatentGroup",
    "LatentOutput",
    "Metric",
    "OutputLikelihood",
    "PluginHookError",
    "PluginHost",
    "PluginInfo",
    "PluginLoadError",
    "Registry",
    "RegistryError",
    "Regularizer",
    "RunInfo",
    "TrainProgress",
    "UnknownKeyError",
    "WrongKindError",
    "__version__",
    "create",
    "current_registry",
    "get_host",
    "get_registry",
    "hookimpl",
    "list_components",
    "register_modules",
    "reset_host",
]
