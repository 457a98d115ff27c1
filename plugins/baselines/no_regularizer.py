"""The "none" regularizer: no penalty at all.

It exists so that an ablation can switch a regularizer off by swapping one registry key, e.g.
``regularizers.spectral: baselines.none`` in place of ``nvae.spectral_regularizer`` (NVAE
Sec. 3.2 claims spectral regularization is needed for stable training; this is the "without"
arm). The run keeps the same regularizer slots, log columns and checkpoint layout; its penalty is
a constant zero, so it adds nothing to the loss or the gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from genzoo.interfaces import Regularizer
from genzoo.plugin.registry import component


@component(
    "regularizer",
    "baselines.none",
    description="No regularization: a zero penalty, for ablating a regularizer away",
)
class NoRegularizer(Regularizer):
    """No penalty: a zero scalar (without gradient) on the model's device.

    Accepts the common coefficient keywords so a spec that sets them still builds; ``coeff``
    defaults to 0 and has no effect on the loss.
    """

    def __init__(self, *, coeff: float = 0.0, anneal: bool = False, coeff_init: float = 10.0) -> None:
        super().__init__(coeff=coeff, anneal=anneal, coeff_init=coeff_init)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``0.``, a scalar on the device of the model's first parameter or buffer (CPU if none)."""
        tensor = next(iter(model.parameters()), None)
        if tensor is None:
            tensor = next(iter(model.buffers()), None)
        return torch.zeros((), device=tensor.device if tensor is not None else "cpu")
