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
``convolution_backward``; on CPU a depthwise weight gradient comes from genzoo's compiled
kernel, :mod:`genzoo.layers.cpu_kernels`, where it is available), so the results agree with the unfused
modules to floating-point rounding (``tests/test_fast_paths.py`` checks 1e-5 in fp32). The fused
path is taken only where it is exactly the modules' math: a plain ``nn.BatchNorm2d`` using batch
statistics (training), a ``nn.Conv2d`` with zero padding, and all tensors in one floating dtype
outside autocast. Anything else (``SyncBatchNorm`` under DDP, eval mode, autocast) runs the
modules themselves.

:func:`bn_conv_bn` goes one step further for the cell's first BN -> 1x1 conv -> BN: in training
both BatchNorms are affine maps whose coefficients depend only on batch statistics, and the
statistics of a 1x1 convolution's output follow from the mean and the (small, C x C) covariance
of its input. So the three are one 1x1 convolution with folded weights, and the expanded tensor
is never normalized at all: no BatchNorm pass over it forward, none backward, nothing to
recompute. Autograd differentiates through the statistics, so the gradients are the modules'
gradients (the same math, in another summation order).

The fused steps share their applicability checks, statistics and running-stat updates, which
must stay identical between them for the results to match the modules' exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from genzoo.layers import cpu_kernels


def _average_factor(bn: nn.BatchNorm2d, update_stats: bool) -> float:
    """The running-statistics factor of ``nn.BatchNorm2d.forward`` for this call, counting the
    batch in ``num_batches_tracked`` as it does (``momentum=None``: a cumulative average)."""
    if not (update_stats and bn.track_running_stats and bn.num_batches_tracked is not None):
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


def can_fuse(x: torch.Tensor, bn: nn.Module | None, conv: nn.Module) -> bool:
    """Whether :func:`bn_swish_conv` (``bn=None``: :func:`swish_conv`) may take the fused path
    for ``x``, ``bn`` and ``conv``."""
    return (
        (bn is None or _batch_statistics(x, bn))
        and _plain_conv(conv)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and not _autocast_enabled(x.device.type)
        and x.dtype == conv.weight.dtype
        and x.dim() == 4
    )


def can_fold(x: torch.Tensor, bn_in: nn.Module, conv: nn.Module, bn_out: nn.Module) -> bool:
    """Whether :func:`bn_conv_bn` may fold ``bn_out(conv(bn_in(x)))`` into one convolution: two
    plain BatchNorms using batch statistics around a 1x1, stride 1, ungrouped convolution, in
    float32 or float64 (the statistics are taken in the input's dtype; in float32 only while
    matrix products run in full float32, not TF32 or bf16 as
    ``torch.set_float32_matmul_precision("high")`` allows, since the covariance is one), more
    than one value per channel (else BatchNorm's own error is raised by the modules)."""
    return (
        can_fuse(x, bn_in, conv)
        and (x.dtype != torch.float32 or torch.get_float32_matmul_precision() == "highest")
        and _batch_statistics(x, bn_out)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == 1
        and x.dtype in (torch.float32, torch.float64)
        and x.numel() > x.shape[1]
    )


def _plain_conv(conv: nn.Module) -> bool:
    """``conv`` computes ``F.conv2d(x, conv.weight, conv.bias, ...)``: an ``nn.Conv2d``, or one
    whose weight is a parametrization (weight normalization), which changes the weight only."""
    cls = type(conv)
    return (
        isinstance(conv, nn.Conv2d)
        and cls.forward is nn.Conv2d.forward
        and cls._conv_forward is nn.Conv2d._conv_forward
        and (cls is nn.Conv2d or parametrize.is_parametrized(conv))
    )


def _batch_statistics(x: torch.Tensor, bn: nn.Module) -> bool:
    """``bn`` is a plain affine ``nn.BatchNorm2d`` normalizing with the batch's statistics."""
    return (
        type(bn) is nn.BatchNorm2d  # not SyncBatchNorm (its statistics span processes)
        and bn.training
        and bn.affine
        and bn.weight.dtype == x.dtype
    )


