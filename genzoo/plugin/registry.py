"""The component registry: ``(kind, key) -> factory``, filled by plugins.

A plugin fills it from its ``genzoo_register`` hook, with :meth:`Registry.add` or, for
components declared where they are defined with :func:`component` (as timm's
``@register_model``), :meth:`Registry.add_declared`. Everything else (the experiment runner,
the CLI, user code) looks components up by kind and key, lists them with a wildcard pattern as
``timm.list_models("*resnet*")`` does, and creates them by name.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any, Protocol, TypeVar

from genzoo.errors import (
    ComponentTypeError,
    DuplicateKeyError,
    RegistryError,
    UnknownKeyError,
    WrongKindError,
)
from genzoo.interfaces import KIND_NAMES


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from, so errors and ``genzoo plugins`` can name it."""

    name: str
    source: str  # "built-in", "installed", "experiment" or "python" (registered from code)
    module: str = ""
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    def describe(self) -> str:
        """``name (source, distribution version)``: enough to find the plugin."""
        where = self.source
        if self.distribution:
            where += f", {self.distribution} {self.version or '(unknown version)'}"
        return f"{self.name!r} ({where})"


PYTHON_PLUGIN = PluginInfo(name="python", source="python")


@dataclass(frozen=True)
class Entry:
    """One registered component.

    :param accepts: the optional build-time facts this factory takes when whoever composes it
        has them, beyond the kind's required constructor vocabulary: e.g. ``"num_bits"`` for a
        hierarchy (the dataset's bit depth) or ``"expansion"`` for a cell (the slot's expansion
        ratio). A composer passes such a fact only to factories that declare it, so nothing
        reads signatures and no factory takes an option only to ignore it.
    :param example: options that build a small instance (seconds on a CPU), used by
        :mod:`genzoo.testing` and the documentation; empty when the defaults are small already.
    """

    kind: str
    key: str
    factory: Callable[..., Any]
    description: str
    plugin: PluginInfo = field(default=PYTHON_PLUGIN)
    accepts: frozenset[str] = frozenset()
    example: Mapping[str, Any] = field(default_factory=dict)


