"""ELU (Clevert et al. 2016) as NVAE uses it: in ``encoder0``, the output head, the latent
groups' priors and the posterior flows (official ``ELUConv``, ``ARELUConv``). It lives in the
core because more than one plugin uses it (the NVAE plugin, and the baselines' plain normal
group, whose ablation against the residual normal must not also change the activation's speed),
and plugins do not import each other.

On CPU, torch's ELU computes ``expm1`` at scalar speed in this build (about 50x slower than its
Swish on the same tensor, and 8% of a quickstart NVAE step); :func:`elu` uses genzoo's
vectorized kernel instead (:mod:`genzoo.layers.cpu_kernels`, ``genzoo/layers/csrc/elu.cpp``), where it is built and
``GENZOO_CPU_KERNELS`` is not ``0``. Its results are torch's up to float rounding
(``tests/test_fast_paths.py``), and its backward pass keeps only the output (``exp(x) = y + 1``),
which the next convolution keeps anyway, where torch's keeps the input: one tensor less for
backward per ELU whose input nothing else keeps (inside the flows, before the head). Elsewhere
(CUDA, other dtypes, ``torch.compile``, ``torch.func`` transforms) it is ``F.elu``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from genzoo.layers import cpu_kernels


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def kernel_applies(x: torch.Tensor) -> bool:
    """Whether genzoo's kernel computes ``elu(x)``: a dense float32/float64 CPU tensor, outside
    ``torch.compile`` and ``torch.func`` transforms (``jacrev``, ``vmap`` ...)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and _dense(x)
    )


class _ELU(torch.autograd.Function):
    """``elu(x)`` saving its output; the gradient is ``dy`` where ``y > 0``, ``dy * (y + 1)``
    elsewhere (torch's ``elu_backward`` with ``is_result``)."""

    @staticmethod
    def forward(ctx, x, module):
        y = module.elu_forward(x)
        ctx.module = module
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        if grad_y.stride() != y.stride():
            grad_y = torch.empty_like(y).copy_(grad_y)  # y's layout (dense: empty_like keeps it)
        return ctx.module.elu_backward(grad_y, y), None


def elu(x: torch.Tensor) -> torch.Tensor:
    """``F.elu(x)`` (alpha 1), through genzoo's CPU kernel where :func:`kernel_applies`."""
    module = cpu_kernels.load() if kernel_applies(x) else None
    if module is None:
        return F.elu(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ELU.apply(x, module)
    return module.elu_forward(x)


class ELU(nn.Module):
    """``nn.ELU()`` through :func:`elu` (the same parameters: none; the same ``state_dict``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elu(x)
