"""Build validated dataclasses from YAML mappings, with errors that point into the file."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from genzoo.errors import ConfigError
from genzoo.experiment.config.yamlio import KeyPath, SourceMap, format_path


def located(source: SourceMap | None, path: KeyPath, message: str) -> ConfigError:
    """A :class:`ConfigError` reading ``file:line:col: key.path: message``."""
    where = source.where(path) if source else "<config>"
    return ConfigError(f"{where}: {format_path(path)}: {message}")


def unknown_key_error(source: SourceMap | None, path: KeyPath, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return located(
        source, (*path, key), f"unknown key {key!r}{hint} Expected one of: {', '.join(sorted(known))}"
    )


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def check_name(name: Any, path: KeyPath, source: SourceMap | None) -> str:
    """Names become folder names: letters, digits and ``_.+=-`` only, never ``..`` or ``/``."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise located(
            source,
            path,
            f"invalid name {name!r}: names become folder names, so use letters, digits and _ . + = - "
            "(no '/', no '..', not starting with '.')",
        )
    return name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as YAML gives it) fits the annotation ``tp`` (ints are accepted for
    floats; bools are not accepted for numbers)."""
    if tp is Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(check_type(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(tp)
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(args) == len(value) and all(check_type(v, a) for v, a in zip(value, args))
        return all(check_type(v, args[0]) for v in value)
    if origin in (dict, Mapping) or tp in (dict,):
        return isinstance(value, Mapping)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {describe_type(args[0])}" if args else "a list"
    return _type_name(tp)


def build_dataclass(
    cls: type,
    mapping: Any,
    path: KeyPath,
    source: SourceMap | None,
    key_paths: Mapping[str, KeyPath] | None = None,
) -> Any:
    """``cls(**mapping)`` with unknown keys, wrong types and the class's own validation errors
    reported against ``path`` in ``source``. A mapping merged from several places passes
    ``key_paths``: where each of its keys was written, so that an error points at that key's line
    rather than at one of the blocks it was merged from."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise located(source, path, f"expected a mapping, got {type(mapping).__name__} {mapping!r}")
    key_paths = key_paths or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key, value in mapping.items():
        key_path = key_paths.get(key, (*path, key))
        if key not in fields:
            raise unknown_key_error(source, key_path[:-1], key, list(fields))
        tp = hints.get(key, Any)
        if not check_type(value, tp):
            raise located(source, key_path, f"expected {describe_type(tp)}, got {value!r}")
    try:
        return cls(**mapping)
    except (ValueError, TypeError, ConfigError) as exc:
        message = str(exc)
        named = re.search(r"(?:^|[.\s])(\w+)=", message)
        bad = named.group(1) if named and named.group(1) in mapping else None
        raise located(source, key_paths.get(bad, (*path, bad)) if bad else path, message) from None


def field_docs(cls: type) -> dict[str, str]:
    """``{field: help}`` from ``field(metadata={"help": ...})``, for documentation."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
