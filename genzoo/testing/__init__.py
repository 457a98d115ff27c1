"""genzoo's component contracts as code, for plugin authors and genzoo's own suite.

One function per kind checks a component against its interface's documented contract (shapes,
gradients, memory formats, checkpoints, normalization, temperatures ...) on tiny inputs, on one
CPU thread, in about a second or less, and raises :class:`AssertionError` naming the key, the
case and what failed::

    import genzoo.testing

    registry, keys = genzoo.testing.load_plugin("genzoo_vdvae")  # built-ins + the plugin
    genzoo.testing.check_cell("vdvae.bottleneck_cell", registry, bottleneck_ratio=0.5)
    genzoo.testing.check_cell(MyCell, registry)  # a factory, not registered yet
    for key in keys:
        genzoo.testing.check(key, registry)  # the check of the key's kind

Each takes a registry key (looked up in ``registry``, by default the process-wide one) or a
factory, and the component's own options, merged over the options the registration gives as
``example`` (a small instance). The checks need no test framework; genzoo's
``tests/test_conformance.py`` runs them over every registered key, as timm's tests run over
``list_models()``. ``import genzoo`` does not import this module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from genzoo.errors import UnknownKeyError
from genzoo.plugin.discovery import get_registry
from genzoo.plugin.registry import Registry
from genzoo.testing.cell import check_cell
from genzoo.testing.dataset import check_dataset
from genzoo.testing.gate import check_gate
from genzoo.testing.hierarchy import check_hierarchy
from genzoo.testing.latent import check_latent_group
from genzoo.testing.likelihood import check_likelihood
from genzoo.testing.metric import ProbeHierarchy, check_metric
from genzoo.testing.plugin import PluginUnderTest, load_plugin
from genzoo.testing.regularizer import check_regularizer

CHECKS: dict[str, Callable[..., None]] = {
    "cell": check_cell,
    "gate": check_gate,
    "latent_group": check_latent_group,
    "regularizer": check_regularizer,
    "hierarchy": check_hierarchy,
    "likelihood": check_likelihood,
    "dataset": check_dataset,
    "metric": check_metric,
}
"""Kind -> its check, for every kind in :data:`genzoo.KINDS`."""


def check(key: str, registry: Registry | None = None, **options: Any) -> None:
    """Run the check of ``key``'s kind on it: :func:`check_cell` for a cell key, and so on."""
    registry = registry if registry is not None else get_registry()
    entry = next((e for e in registry if e.key == key), None)
    if entry is None:
        close = difflib.get_close_matches(key, registry.keys(), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownKeyError(f"no component is registered under the key {key!r}{hint}")
    CHECKS[entry.kind](key, registry, **options)


__all__ = [
    "CHECKS",
    "PluginUnderTest",
    "ProbeHierarchy",
    "check",
    "check_cell",
    "check_dataset",
    "check_gate",
    "check_hierarchy",
    "check_latent_group",
    "check_likelihood",
    "check_metric",
    "check_regularizer",
    "load_plugin",
]
