"""The abstract interfaces of genzoo's component kinds, and the kinds themselves.

Each kind is one contract, documented in its module. A factory registered under a kind must
return an instance of that kind's class, which the registry checks when it builds a component.

The kinds are declared here, once (``_KIND_INTERFACES``): their names (:data:`KIND_NAMES`) are
read without torch, by the registry, the command line and ``import genzoo``; the interfaces
(:data:`KINDS` and every name of ``__all__``) are imported on first use, with torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools see; at run time each name is imported on first use
    from genzoo.interfaces.cell import RESAMPLE_MODES, Cell, GateLayer
    from genzoo.interfaces.dataset import ImageDataset
    from genzoo.interfaces.gate import ChannelGate
    from genzoo.interfaces.hierarchy import Encoding, GroupInfo, Hierarchy, HierarchyOutput, LatentStep
    from genzoo.interfaces.latent import LatentGroup, LatentOutput
    from genzoo.interfaces.likelihood import OutputLikelihood
    from genzoo.interfaces.metric import Metric
    from genzoo.interfaces.regularizer import Regularizer, TrainProgress

    KINDS: dict[str, type]

_MODULES = ("cell", "dataset", "gate", "hierarchy", "latent", "likelihood", "metric", "regularizer")
"""The modules of this package, one per kind's contract, that the names of ``__all__`` come from."""

_KIND_INTERFACES: dict[str, str] = {
    "cell": "Cell",
    "gate": "ChannelGate",
    "latent_group": "LatentGroup",
    "regularizer": "Regularizer",
    "hierarchy": "Hierarchy",
    "likelihood": "OutputLikelihood",
    "dataset": "ImageDataset",
    "metric": "Metric",
}
"""Kind name -> the interface every component of that kind implements."""

KIND_NAMES: tuple[str, ...] = tuple(_KIND_INTERFACES)
"""Every kind a component can be registered as; :data:`KINDS` maps each to its interface."""


def __getattr__(name: str) -> Any:
    if name == "KINDS":
        value: Any = {kind: __getattr__(interface) for kind, interface in _KIND_INTERFACES.items()}
    elif name in __all__:
        modules = (importlib.import_module(f"{__name__}.{module}") for module in _MODULES)
        value = next(getattr(module, name) for module in modules if hasattr(module, name))
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "KINDS",
    "RESAMPLE_MODES",
    "Cell",
    "ChannelGate",
    "Encoding",
    "GateLayer",
    "GroupInfo",
    "Hierarchy",
    "HierarchyOutput",
    "ImageDataset",
    "LatentGroup",
    "LatentOutput",
    "LatentStep",
    "Metric",
    "OutputLikelihood",
    "Regularizer",
    "TrainProgress",
]
