"""Plugin discovery and the plugin host (a pluggy ``PluginManager`` plus the registry).

Plugins are found in three places, in this order:

1. the built-in plugins, :data:`genzoo_plugins.BUILTIN_PLUGINS` (``GENZOO_REGISTRY_FILE`` names
   a YAML file listing other modules to load instead);
2. installed packages, through the entry-point group ``genzoo.plugins``, loaded by pluggy's
   ``load_setuptools_entrypoints`` (skipped when the environment variable
   ``GENZOO_DISABLE_PLUGIN_AUTOLOAD`` is set, as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``);
3. plugin modules an experiment file names under ``plugins:`` (:meth:`PluginHost.load_module`).

A plugin is a module with ``@genzoo.hookimpl`` functions. It may declare the plugin-API
version it was written for as ``GENZOO_PLUGIN_API = 1``; a mismatch is refused at load time.
Every plugin, wherever found, is registered through :meth:`PluginManager.register`, which adds
genzoo's checks and messages to pluggy's; every hook is called through pluggy.

Loading the plugins imports their component modules, and with them torch; ``genzoo list`` reads
a cached listing instead while nothing it came from has changed (:func:`component_listing`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import sysconfig
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import yaml

from genzoo.errors import GenzooError, PluginLoadError
from genzoo.io.atomic import atomic_write_text
from genzoo.plugin import hookspecs
from genzoo.plugin.registry import PluginInfo, Registry, matching_entries

ENTRY_POINT_GROUP = "genzoo.plugins"
DISABLE_AUTOLOAD_ENV = "GENZOO_DISABLE_PLUGIN_AUTOLOAD"
REGISTRY_FILE_ENV = "GENZOO_REGISTRY_FILE"
PLUGIN_API_VERSION = 1
"""The plugin API this genzoo provides; bumped on any incompatible change of hooks or kinds."""


class PluginHookError(GenzooError):
    """A plugin's hook implementation raised; the message names the plugin."""


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager, with genzoo's checks on every plugin it registers, however the
    plugin was found (pluggy's own ``load_setuptools_entrypoints`` registers through
    :meth:`register` too, as pytest's ``PytestPluginManager`` overrides it): the plugin-API
    handshake, misspelt hooks refused with the closest names, and errors naming the plugin.

    :param registry: the registry each plugin's ``genzoo_register`` hook fills.
    """

    def __init__(self, registry: Registry) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.registry = registry
        self.infos: dict[str, PluginInfo] = {}
        """Where each registered plugin came from, by name."""
        self.provenance: dict[str, PluginInfo] = {}
        """Where the plugins that pluggy's loader registers by name alone come from (noted by
        :meth:`PluginHost.load_entry_points` before it loads them)."""

    def register(self, plugin: Any, name: str | None = None, *, info: PluginInfo | None = None) -> str | None:
        """Register ``plugin`` (a module or any object with hook implementations) and let it fill
        the registry: its ``genzoo_register`` hook is called right away, on its own
        implementations only.

        :param info: where the plugin came from; without it, what :attr:`provenance` notes for
            ``name``, or else a plugin registered from code (``source="python"``).
        :returns: the plugin's name, or None if this very plugin is registered already.
        """
        if info is None:
            name = name or self.get_canonical_name(plugin)
            info = self.provenance.get(name) or PluginInfo(
                name=name, source="python", module=getattr(plugin, "__name__", "")
            )
        if info.name in self.infos:
            if self.get_plugin(info.name) is plugin:
                return None
            raise PluginLoadError(
                f"two plugins are named {info.name!r}: {self.infos[info.name].describe()} and {info.describe()}"
            )
        if self.is_registered(plugin):  # the same module reached again under another name
            return None
        wanted = getattr(plugin, "GENZOO_PLUGIN_API", None)
        if wanted is not None and wanted != PLUGIN_API_VERSION:
            raise PluginLoadError(
                f"plugin {info.describe()} needs genzoo plugin API {wanted!r}, but this genzoo "
                f"provides API {PLUGIN_API_VERSION}; upgrade the plugin or genzoo"
            )
        try:
            super().register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"plugin {info.describe()} has an invalid hook: {exc}") from exc
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = self._unknown_hooks(plugin) or [str(exc)]
            self.unregister(plugin)
            raise PluginLoadError(
                f"plugin {info.describe()} implements unknown hooks: {'; '.join(unknown)}"
            ) from None
        self.infos[info.name] = info
        others = [p for p in self.get_plugins() if p is not plugin]
        register_components = self.subset_hook_caller("genzoo_register", remove_plugins=others)
        with self.registry._registering_as(info):
            try:
                register_components(registry=self.registry)
            except GenzooError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {info.describe()} failed in genzoo_register: {type(exc).__name__}: {exc}"
                ) from exc
        return info.name

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        """Hook implementations of ``plugin`` that no hookspec declares (a misspelt hook would
        otherwise never be called), each with the closest known hook names."""
        callers = {name: caller for name, caller in vars(self.hook).items() if not name.startswith("_")}
        known = [name for name, caller in callers.items() if caller.has_spec()]
        found = []
        for name, caller in callers.items():
            if not caller.has_spec() and any(i.plugin is plugin for i in caller.get_hookimpls()):
                close = difflib.get_close_matches(name, known, n=3)
                found.append(
                    f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                )
        return found

    def describe(self, plugin_name: str) -> str:
        """The plugin registered as ``plugin_name``, as errors name it."""
        info = self.infos.get(plugin_name)
        return info.describe() if info else repr(plugin_name)


class PluginHost:
    """One :class:`PluginManager` and the :class:`Registry` its plugins fill."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.pm = PluginManager(self.registry)
        self.plugins: dict[str, PluginInfo] = self.pm.infos

    # -- loading -----------------------------------------------------------------------------
    def register_plugin(self, plugin: Any, info: PluginInfo) -> None:
        """Register an imported plugin object (a module or any object with hook impls) and let
        it fill the registry."""
        self.pm.register(plugin, info=info)

    def load_module(self, module_name: str, *, source: str = "experiment", name: str | None = None) -> None:
        """Import ``module_name`` and register it as a plugin from ``source``."""
        info = PluginInfo(name=name or module_name, source=source, module=module_name)
        module = _import_plugin(module_name, info)
        self.register_plugin(module, info)

    def load_builtin(self, registry_file: str | os.PathLike | None = None) -> None:
        """Load the built-in plugins, :data:`genzoo_plugins.BUILTIN_PLUGINS`; or, given a
        ``registry_file`` (or ``GENZOO_REGISTRY_FILE``), the modules that YAML file lists
        under ``plugins:`` (each a mapping with a ``module`` and an optional ``name``)."""
        chosen = registry_file or os.environ.get(REGISTRY_FILE_ENV)
        if not chosen:
            for name, module in _builtin_plugins().items():
                self.register_plugin(module, PluginInfo(name=name, source="built-in", module=module.__name__))
            return
        path, text = _read_registry_file(chosen)
        for item in _registry_file_entries(path, text):
            self.load_module(item["module"], source="built-in", name=item.get("name"))

    def load_entry_points(self) -> None:
        """Load installed third-party plugins from the ``genzoo.plugins`` entry-point group with
        pluggy's ``load_setuptools_entrypoints``, one entry point at a time in the order of
        their names, so that one failing to import is named with its distribution."""
        if os.environ.get(DISABLE_AUTOLOAD_ENV):
            return
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                source="installed",
                module=ep.module,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
                entry_point=f"{ep.name} = {ep.value}",
            )
            known = self.plugins.get(info.name)
            if known is not None and known.entry_point == info.entry_point:
                continue  # the same distribution found twice on sys.path
            if known is not None:  # pluggy's loader would skip it silently
                raise PluginLoadError(
                    f"two plugins are named {info.name!r}: {known.describe()} and {info.describe()}"
                )
            self.pm.provenance[info.name] = info
            try:
                self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=info.name)
            except GenzooError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {info.describe()} failed to import from entry point "
                    f"'{info.entry_point}' (group {ENTRY_POINT_GROUP!r}): {type(exc).__name__}: {exc}. "
                    f"Set {DISABLE_AUTOLOAD_ENV}=1 to start without installed plugins."
                ) from exc

    # -- lifecycle hooks ---------------------------------------------------------------------
    def call_hook(self, name: str, **kwargs: Any) -> Any:
        """Call the hook ``name`` through pluggy (``pm.hook.<name>(**kwargs)``): implementations
        in pluggy's order (last registered and ``tryfirst`` first), wrappers around them. Returns
        what pluggy does: the list of the implementations' results that are not None (the first
        such result for a ``firstresult`` hook).

        :raises PluginHookError: naming the plugin whose implementation raised (pluggy's own
            exception would not say which one did); genzoo's own errors pass unchanged.
        """
        caller = getattr(self.pm.hook, name)
        try:
            return caller(**kwargs)
        except GenzooError:
            raise
        except Exception as exc:
            raiser = _raising_plugin(exc, caller.get_hookimpls())
            who = f"plugin {self.pm.describe(raiser)}" if raiser else "a plugin"
            raise PluginHookError(f"{who} raised in hook {name}: {type(exc).__name__}: {exc}") from exc


