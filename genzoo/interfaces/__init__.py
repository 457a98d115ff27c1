"""The abstract interfaces of genzoo's component kinds.

Each kind is one contract, documented in its module. A factory registered under a kind must
return an instance of that kind's class, which the registry checks when it builds a component.
"""

from genzoo.interfaces.cell import RESAMPLE_MODES, Cell, GateLayer
from genzoo.interfaces.dataset import ImageDataset
from genzoo.interfaces.gate import ChannelGate
from genzoo.interfaces.hierarchy import GroupInfo, Hierarchy, HierarchyOutput
from genzoo.interfaces.latent import LatentGroup, LatentOutput
from genzoo.interfaces.likelihood import OutputLikelihood
from genzoo.interfaces.metric import Metric
from genzoo.interfaces.regularizer import Regularizer, TrainProgress
from genzoo.kinds import KIND_NAMES

KINDS: dict[str, type] = {
    "cell": Cell,
    "gate": ChannelGate,
    "latent_group": LatentGroup,
    "regularizer": Regularizer,
    "hierarchy": Hierarchy,
    "likelihood": OutputLikelihood,
    "dataset": ImageDataset,
    "metric": Metric,
}
"""Kind name -> the interface every component of that kind implements."""
assert tuple(KINDS) == KIND_NAMES

__all__ = [
    "KINDS",
    "RESAMPLE_MODES",
    "Cell",
    "ChannelGate",
    "GateLayer",
    "GroupInfo",
    "Hierarchy",
    "HierarchyOutput",
    "ImageDataset",
    "LatentGroup",
    "LatentOutput",
    "Metric",
    "OutputLikelihood",
    "Regularizer",
    "TrainProgress",
]
