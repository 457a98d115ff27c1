"""Plugin discovery and the plugin host (the pluggy ``PluginManager`` plus the registry).

Plugins are found in three places, in this order:

1. the built-in plugins listed in ``registry.yaml`` (shipped inside the ``genzoo_plugins``
   package; ``GENZOO_REGISTRY_FILE`` points at another file);
2. installed packages, through the entry-point group ``genzoo.plugins`` (skipped when the
   environment variable ``GENZOO_DISABLE_PLUGIN_AUTOLOAD`` is set, as pytest's
   ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``);
3. plugin modules an experiment file names under ``plugins:`` (:meth:`PluginHost.load_module`).

A plugin is a module with ``@genzoo.hookimpl`` functions. It may declare the plugin-API
version it was written for as ``GENZOO_PLUGIN_API = 1``; a mismatch is refused at load time.

Loading the plugins imports their component modules, and with them torch; ``genzoo list`` reads
a cached listing instead while nothing it came from has changed (:func:`component_listing`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import sys
import sysconfig
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import yaml

from genzoo import hookspecs
from genzoo.atomic import atomic_write_text
from genzoo.errors import GenzooError, PluginLoadError
from genzoo.registry import PluginInfo, Registry, matching_entries

ENTRY_POINT_GROUP = "genzoo.plugins"
DISABLE_AUTOLOAD_ENV = "GENZOO_DISABLE_PLUGIN_AUTOLOAD"
REGISTRY_FILE_ENV = "GENZOO_REGISTRY_FILE"
PLUGIN_API_VERSION = 1
"""The plugin API this genzoo provides; bumped on any incompatible change of hooks or kinds."""


class PluginHookError(GenzooError):
    """A plugin's hook implementation raised; the message names the plugin."""