class _BNSwishConv(torch.autograd.Function):
    """``conv(swish(batch_norm(x)))`` (without the Swish, or without the BatchNorm when its
    weight is None) saving ``x`` and the batch statistics; backward recomputes the
    normalization and the Swish."""

    @staticmethod
    def forward(ctx, x, bn_weight, bn_bias, running_mean, running_var, factor, eps, swish, conv_weight,
                conv_bias, stride, padding, dilation, groups):  # fmt: skip
        if bn_weight is None:
            z, mean, invstd = x, None, None
        else:
            z, mean, invstd = torch.native_batch_norm(
                x, bn_weight, bn_bias, running_mean, running_var, True, factor, eps
            )
        a = F.silu(z, inplace=bn_weight is not None) if swish else z  # never overwrite x
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
        if bn_weight is None:
            z = x
        else:
            # native_batch_norm computes x * (w * invstd) + (b - mean * w * invstd) per channel;
            # the same affine map recomputes its output.
            scale = bn_weight * invstd
            shift = bn_bias - mean * scale
            z = torch.addcmul(shift[:, None, None], x, scale[:, None, None])
        a = F.silu(z) if swish else z
        # a depthwise weight gradient on CPU from genzoo's kernel where it applies (cpu_kernels)
        kernel_grad = cpu_kernels.depthwise_weight_grad(a, grad_y, conv_weight, stride, padding, dilation,
                                                        groups) if needs[8] else None  # fmt: skip
        grad_a, grad_conv_weight, grad_conv_bias = torch.ops.aten.convolution_backward(
            grad_y, a, conv_weight, [conv_weight.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, [needs[0] or needs[1] or needs[2], needs[8] and kernel_grad is None, needs[9]],
        )  # fmt: skip
        del a
        if kernel_grad is not None:
            grad_conv_weight = kernel_grad
        grad_x = grad_bn_weight = grad_bn_bias = None
        if grad_a is not None:
            # The Swish's gradient overwrites grad_a, which nothing else holds: one expanded
            # tensor fewer to allocate (on CPU, a fresh one is faulted in page by page).
            grad_z = (
                torch.ops.aten.silu_backward.grad_input(grad_a, z, grad_input=grad_a) if swish else grad_a
            )
            del z
            if bn_weight is None:
                grad_x = grad_z
            else:
                grad_x, grad_bn_weight, grad_bn_bias = torch.ops.aten.native_batch_norm_backward(
                    grad_z, x, bn_weight, None, None, mean, invstd, True, eps, [needs[0], needs[1], needs[2]]
                )
        return (grad_x, grad_bn_weight, grad_bn_bias, None, None, None, None, None, grad_conv_weight,
                grad_conv_bias, None, None, None, None)  # fmt: skip


class _ConvSwishConv(torch.autograd.Function):
    """``conv(swish(conv1x1(x, w, b)))`` saving ``x`` and the weights; backward recomputes the
    1x1 convolution and the Swish."""

    @staticmethod
    def forward(ctx, x, weight, bias, conv_weight, conv_bias, stride, padding, dilation, groups):
        a = F.silu(F.conv2d(x, weight, bias), inplace=True)
        y = F.conv2d(a, conv_weight, conv_bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight, bias, conv_weight)
        ctx.config = (conv_bias is not None, stride, padding, dilation, groups)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, bias, conv_weight = ctx.saved_tensors
        has_bias, stride, padding, dilation, groups = ctx.config
        needs = ctx.needs_input_grad
        z = F.conv2d(x, weight, bias)
        a = F.silu(z)
        kernel_grad = cpu_kernels.depthwise_weight_grad(a, grad_y, conv_weight, stride, padding, dilation,
                                                        groups) if needs[3] else None  # fmt: skip
        grad_a, grad_conv_weight, grad_conv_bias = torch.ops.aten.convolution_backward(
            grad_y, a, conv_weight, [conv_weight.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, [any(needs[:3]), needs[3] and kernel_grad is None, needs[4]],
        )  # fmt: skip
        del a
        if kernel_grad is not None:
            grad_conv_weight = kernel_grad
        grad_x = grad_weight = grad_bias = None
        if grad_a is not None:
            grad_z = torch.ops.aten.silu_backward.grad_input(grad_a, z, grad_input=grad_a)
            del z
            grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_z, x, weight, [weight.shape[0]] if bias is not None else None, [1, 1], [0, 0], [1, 1],
                False, [0, 0], 1, [needs[0], needs[1], needs[2]],
            )  # fmt: skip
        return grad_x, grad_weight, grad_bias, grad_conv_weight, grad_conv_bias, None, None, None, None


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


def swish_conv(x: torch.Tensor, conv: nn.Module, *, fuse: bool = True) -> torch.Tensor:
    """``conv(silu(x))``, keeping only ``x`` for backward (the Swish is recomputed) when ``fuse``
    is on and :func:`can_fuse` allows it, else through the modules themselves."""
    if not (fuse and can_fuse(x, None, conv)):
        return conv(F.silu(x))
    return _BNSwishConv.apply(
        x, None, None, None, None, 0.0, 0.0, True, conv.weight, conv.bias, conv.stride, conv.padding,
        conv.dilation, conv.groups,
    )  # fmt: skip


def bn_conv_bn(
    x: torch.Tensor,
    bn_in: nn.Module,
    conv: nn.Module,
    bn_out: nn.Module,
    *,
    update_stats: bool = True,
    fuse: bool = True,
) -> torch.Tensor:
    """``bn_out(conv(bn_in(x)))`` for a 1x1 convolution; when ``fuse`` is on and
    :func:`can_fold` allows it, one convolution of ``x`` with weights folded from the batch
    statistics (the expanded tensor is never normalized), else through the modules themselves.

    With ``x`` as rows of C channels, mean ``m`` and biased covariance ``S``, ``bn_in`` scales
    channel i by ``s_i = w_i / sqrt(S_ii + eps)``; the convolution ``W`` then gives outputs of
    variance ``v = diag(W' S W'^T)`` with ``W' = W diag(s)``, and ``bn_out`` scales them by
    ``t = w' / sqrt(v + eps')``. Both shifts (``bn_in``'s bias, the conv bias) only move each
    output by a constant that ``bn_out`` subtracts again, so
    ``bn_out(conv(bn_in(x))) = (diag(t) W') (x - m) + b'``, with ``b'`` ``bn_out``'s bias (the
    convolution takes the centred ``x - m``, as the modules' arithmetic does, so that a large
    mean does not cancel in float32). Running statistics are updated as the modules would
    (``update_stats``).
    """
    if not (fuse and can_fold(x, bn_in, conv, bn_out)):
        h = conv(batch_norm(x, bn_in, update_stats=update_stats))
        return batch_norm(h, bn_out, update_stats=update_stats)
    return F.conv2d(*_fold(x, bn_in, conv, bn_out, update_stats))


def bn_conv_bn_swish_conv(
    x: torch.Tensor,
    bn_in: nn.Module,
    conv: nn.Module,
    bn_out: nn.Module,
    conv_out: nn.Module,
    *,
    update_stats: bool = True,
    fuse: bool = True,
) -> torch.Tensor:
    """``conv_out(silu(bn_out(conv(bn_in(x)))))``: :func:`bn_conv_bn` then :func:`swish_conv`.
    When ``fuse`` is on and both may take their fused paths, one step that keeps for backward
    only the centred ``x`` (which the folded statistics keep anyway) and the folded weights: the
    expanded tensor is recomputed in backward (one 1x1 convolution) instead of being kept, so a
    decoder cell keeps one expanded tensor instead of two."""
    if not (fuse and can_fold(x, bn_in, conv, bn_out) and can_fuse(x, None, conv_out)):
        return swish_conv(bn_conv_bn(x, bn_in, conv, bn_out, update_stats=update_stats, fuse=fuse), conv_out,
                          fuse=fuse)  # fmt: skip
    centered, weight, bias = _fold(x, bn_in, conv, bn_out, update_stats)
    return _ConvSwishConv.apply(
        centered, weight, bias, conv_out.weight, conv_out.bias, conv_out.stride, conv_out.padding,
        conv_out.dilation, conv_out.groups,
    )  # fmt: skip


def _fold(x: torch.Tensor, bn_in: nn.Module, conv: nn.Module, bn_out: nn.Module, update_stats: bool):
    """``(x - m, W, b)`` such that ``F.conv2d(x - m, W, b) = bn_out(conv(bn_in(x)))`` (see
    :func:`bn_conv_bn`), with the running statistics updated."""
    chs = x.shape[1]
    count = x.numel() // chs
    mean = x.mean((0, 2, 3))
    centered = x - mean[:, None, None]  # the convolution's input too: no cancellation in it
    rows = centered.permute(0, 2, 3, 1).reshape(count, chs)  # a view when x is channels_last
    covariance = rows.t() @ rows / count
    var_in = covariance.diagonal()
    weight = conv.weight.flatten(1) * (bn_in.weight * torch.rsqrt(var_in + bn_in.eps))
    var_out = ((weight @ covariance) * weight).sum(1)
    folded = weight * (bn_out.weight * torch.rsqrt(var_out + bn_out.eps))[:, None]
    # The shifts cancel, so their gradients are zero; they stay in the graph so that the
    # parameters get that zero gradient, as from the modules, rather than none.
    shifts = bn_in.bias.sum() + (conv.bias.sum() if conv.bias is not None else 0.0)
    bias = bn_out.bias + 0.0 * shifts
    with torch.no_grad():
        mean_out = conv.weight.flatten(1) @ bn_in.bias
        if conv.bias is not None:
            mean_out += conv.bias
        _update_running_stats(bn_in, mean, var_in, count, update_stats)
        _update_running_stats(bn_out, mean_out, var_out, count, update_stats)
    return centered, folded[:, :, None, None], bias


def _update_running_stats(bn: nn.Module, mean: torch.Tensor, var: torch.Tensor, count: int,
                          update_stats: bool) -> None:  # fmt: skip
    """What ``nn.BatchNorm2d`` does to its buffers in training, given the batch's mean and
    biased variance over ``count`` values per channel (the running variance is unbiased)."""
    factor = _average_factor(bn, update_stats)
    if not (update_stats and bn.track_running_stats):
        return
    bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
    bn.running_var.mul_(1 - factor).add_(var, alpha=factor * count / (count - 1))


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