def _raising_plugin(exc: BaseException, impls: list[pluggy.HookImpl]) -> str | None:
    """The name of the plugin whose implementation (among ``impls``) ``exc`` was raised in: the
    innermost of their frames in its traceback, or None if it came from none of them."""
    owners = {}
    for impl in impls:
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            owners[code] = impl.plugin_name
    found = [
        owners[frame.f_code] for frame, _ in traceback.walk_tb(exc.__traceback__) if frame.f_code in owners
    ]
    return found[-1] if found else None


def _builtin_plugins() -> dict[str, ModuleType]:
    try:
        import genzoo_plugins
    except Exception as exc:
        raise PluginLoadError(
            f"the built-in plugins (package genzoo_plugins) failed to import: {type(exc).__name__}: "
            f"{exc}; reinstall genzoo (pip install genzoo)"
        ) from exc
    return genzoo_plugins.BUILTIN_PLUGINS


def _import_plugin(module_name: str, info: PluginInfo) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {info.describe()} failed to import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _read_registry_file(chosen: str | os.PathLike) -> tuple[str, str]:
    path = Path(chosen)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PluginLoadError(f"cannot read registry file {path}: {exc.strerror}") from exc


def _registry_file_entries(path: str, text: str) -> list[dict[str, Any]]:
    """The ``plugins:`` entries of a registry file, each checked to hold a ``module``."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PluginLoadError(f"{path}: not valid YAML: {exc}") from exc
    entries = doc.get("plugins") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise PluginLoadError(f"{path}: expected a top-level key 'plugins' holding a list")
    for i, item in enumerate(entries):
        if not (isinstance(item, dict) and isinstance(item.get("module"), str)):
            raise PluginLoadError(
                f"{path}: plugins[{i}] must be a mapping with a 'module' string (and an "
                f"optional 'name'); got {item!r}"
            )
    return entries


_default_host: PluginHost | None = None
_default_lock = threading.Lock()


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use (built-ins, then installed plugins)."""
    global _default_host
    with _default_lock:
        if _default_host is None:
            host = PluginHost()
            host.load_builtin()
            host.load_entry_points()
            _default_host = host
        return _default_host


