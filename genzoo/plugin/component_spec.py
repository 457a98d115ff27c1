"""Component specs: a registry key plus its options, as written in an experiment file.

A spec is written either as a bare key (``nvae.separable_cell``) or as a mapping with ``key``
and the component's options (``{key: nvae.separable_cell, expansion: 6}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genzoo.errors import ConfigError
from genzoo.plugin.discovery import get_registry
from genzoo.plugin.registry import Entry, Registry, current_registry


@dataclass(frozen=True)
class ComponentSpec:
    """A registry key and the keyword options to build it with."""

    key: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, value: ComponentSpec | str | Mapping[str, Any], *, where: str = "component"
    ) -> ComponentSpec:
        """Accept a spec, a bare key, or a mapping with ``key`` and options."""
        if isinstance(value, ComponentSpec):
            return value
        if isinstance(value, str) and value:
            return cls(value, {})
        if isinstance(value, Mapping) and isinstance(value.get("key"), str):
            return cls(value["key"], {k: v for k, v in value.items() if k != "key"})
        raise ConfigError(
            f"{where}: expected a registry key (e.g. 'nvae.separable_cell') or a mapping with "
            f"'key' and options; got {value!r}"
        )

    def build(self, kind: str, registry: Registry | None = None, /, **extra: Any) -> Any:
        """Create the component; ``extra`` (set by the caller, e.g. channel counts) wins over
        options of the same name. The registry is, in order: ``registry``, the one the
        enclosing component is being built from (:func:`genzoo.current_registry`), the
        process-wide one."""
        return _registry(registry).create(kind, self.key, **{**self.options, **extra})

    def entry(self, kind: str, registry: Registry | None = None) -> Entry:
        """The registry entry of this spec's key (same registry rules as :meth:`build`)."""
        return _registry(registry).get(kind, self.key)

    def to_config(self) -> dict[str, Any]:
        return {"key": self.key, **self.options}


def _registry(given: Registry | None) -> Registry:
    # Explicit None checks: a registry with no entries is falsy (it has a length).
    if given is not None:
        return given
    current = current_registry()
    return current if current is not None else get_registry()
