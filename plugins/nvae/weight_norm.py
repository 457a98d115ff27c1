"""Weight-normalized convolutions as NVAE uses them (Salimans & Kingma 2016; NVAE Sec. 3.2).

NVAE keeps a per-output-channel log-norm ``log g`` and a direction ``v`` and uses
``W = exp(log g) * v / (||v|| + 1e-5)``; at construction ``log g = log(||v|| + 1e-2)``, so the
initial weight is (almost) the default initialization. Implemented as a
``torch.nn.utils.parametrize`` parametrization, so ``conv.weight`` *is* the normalized weight
everywhere (forward, spectral regularization, ``state_dict`` through ``parametrizations.weight``).

torch's ``parametrize`` gives every parametrized module a class of its own; genzoo's
weight-normalized convolutions of one base class share one instead
(:func:`parametrize_weight`), so that ``torch.compile`` compiles a cell once for all its
instances (``training.compile: cells``; dynamo guards on each submodule's class, and a class per
convolution made every cell instance compile again).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

NORM_EPS = 1e-5  # added to ||v|| in the forward pass, as in the official code
INIT_EPS = 1e-2  # added to ||v|| when initializing log g, as in the official code


def _channel_norm(v: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each output channel's filter, shaped to broadcast against ``v``."""
    norm = v.flatten(1).norm(dim=1)
    return norm.view(-1, *([1] * (v.dim() - 1)))


class LogWeightNorm(nn.Module):
    """Parametrization ``(log_g, v) -> exp(log_g) * v / (||v|| + 1e-5)``."""

    def forward(self, log_g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # The per-channel factor first: one pass over the weight, forward and backward.
        return v * (torch.exp(log_g) / (_channel_norm(v) + NORM_EPS))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.log(_channel_norm(weight) + INIT_EPS), weight


_SHARED_CLASSES: dict[type, type] = {}


def _get_weight(self: nn.Module) -> torch.Tensor:
    # torch's own property keys parametrize.cached()'s cache by the module it was made for;
    # on a class shared by many modules that would hand every module the last one's weight.
    # This one keys it by the module asked, as torch means to.
    parametrization = self.parametrizations["weight"]
    if not getattr(parametrize, "_cache_enabled", 0):
        return parametrization()
    key = (id(self), "weight")
    weight = parametrize._cache.get(key)
    if weight is None:
        weight = parametrize._cache[key] = parametrization()
    return weight


def _set_weight(self: nn.Module, value: torch.Tensor) -> None:
    self.parametrizations["weight"].right_inverse(value)


_WEIGHT = property(_get_weight, _set_weight)


def parametrize_weight(module: nn.Module, parametrization: nn.Module) -> nn.Module:
    """``parametrize.register_parametrization(module, "weight", parametrization)`` in place,
    with the parametrized class shared by every module of the same base class that this
    function parametrized (see the module docstring). The class only carries the ``weight``
    property, which reads each module's own ``parametrizations``; do not call
    ``parametrize.remove_parametrizations`` on such a module (it would delete the shared
    property): copy ``module.weight`` into a plain module instead."""
    if parametrize.is_parametrized(module):
        raise ValueError(f"{type(module).__name__} is parametrized already")
    base = type(module)
    parametrize.register_parametrization(module, "weight", parametrization, unsafe=True)
    shared = _SHARED_CLASSES.setdefault(base, type(module))
    shared.weight = _WEIGHT  # registering rewrote it with a closure over this module
    module.__class__ = shared
    return module


def weight_norm_(module: nn.Module) -> nn.Module:
    """Put :class:`LogWeightNorm` on ``module.weight`` in place and return the module."""
    return parametrize_weight(module, LogWeightNorm())


def wn_conv2d(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int | None = None,
    groups: int = 1,
    bias: bool = True,
    weight_norm: bool = True,
) -> nn.Conv2d:
    """A ``nn.Conv2d`` ("same" padding by default) with NVAE's weight normalization."""
    if padding is None:
        padding = kernel_size // 2
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, groups=groups, bias=bias)
    return weight_norm_(conv) if weight_norm else conv