def get_registry() -> Registry:
    """The process-wide registry (see :func:`get_host`)."""
    return get_host().registry


def reset_host(host: PluginHost | None = None) -> None:
    """Replace the process-wide host (``None``: reload on next use). For tests and notebooks."""
    global _default_host
    with _default_lock:
        _default_host = host


# -- the listing of `genzoo list`, without importing the plugins' component modules ------------
@dataclass(frozen=True)
class ListedComponent:
    """One line of ``genzoo list``: a registered component, with nothing to build it from."""

    kind: str
    key: str
    plugin: str
    description: str


def component_listing(pattern: str = "*", kind: str | None = None) -> list[ListedComponent]:
    """The components of the process-wide registry whose key matches ``pattern`` (and of
    ``kind``), as :meth:`Registry.list` gives them.

    Registrations are made by importing each plugin's component modules, which import torch
    (seconds; many more on a busy machine). So the listing is kept in ``~/.cache/genzoo/`` beside
    a fingerprint of what it was read from (the built-in plugins (or the registry file),
    the installed plugins' entry points, the size and modification time of every file of genzoo and of each plugin's
    package, and of the site-packages folder), and read back, importing nothing, while that
    fingerprint holds. A host already loaded in this process is listed as it is.
    """
    with _default_lock:
        loaded = _default_host is not None
    fingerprint = None if loaded else _listing_fingerprint()
    cache = _listing_cache_file()
    listing = _read_listing(cache, fingerprint) if fingerprint and cache else None
    if listing is None:
        listing = [
            ListedComponent(e.kind, e.key, e.plugin.name, e.description) for e in get_registry().list()
        ]
        if fingerprint and cache:
            _write_listing(cache, fingerprint, listing)
    return matching_entries(listing, pattern, kind)


