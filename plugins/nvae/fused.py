"""Fused BatchNorm -> Swish -> convolution with recomputation in backward (NVAE Sec. 3.2,
"fused BN+Swish": the paper's custom kernel saves the BatchNorm input only and recomputes the
normalization and the Swish when the gradients are taken).

In a depthwise-separable cell the tensors between the 1x1 expansion and the 1x1 projection are
six times wider than the cell's input, and a plain PyTorch cell keeps six of them for backward
(BN output, Swish output, depthwise output ... each one expanded). :func:`bn_swish_conv` keeps
one: the BatchNorm input. The normalized tensor and its Swish are recomputed in backward from
that input and the batch statistics of the forward pass, which are saved (per channel, tiny), so
the recomputation does not repeat the reductions and gives the same values as the forward pass.

The kernels are PyTorch's own (``native_batch_norm`` and its backward, ``silu_backward``,
``convolution_backward``), so the results agree with the unfused modules to floating-point
rounding (``tests/test_fast_paths.py`` checks 1e-5 in fp32). The fused path is taken only where
it is exactly the modules' math: a plain ``nn.BatchNorm2d`` using batch statistics (training),
a ``nn.Conv2d`` with zero padding, and all tensors in one floating dtype outside autocast.
Anything else (``SyncBatchNorm`` under DDP, eval mode, autocast) runs the modules themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def _average_factor(bn: nn.BatchNorm2d, update_stats: bool) -> float:
    """The running-statistics factor of ``nn.BatchNorm2d.forward`` for this call, counting the
    batch in ``num_batches_tracked`` as it does (``momentum=None``: a cumulative average)."""
    if not (update_stats and bn.track_running_stats and bn.num_batches_tracked is not None):
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


def can_fuse(x: torch.Tensor, bn: nn.Module, conv: nn.Module) -> bool:
    """Whether :func:`bn_swish_conv` may take the fused path for ``x``, ``bn`` and ``conv``."""
    return (
        type(bn) is nn.BatchNorm2d  # not SyncBatchNorm (its statistics span processes)
        and bn.training
        and bn.affine
        and type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and not _autocast_enabled(x.device.type)
        and x.dtype == bn.weight.dtype == conv.weight.dtype
        and x.dim() == 4
    )


class _BNSwishConv(torch.autograd.Function):
    """``conv(swish(batch_norm(x)))`` (or without the Swish) saving ``x`` and the batch
    statistics; backward recomputes the normalization and the Swish."""

    @staticmethod
    def forward(ctx, x, bn_weight, bn_bias, running_mean, running_var, factor, eps, swish, conv_weight,
                conv_bias, stride, padding, dilation, groups):  # fmt: skip
        z, mean, invstd = torch.native_batch_norm(
            x, bn_weight, bn_bias, running_mean, running_var, True, factor, eps
        )
        a = F.silu(z, inplace=True) if swish else z
        y = F.conv2d(a, conv_weight, conv_bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x, bn_weight, bn_bias, mean, invstd, conv_weight)
        ctx.config = (eps, swish, conv_bias is not None, stride, padding, dilation, groups)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, bn_weight, bn_bias, mean, invstd, conv_weight = ctx.saved_tensors
        eps, swish, has_bias, stride, padding, dilation, groups = ctx.config
        needs = ctx.needs_input_grad
        # native_batch_norm computes x * (w * invstd) + (b - mean * w * invstd) per channel; the
        # same affine map recomputes its output.
        scale = bn_weight * invstd
        shift = bn_bias - mean * scale
        z = torch.addcmul(shift[:, None, None], x, scale[:, None, None])
        a = F.silu(z) if swish else z
        grad_a, grad_conv_weight, grad_conv_bias = torch.ops.aten.convolution_backward(
            grad_y, a, conv_weight, [conv_weight.shape[0]] if has_bias else None, stride, padding,
            dilation, False, [0, 0], groups, [needs[0] or needs[1] or needs[2], needs[8], needs[9]],
        )  # fmt: skip
        del a
        grad_x = grad_bn_weight = grad_bn_bias = None
        if grad_a is not None:
            grad_z = torch.ops.aten.silu_backward(grad_a, z) if swish else grad_a
            del z, grad_a
            grad_x, grad_bn_weight, grad_bn_bias = torch.ops.aten.native_batch_norm_backward(
                grad_z, x, bn_weight, None, None, mean, invstd, True, eps, [needs[0], needs[1], needs[2]]
            )
        return (grad_x, grad_bn_weight, grad_bn_bias, None, None, None, None, None, grad_conv_weight,
                grad_conv_bias, None, None, None, None)  # fmt: skip


def bn_swish_conv(
    x: torch.Tensor,
    bn: nn.Module,
    conv: nn.Module,
    *,
    swish: bool = True,
    update_stats: bool = True,
    fuse: bool = True,
) -> torch.Tensor:
    """``conv(silu(bn(x)))`` (``conv(bn(x))`` without ``swish``), keeping only ``x`` for backward
    when ``fuse`` is on and :func:`can_fuse` allows it, else through the modules themselves.

    :param update_stats: update ``bn``'s running statistics (and ``num_batches_tracked``) as
        ``bn(x)`` would; off when a checkpointed forward pass is recomputed, so that the batch
        is counted once.
    """
    if not (fuse and can_fuse(x, bn, conv)):
        h = batch_norm(x, bn, update_stats=update_stats)
        return conv(F.silu(h) if swish else h)
    factor = _average_factor(bn, update_stats)
    track = update_stats and bn.track_running_stats
    return _BNSwishConv.apply(
        x, bn.weight, bn.bias, bn.running_mean if track else None, bn.running_var if track else None,
        factor, bn.eps, swish, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
        conv.groups,
    )  # fmt: skip


def batch_norm(x: torch.Tensor, bn: nn.Module, *, update_stats: bool = True) -> torch.Tensor:
    """``bn(x)``, or in training mode the same normalization without touching ``bn``'s running
    statistics when ``update_stats`` is off (the recomputation of a checkpointed forward)."""
    return bn(x) if update_stats or not bn.training else _batch_norm_no_update(x, bn)


def _batch_norm_no_update(x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """``bn(x)`` with its buffers put back afterwards: exact for any BatchNorm (SyncBatchNorm's
    statistics span processes, so the module itself must run)."""
    saved = [b.clone() for b in bn.buffers()]
    out = bn(x)
    with torch.no_grad():
        for buffer, value in zip(bn.buffers(), saved):
            buffer.copy_(value)
    return out


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        if device_type == "cuda":
            return torch.is_autocast_enabled()
        return device_type == "cpu" and torch.is_autocast_cpu_enabled()
