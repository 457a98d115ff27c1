"""BatchNorm weight penalty (Vahdat & Kautz 2020, Sec. 3.2 with spectral regularization; official
``model.py``, ``batchnorm_loss``).

BatchNorm's scale ``gamma`` multiplies a cell's output as much as a convolution's singular values
do, so NVAE penalizes, next to the spectral term, the largest ``|gamma|`` of every BatchNorm
layer, with the same coefficient (official ``train.py`` adds ``bn_loss * wdn_coeff``). The
coefficient options and defaults are those of :class:`~.spectral.SpectralRegularizer`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from genzoo.interfaces import Regularizer
from genzoo.plugin.registry import component
from genzoo_plugins.nvae.spectral import NVAE_COEFF, NVAE_COEFF_INIT


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@component(
    "regularizer",
    "nvae.bn_weight_penalty",
    description="NVAE BatchNorm weight penalty: sum of max |gamma| over BatchNorm layers",
)
class BatchNormPenalty(Regularizer):
    """Sum over affine BatchNorm layers of ``max |gamma|`` (NVAE's BN weight penalty).

    :param coeff: the coefficient after warm-up (NVAE uses the spectral one, CIFAR-10 ``1e-2``).
    :param anneal: interpolate the coefficient in log space from ``coeff_init`` to ``coeff``
        during KL warm-up (official ``--weight_decay_norm_anneal``).
    :param coeff_init: the coefficient at the start of KL warm-up when ``anneal`` is on.
    """

    def __init__(
        self, *, coeff: float = NVAE_COEFF, anneal: bool = False, coeff_init: float = NVAE_COEFF_INIT
    ) -> None:
        super().__init__(coeff=coeff, anneal=anneal, coeff_init=coeff_init)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum max |gamma|`` over every ``_BatchNorm`` (1d/2d/3d, SyncBatchNorm) with an affine
        weight, in ``model.modules()`` order; a zero scalar on the model's device if none."""
        weights = [
            m.weight
            for m in model.modules()
            if isinstance(m, _BatchNorm) and m.affine and m.weight is not None
        ]
        if not weights:
            return torch.zeros((), device=_model_device(model))
        # One segmented max over all the weights rather than two operators per layer (the same
        # values, and ties share the gradient as with max()).
        lengths = torch.tensor([w.numel() for w in weights], device=weights[0].device)
        return torch.segment_reduce(torch.cat(weights).abs(), "max", lengths=lengths).sum()