def _listing_cache_file() -> Path | None:
    try:
        home = Path.home()
    except RuntimeError:  # no home folder to cache in
        return None
    interpreter = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
    return home / ".cache" / "genzoo" / f"listing-{interpreter}.json"


def _listing_fingerprint() -> str | None:
    """A hash of everything the plugins' registrations are read from (see
    :func:`component_listing`), found without importing the plugins (only their parent packages,
    as ``importlib.util.find_spec`` does); None where that cannot be told."""
    try:
        registry_file = os.environ.get(REGISTRY_FILE_ENV)
        if registry_file:
            registry = list(_read_registry_file(registry_file))
            modules = [item["module"] for item in _registry_file_entries(*registry)]
        else:  # the built-in list and every built-in plugin live in the package's folder
            registry, modules = None, ["genzoo_plugins"]
        points = []
        if not os.environ.get(DISABLE_AUTOLOAD_ENV):
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep, "dist", None)
                release = [dist.metadata["Name"], dist.version] if dist is not None else None
                points.append([ep.name, ep.value, release])
                modules.append(ep.module)
        files = []
        for module in ("genzoo", *modules):
            spec = importlib.util.find_spec(module)
            files += _file_stats(list(spec.submodule_search_locations or [spec.origin]))
        sites = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
        state = {
            "registry": registry,
            "entry_points": sorted(points, key=str),
            "files": files,
            "site": [[site, os.stat(site).st_mtime_ns] for site in sites],
        }
    except Exception:  # loading the plugins then reports whatever it is, properly
        return None
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _file_stats(roots: list[str]) -> list[list]:
    stats = []
    for root in roots:
        paths = [Path(root)] if os.path.isfile(root) else sorted(Path(root).rglob("*"))
        for path in paths:
            if "__pycache__" not in path.parts and path.is_file():
                info = path.stat()
                stats.append([str(path), info.st_mtime_ns, info.st_size])
    return stats


def _read_listing(cache: Path, fingerprint: str) -> list[ListedComponent] | None:
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
        if doc["fingerprint"] != fingerprint:
            return None
        return [ListedComponent(**row) for row in doc["components"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_listing(cache: Path, fingerprint: str, listing: list[ListedComponent]) -> None:
    doc = {"fingerprint": fingerprint, "components": [asdict(c) for c in listing]}
    try:
        atomic_write_text(cache, json.dumps(doc, indent=1) + "\n")
    except GenzooError:
        pass  # an unwritable home: the next `genzoo list` loads the plugins again