class PluginHost:
    """One pluggy ``PluginManager`` and the :class:`Registry` its plugins fill."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: dict[str, PluginInfo] = {}

    # -- loading -----------------------------------------------------------------------------
    def register_plugin(self, plugin: Any, info: PluginInfo) -> None:
        """Register an imported plugin object (a module or any object with hook impls) and let
        it fill the registry."""
        if info.name in self.plugins:
            if self.pm.get_plugin(info.name) is plugin:
                return
            raise PluginLoadError(
                f"two plugins are named {info.name!r}: {self.plugins[info.name].describe()} and "
                f"{info.describe()}"
            )
        if self.pm.is_registered(plugin):  # the same module reached again under another name
            return
        self._check_api_version(plugin, info)
        try:
            self.pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"plugin {info.describe()} has an invalid hook: {exc}") from exc
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self.pm.unregister(plugin)
            raise PluginLoadError(f"plugin {info.describe()} implements unknown hooks: {'; '.join(unknown)}")
        wrappers = self._wrapper_hooks(plugin)
        if wrappers:
            self.pm.unregister(plugin)
            raise PluginLoadError(
                f"plugin {info.describe()} implements {', '.join(wrappers)} as a wrapper (wrapper=True or "
                "hookwrapper=True); genzoo calls its hooks as plain calls, so implement them without it"
            )
        self.plugins[info.name] = info
        impls = [i for i in self.pm.hook.genzoo_register.get_hookimpls() if i.plugin is plugin]
        with self.registry._registering_as(info):
            for impl in impls:
                try:
                    impl.function(registry=self.registry)
                except GenzooError:
                    raise
                except Exception as exc:
                    raise PluginLoadError(
                        f"plugin {info.describe()} failed in genzoo_register: {type(exc).__name__}: {exc}"
                    ) from exc

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        """Hook implementations of ``plugin`` that no hookspec declares (a misspelt hook would
        otherwise never be called), each with the closest known hook names."""
        known = [name for name, caller in vars(self.pm.hook).items() if getattr(caller, "spec", None)]
        found = []
        for name, caller in vars(self.pm.hook).items():
            if getattr(caller, "spec", True) is None and any(
                i.plugin is plugin for i in caller.get_hookimpls()
            ):
                close = difflib.get_close_matches(name, known, n=3)
                found.append(
                    f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                )
        return found

    def _wrapper_hooks(self, plugin: Any) -> list[str]:
        """Hooks ``plugin`` implements as pluggy wrappers, which :meth:`call_hook` does not run."""
        return sorted(
            name
            for name, caller in vars(self.pm.hook).items()
            if hasattr(caller, "get_hookimpls")
            for impl in caller.get_hookimpls()
            if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)
        )

    def load_module(self, module_name: str, *, source: str = "experiment", name: str | None = None) -> None:
        """Import ``module_name`` and register it as a plugin from ``source``."""
        info = PluginInfo(name=name or module_name, source=source, module=module_name)
        module = _import_plugin(module_name, info)
        self.register_plugin(module, info)

    def load_builtin(self, registry_file: str | os.PathLike | None = None) -> None:
        """Load the plugins that ``registry.yaml`` lists."""
        path, text = _read_registry_file(registry_file)
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
            self.load_module(item["module"], source="built-in", name=item.get("name"))

    def load_entry_points(self) -> None:
        """Load installed third-party plugins from the ``genzoo.plugins`` entry-point group."""
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
            if info.name in self.plugins and self.plugins[info.name].entry_point == info.entry_point:
                continue  # the same distribution found twice on sys.path
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {info.describe()} failed to import from entry point "
                    f"'{info.entry_point}' (group {ENTRY_POINT_GROUP!r}): {type(exc).__name__}: {exc}. "
                    f"Set {DISABLE_AUTOLOAD_ENV}=1 to start without installed plugins."
                ) from exc
            self.register_plugin(plugin, info)

    # -- lifecycle hooks ---------------------------------------------------------------------
    def call_hook(self, name: str, **kwargs: Any) -> list[Any]:
        """Call the lifecycle hook ``name`` on every plugin, in pluggy's order (last registered
        and ``tryfirst`` first), naming the plugin that raises; pluggy's own call would not
        say which one did. Wrapper implementations are refused at load time."""
        caller = getattr(self.pm.hook, name)
        results = []
        for impl in reversed(caller.get_hookimpls()):
            args = {a: kwargs[a] for a in impl.argnames if a in kwargs}
            try:
                result = impl.function(**args)
            except GenzooError:
                raise
            except Exception as exc:
                info = self.plugins.get(impl.plugin_name)
                who = info.describe() if info else repr(impl.plugin_name)
                raise PluginHookError(
                    f"plugin {who} raised in hook {name}: {type(exc).__name__}: {exc}"
                ) from exc
            if result is not None:
                results.append(result)
        return results

    @staticmethod
    def _check_api_version(plugin: Any, info: PluginInfo) -> None:
        wanted = getattr(plugin, "GENZOO_PLUGIN_API", None)
        if wanted is not None and wanted != PLUGIN_API_VERSION:
            raise PluginLoadError(
                f"plugin {info.describe()} needs genzoo plugin API {wanted!r}, but this genzoo "
                f"provides API {PLUGIN_API_VERSION}; upgrade the plugin or genzoo"
            )


def _import_plugin(module_name: str, info: PluginInfo) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {info.describe()} failed to import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _read_registry_file(registry_file: str | os.PathLike | None) -> tuple[str, str]:
    chosen = registry_file or os.environ.get(REGISTRY_FILE_ENV)
    if chosen:
        path = Path(chosen)
        try:
            return str(path), path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PluginLoadError(f"cannot read registry file {path}: {exc.strerror}") from exc
    try:
        resource = importlib.resources.files("genzoo_plugins").joinpath("registry.yaml")
        return str(resource), resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise PluginLoadError(
            "the built-in plugin list genzoo_plugins/registry.yaml is missing; reinstall genzoo "
            f"(pip install genzoo) or set {REGISTRY_FILE_ENV}: {exc}"
        ) from exc


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
    a fingerprint of what it was read from (the built-in plugin list, the installed plugins'
    entry points, the size and modification time of every file of genzoo and of each plugin's
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
        registry_path, registry_text = _read_registry_file(None)
        modules = [item["module"] for item in yaml.safe_load(registry_text)["plugins"]]
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
            "registry": [registry_path, registry_text],
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
