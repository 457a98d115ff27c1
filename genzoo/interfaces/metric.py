"""The ``metric`` kind: an evaluation that turns a trained model into numbers."""

from __future__ import annotations

import abc
from collections.abc import Iterable

import torch

from genzoo.interfaces.hierarchy import Hierarchy


class Metric(abc.ABC):
    """Measures a trained model on held-out images.

    Contract: ``compute(model, batches)`` runs in evaluation mode under ``torch.no_grad()``,
    reads image batches ``(B, C, H, W)`` in ``[0, 1]`` (already on the model's device) and
    returns named scalars, e.g. ``{"fid": 51.2}``. Names must be unique across metrics; prefix
    them with the plugin name where a clash is possible.
    """

    name: str = ""

    @abc.abstractmethod
    def compute(self, model: Hierarchy, batches: Iterable[torch.Tensor]) -> dict[str, float]:
        """Named scalar results."""
