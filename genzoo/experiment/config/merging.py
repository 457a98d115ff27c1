"""Merging experiment documents: profiles deep-merged into the file, ``--set`` paths set one
value, dotted keys (``training.lr: 1e-3``) expanded into nested mappings."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from genzoo.errors import ConfigError
from genzoo.experiment.config.yamlio import KeyPath, format_path


def set_path(doc: dict, path: KeyPath, value: Any, where: str) -> None:
    node = doc
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if isinstance(nxt, str) and i >= 1:
            nxt = {"key": nxt}  # a bare registry key grows into {key: ...} when an option is set
            node[part] = nxt
        if nxt is None:
            nxt = {}
            node[part] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(
                f"{where}: cannot set {format_path(path)}: {format_path(path[: i + 1])} is not a mapping"
            )
        node = nxt
    node[path[-1]] = value


def expand_dotted(mapping: Mapping) -> dict:
    out: dict = {}
    for key, value in mapping.items():
        value = expand_dotted(value) if isinstance(value, Mapping) else value
        if isinstance(key, str) and "." in key:
            nested: Any = value
            for part in reversed(key.split(".")[1:]):
                nested = {part: nested}
            out = deep_merge(out, {key.split(".")[0]: nested})
        else:
            out = deep_merge(out, {key: value})
    return out


def leaf_paths(mapping: Mapping, prefix: KeyPath = ()) -> list[KeyPath]:
    out: list[KeyPath] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out += leaf_paths(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` merged into a copy of ``base``; mappings merge, everything else replaces. A
    component mapping whose ``key`` changes replaces the old one whole (the old component's
    options would not fit the new one)."""
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        if "key" in update and update.get("key") != base.get("key"):
            return copy.deepcopy(dict(update))  # another component: its options start afresh
        out = dict(base)
        for key, value in update.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), str) and "key" not in value:
                out[key] = {"key": out[key]}  # options added to a bare registry key
            out[key] = deep_merge(out.get(key), value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(update)