class Registry:
    """All registered components, by kind and key.

    Keys are unique across kinds, so that a key used as the wrong kind can be named.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._current_plugin: PluginInfo = PYTHON_PLUGIN

    # -- registration ------------------------------------------------------------------------
    def add(
        self,
        kind: str,
        key: str,
        factory: Callable[..., Any],
        *,
        description: str = "",
        accepts: Iterable[str] = (),
        example: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Register ``factory`` as the component ``key`` of ``kind``.

        This is the public plugin API, called from a plugin's ``genzoo_register`` hook.

        :param kind: one of :data:`genzoo.KINDS`.
        :param key: ``plugin.component`` in snake case, e.g. ``nvae.separable_cell``.
        :param factory: a callable taking keyword arguments and returning an instance of the
            kind's interface (usually the class itself).
        :param description: one line shown by ``genzoo list``; defaults to the first line of
            the factory's docstring.
        :param accepts: optional build-time facts the factory takes (see :class:`Entry`):
            ``"num_bits"`` (hierarchies), ``"expansion"`` (cells).
        :param example: options for a small instance, used by :mod:`genzoo.testing`.
        :raises DuplicateKeyError: if ``key`` is already registered, naming both plugins.
        """
        if kind not in KIND_NAMES:
            raise RegistryError(
                f"plugin {self._current_plugin.describe()} registers {key!r} under unknown kind "
                f"{kind!r}; expected one of: {', '.join(sorted(KIND_NAMES))}"
            )
        if not isinstance(key, str) or not key or key != key.strip():
            raise RegistryError(
                f"plugin {self._current_plugin.describe()} registers an invalid key {key!r}; "
                "expected a non-empty string such as 'myplugin.my_cell'"
            )
        if not callable(factory):
            raise RegistryError(
                f"plugin {self._current_plugin.describe()} registers {kind} {key!r} with a "
                f"factory of type {type(factory).__name__}, which is not callable"
            )
        if key in self._entries:
            old = self._entries[key]
            raise DuplicateKeyError(
                f"key {key!r} is registered twice: as {old.kind} by plugin {old.plugin.describe()} "
                f"and as {kind} by plugin {self._current_plugin.describe()}. Rename one of them, "
                "or disable one plugin."
            )
        if not description:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        unknown = sorted(set(accepts) - set(BUILD_FACTS))
        if isinstance(accepts, str) or unknown:
            raise RegistryError(
                f"plugin {self._current_plugin.describe()} registers {kind} {key!r} accepting "
                f"{unknown or accepts!r}; expected a list of: {', '.join(BUILD_FACTS)}"
            )
        if example is not None and not isinstance(example, Mapping):
            raise RegistryError(
                f"plugin {self._current_plugin.describe()} registers {kind} {key!r} with example "
                f"{example!r}; expected a mapping of options"
            )
        entry = Entry(
            kind,
            key,
            factory,
            description,
            self._current_plugin,
            accepts=frozenset(accepts),
            example=MappingProxyType(dict(example or {})),
        )
        self._entries[key] = entry
        return entry

    def register(self, kind: str, key: str, *, description: str = "") -> Callable:
        """Decorator form of :meth:`add`: ``@registry.register("cell", "me.my_cell")``."""

        def decorate(factory: Callable) -> Callable:
            self.add(kind, key, factory, description=description)
            return factory

        return decorate

    def add_declared(self, *sources: ModuleType | Callable[..., Any]) -> list[Entry]:
        """Add the components declared with :func:`component`: those of each factory given, and
        those of each module given that are defined in it, in the order they are defined.

        A plugin's ``genzoo_register`` hook can be this single call over its component modules.

        :raises RegistryError: if a source declares no component (a forgotten decorator would
            otherwise go unnoticed until its key is looked up).
        """
        added = []
        for source in sources:
            declared = _declared_in(source) if isinstance(source, ModuleType) else _declared_by(source)
            if not declared:
                raise RegistryError(
                    f"{getattr(source, '__name__', source)!r} declares no component: mark its "
                    "factories with @genzoo.component(kind, key, description=...)"
                )
            for factory, d in declared:
                added.append(
                    self.add(
                        d.kind,
                        d.key,
                        factory,
                        description=d.description,
                        accepts=d.accepts,
                        example=d.example,
                    )
                )
        return added

    def _registering_as(self, plugin: PluginInfo) -> _PluginScope:
        """Attribute the registrations made inside the ``with`` block to ``plugin``."""
        return _PluginScope(self, plugin)

    # -- look-up -----------------------------------------------------------------------------
    def get(self, kind: str, key: str) -> Entry:
        """The entry for ``key``, which must be registered as ``kind``.

        :raises UnknownKeyError: with the closest known keys of that kind.
        :raises WrongKindError: if ``key`` is registered as another kind.
        """
        if kind not in KIND_NAMES:
            raise RegistryError(f"unknown kind {kind!r}; expected one of: {', '.join(sorted(KIND_NAMES))}")
        entry = self._entries.get(key)
        namespace = namespace_of(key)
        missing_plugin = "." in key and not difflib.get_close_matches(
            namespace, self.namespaces(), n=1, cutoff=0.75
        )
        if entry is None and missing_plugin:
            # No plugin of that name is loaded (a misspelt namespace, 'nvea.', is a typo instead).
            raise UnknownKeyError(
                f"unknown {kind} key {key!r}: no loaded plugin provides keys '{namespace}.*' "
                f"(loaded: {', '.join(f'{n}.*' for n in self.namespaces()) or 'none'}). Install the plugin that "
                "provides them (an installed package is found through its 'genzoo.plugins' entry "
                "point) or list its module under the experiment file's 'plugins:'"
            )
        if entry is None:
            known = [e.key for e in self._entries.values() if e.kind == kind]
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            listing = f" Known {kind} keys: {', '.join(sorted(known))}." if known else ""
            raise UnknownKeyError(f"unknown {kind} key {key!r}{hint}{listing}")
        if entry.kind != kind:
            raise WrongKindError(
                f"key {key!r} is a {entry.kind} (from plugin {entry.plugin.describe()}), "
                f"but a {kind} is expected here"
            )
        return entry

    def create(self, kind: str, key: str, /, **kwargs: Any) -> Any:
        """Build the component ``key`` of ``kind`` with keyword options ``kwargs``.

        :raises ComponentTypeError: if the factory returns something that is not an instance of
            the kind's interface (see :data:`genzoo.KINDS`).
        """
        entry = self.get(kind, key)
        try:
            with self.as_current():
                obj = entry.factory(**kwargs)
        except TypeError as exc:
            raise RegistryError(f"{kind} {key!r} rejected its options {sorted(kwargs)}: {exc}") from exc
        from genzoo.interfaces import KINDS  # torch; by now the factory has imported it anyway

        expected = KINDS[kind]
        if not isinstance(obj, expected):
            raise ComponentTypeError(
                f"{kind} {key!r} from plugin {entry.plugin.describe()} returned a "
                f"{type(obj).__module__}.{type(obj).__qualname__}; expected an instance of "
                f"{expected.__module__}.{expected.__qualname__}"
            )
        return obj

    @contextmanager
    def as_current(self) -> Iterator[Registry]:
        """Make this the registry that nested components are built from (see
        :func:`current_registry`) inside the ``with`` block. :meth:`create` does this around
        every factory call, as timm's ``set_layer_config`` does around model creation, so a
        hierarchy builds its cells from the registry it was itself created from."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def list(self, pattern: str = "*", kind: str | None = None) -> list[Entry]:
        """Entries whose key matches the shell-style ``pattern``, sorted by kind then key."""
        return matching_entries(self._entries.values(), pattern, kind)

    def namespaces(self) -> list[str]:
        """The ``plugin`` parts of the registered ``plugin.component`` keys, sorted."""
        return sorted({namespace_of(key) for key in self._entries})

    def has_namespace(self, namespace: str) -> bool:
        """Whether some registered key is ``namespace.<something>``."""
        return any(namespace_of(key) == namespace for key in self._entries)

    def keys(self, kind: str | None = None) -> list[str]:
        return [e.key for e in self.list(kind=kind)]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)


class _Keyed(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...


_Listed = TypeVar("_Listed", bound=_Keyed)


def matching_entries(
    entries: Iterable[_Listed], pattern: str = "*", kind: str | None = None
) -> list[_Listed]:
    """The ``entries`` (anything with ``kind`` and ``key``) whose key matches the shell-style
    ``pattern``, of ``kind`` when given, sorted by kind then key: :meth:`Registry.list`'s rule,
    also for a listing read without loading the plugins (:func:`genzoo.plugin.discovery.component_listing`)."""
    if kind is not None and kind not in KIND_NAMES:
        raise RegistryError(f"unknown kind {kind!r}; expected one of: {', '.join(sorted(KIND_NAMES))}")
    found = [e for e in entries if fnmatch.fnmatchcase(e.key, pattern) and (kind is None or e.kind == kind)]
    return sorted(found, key=lambda e: (e.kind, e.key))


BUILD_FACTS = ("expansion", "num_bits")
"""The optional build-time facts a factory may declare it ``accepts`` (see :class:`Entry`)."""

_current: ContextVar[Registry | None] = ContextVar("genzoo_current_registry", default=None)


def current_registry() -> Registry | None:
    """The registry of the component being built (:meth:`Registry.as_current`), or None outside
    any build; :meth:`genzoo.ComponentSpec.build` then uses the process-wide registry."""
    return _current.get()


def namespace_of(key: str) -> str:
    """``"vdvae"`` for ``"vdvae.bottleneck_cell"``: the part that names the providing plugin."""
    return key.split(".", 1)[0]


@dataclass(frozen=True)
class Declaration:
    """A component declared where its factory is defined (:func:`component`); the arguments
    :meth:`Registry.add` takes, kept on the factory until a plugin adds it."""

    kind: str
    key: str
    description: str = ""
    accepts: tuple[str, ...] = ()
    example: Mapping[str, Any] | None = None


_DECLARATIONS = "__genzoo_components__"

_Factory = TypeVar("_Factory", bound=Callable[..., Any])


def component(
    kind: str,
    key: str,
    *,
    description: str = "",
    accepts: Iterable[str] = (),
    example: Mapping[str, Any] | None = None,
) -> Callable[[_Factory], _Factory]:
    """Declare the decorated class (or factory function) as the component ``key`` of ``kind``,
    where it is defined, as timm's ``@register_model`` does::

        @genzoo.component("cell", "nvae.residual_cell", description="NVAE encoder cell")
        class ResidualCell(genzoo.Cell): ...

    The arguments are :meth:`Registry.add`'s. Nothing is registered at import: the plugin's
    ``genzoo_register`` hook adds its modules' declared components with
    :meth:`Registry.add_declared`, so a registry holds only what its plugins put in it. A factory
    may be declared under several keys (one decorator each).

    :raises RegistryError: at import, if ``kind`` is not one of :data:`genzoo.KINDS`.
    """
    if kind not in KIND_NAMES:
        raise RegistryError(
            f"{key!r} is declared under unknown kind {kind!r}; expected one of: {', '.join(sorted(KIND_NAMES))}"
        )
    if isinstance(accepts, str):
        raise RegistryError(
            f"{key!r} is declared accepting {accepts!r}; expected a list of: {', '.join(BUILD_FACTS)}"
        )
    declaration = Declaration(kind, key, description, tuple(accepts), example)

    def declare(factory: _Factory) -> _Factory:
        setattr(factory, _DECLARATIONS, (*declarations(factory), declaration))
        return factory

    return declare


def declarations(factory: object) -> tuple[Declaration, ...]:
    """The components ``factory`` itself is declared as (:func:`component`); a subclass of a
    declared class is not declared by inheritance."""
    return getattr(factory, "__dict__", {}).get(_DECLARATIONS, ())


def _declared_by(factory: Any) -> list[tuple[Any, Declaration]]:
    return [(factory, d) for d in declarations(factory)]


def _declared_in(module: ModuleType) -> list[tuple[Any, Declaration]]:
    """The declarations of the factories ``module`` defines (not those it imports), in the order
    it defines them."""
    return [
        found
        for value in vars(module).values()
        if getattr(value, "__module__", None) == module.__name__
        for found in _declared_by(value)
    ]


def register_modules(registry: Registry, package: str, modules: Iterable[str]) -> None:
    """Import ``package.<name>`` for each of ``modules`` and register its components: its
    ``register(registry)`` function adds them, or else :meth:`Registry.add_declared` adds those it
    declares with :func:`component`.

    One module per component: a plugin's ``genzoo_register`` hook can be this single call.
    """
    for name in modules:
        module = importlib.import_module(f"{package}.{name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(registry)
        elif _declared_in(module):
            registry.add_declared(module)
        else:
            raise RegistryError(
                f"{module.__name__} has no register(registry) function to call and declares no "
                "component with @genzoo.component"
            )


class _PluginScope:
    def __init__(self, registry: Registry, plugin: PluginInfo) -> None:
        self._registry, self._plugin = registry, plugin

    def __enter__(self) -> Registry:
        self._previous = self._registry._current_plugin
        self._registry._current_plugin = self._plugin
        return self._registry

    def __exit__(self, *exc: object) -> None:
        self._registry._current_plugin = self._previous
