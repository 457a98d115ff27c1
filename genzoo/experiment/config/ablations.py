"""Ablations: runs that change a base variant by dotted paths, as named ``swaps`` (one run
each) or a ``grid`` (the cartesian product of values)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from genzoo.experiment.config.typed import check_name, located, unknown_key_error
from genzoo.experiment.config.yamlio import KeyPath, SourceMap

ABLATION_KEYS = ("base", "swaps", "grid")
CHANGEABLE = ("hierarchy", "regularizers", "training", "evaluation")
"""What an ablation may change: the first part of each of its paths."""


def ablation_runs(value: Any, variants: Mapping, source: SourceMap) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, base, {dotted.path: value})`` for every ablation run."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise located(source, ("ablations",), "expected a mapping with 'base' and 'swaps' and/or 'grid'")
    for key in value:
        if key not in ABLATION_KEYS:
            raise unknown_key_error(source, ("ablations",), key, list(ABLATION_KEYS))
    base = value.get("base")
    if base not in variants:
        raise located(
            source,
            ("ablations", "base"),
            f"base {base!r} is not a variant; known variants: {', '.join(sorted(variants))}",
        )
    out: list[tuple[str, str, dict[str, Any]]] = []
    swaps = value.get("swaps") or {}
    if not isinstance(swaps, Mapping):
        raise located(source, ("ablations", "swaps"), "expected a mapping of ablation name -> {path: value}")
    for aname, changes in swaps.items():
        check_name(aname, ("ablations", "swaps", aname), source)
        if not isinstance(changes, Mapping) or not changes:
            raise located(
                source,
                ("ablations", "swaps", aname),
                "expected a mapping of variant paths to new values, e.g. {hierarchy.gate: baselines.none_gate}",
            )
        _check_change_paths(changes, ("ablations", "swaps", aname), source)
        out.append((aname, base, dict(changes)))
    grid = value.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise located(source, ("ablations", "grid"), "expected a mapping of variant path -> list of values")
    _check_change_paths(grid, ("ablations", "grid"), source)
    for gpath, options in grid.items():
        if not isinstance(options, list) or not options:
            raise located(
                source, ("ablations", "grid", gpath), f"expected a non-empty list of values, got {options!r}"
            )
    for combo in itertools.product(*grid.values()) if grid else []:
        changes = dict(zip(grid.keys(), combo))
        label = "+".join(f"{p.split('.')[-1]}={_short(v)}" for p, v in changes.items())
        out.append((label, base, changes))
    return out


def _check_change_paths(changes: Mapping, path: KeyPath, source: SourceMap) -> None:
    for change_path in changes:
        head = str(change_path).split(".")[0]
        if head not in CHANGEABLE:
            raise located(
                source,
                (*path, change_path),
                f"cannot change {change_path!r}: paths start with one of hierarchy, regularizers, training, evaluation",
            )


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("key", "custom")
    text = str(value).split(".")[-1] if isinstance(value, str) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
