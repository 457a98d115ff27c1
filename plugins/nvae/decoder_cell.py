"""NVAE's depthwise-separable residual cell for the top-down decoder and the post-process blocks
(Sec. 3.1.1, Fig. 3a; official ``InvertedResidual`` with ``mconv_e6k5g0`` / ``mconv_e3k5g0``):
BN -> 1x1 conv to E x channels -> BN -> Swish -> 5x5 depthwise conv -> BN -> Swish -> 1x1 conv
back -> BN -> gate; output ``skip(x) + 0.1 * branch(x)``. E is 6 in the decoder and 3 in the
post-process blocks. As in the official code, these convolutions are plain (no weight norm, no
bias: each is followed by a BatchNorm).

Speed and memory (benchmarks/README.md): the cell runs in channels_last (depthwise convolutions
are several times faster so on CPU) and, with ``fused``, (1) BN -> 1x1 expand -> BN is one 1x1
convolution whose weights are folded from the batch statistics, so the expanded tensor is never
normalized, and with the Swish and the depthwise convolution after it it is one step that keeps
only the (unexpanded) input and recomputes the expanded tensor in backward, and (2) BN -> Swish
-> 1x1 conv is one step that keeps only its input and recomputes the rest (:mod:`.fused`; the
paper's fused BN+Swish): one expanded tensor saved per cell instead of six. On CPU the
depthwise convolution's weight gradient comes from genzoo's compiled kernel (:mod:`.cpu_kernels`,
built on first use) where it can be built. All are exact (same results as the plain modules up
to rounding) and on by default. ``checkpoint=True`` also drops that one and recomputes the whole
branch in backward: less memory, more time; off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_branch

import genzoo
from genzoo.interfaces import Cell, GateLayer
from genzoo_plugins.nvae.encoder_cell import BN_EPS, BN_MOMENTUM, RESIDUAL_SCALE
from genzoo_plugins.nvae.fused import batch_norm, bn_conv_bn_swish_conv, bn_swish_conv
from genzoo_plugins.nvae.skip import make_skip


class SeparableCell(Cell):
    """The inverted-residual decoder cell with a 5x5 depthwise convolution.

    ``resample="up"``: nearest x2 upsampling first, skip by bilinear x2 + 1x1 conv.
    ``resample="down"``: stride-2 depthwise conv, skip by factorized reduction (a drop-in).

    :param channels_last: run in ``torch.channels_last`` (the output is channels_last too, so
        the next cell needs no copy); exact, default on.
    :param fused: the folded BN -> expand -> BN, with the Swish and the depthwise convolution
        after it, and the fused BN -> Swish -> 1x1 conv, steps that save only their input
        (:mod:`.fused`); exact, default on.
    :param checkpoint: recompute the whole branch in backward (``torch.utils.checkpoint``),
        saving only the cell input: the least memory, about one more forward pass of time;
        exact, default off. BatchNorm running statistics are updated once per step.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: GateLayer | None = None,
        expansion: int = 6,
        kernel_size: int = 5,
        channels_last: bool = True,
        fused: bool = True,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        if not isinstance(expansion, int) or expansion < 1:
            raise ValueError(f"expansion={expansion!r}; expected a positive integer")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r}; expected an odd positive integer")
        for name, value in (("channels_last", channels_last), ("fused", fused), ("checkpoint", checkpoint)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r}; expected true or false")
        hidden = in_chs * expansion
        self.expansion = expansion
        self.channels_last = channels_last
        self.fused = fused
        self.checkpoint = checkpoint
        self.skip = make_skip(in_chs, out_chs, resample)
        self.bn0 = nn.BatchNorm2d(in_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.expand = nn.Conv2d(in_chs, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.depthwise = nn.Conv2d(
            hidden, hidden, kernel_size, stride=2 if resample == "down" else 1,
            padding=kernel_size // 2, groups=hidden, bias=False,
        )  # fmt: skip
        self.bn2 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.project = nn.Conv2d(hidden, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            # Depthwise convolutions run several times faster in channels_last on CPU (backward
            # above all); the skip path takes the converted input so that the sum stays in it.
            x = x.contiguous(memory_format=torch.channels_last)
        if self.checkpoint and self.training and torch.is_grad_enabled():
            passes = []  # the recomputation in backward must not count the batch twice

            def branch(x: torch.Tensor) -> torch.Tensor:
                passes.append(None)
                return self.branch(x, update_stats=len(passes) == 1)

            h = checkpoint_branch(branch, x, use_reentrant=False, preserve_rng_state=False)
        else:
            h = self.branch(x)
        return torch.add(self.skip(x), h, alpha=RESIDUAL_SCALE)  # one pass: skip + 0.1 h

    def branch(self, x: torch.Tensor, *, update_stats: bool = True) -> torch.Tensor:
        """The residual branch, before the 0.1 scale; ``update_stats=False`` leaves BatchNorm
        running statistics alone (a checkpointed branch recomputed in backward)."""
        h = F.interpolate(x, scale_factor=2, mode="nearest") if self.resample == "up" else x
        step = dict(update_stats=update_stats, fuse=self.fused)
        h = bn_conv_bn_swish_conv(h, self.bn0, self.expand, self.bn1, self.depthwise, **step)
        h = bn_swish_conv(h, self.bn2, self.project, **step)
        return self.gate(batch_norm(h, self.bn3, update_stats=update_stats))


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "cell", "nvae.separable_cell", SeparableCell,
        description="NVAE decoder cell: 1x1 expand, 5x5 depthwise, 1x1 project, BN, SE",
        accepts=["expansion"],  # the hierarchy gives decoder slots 6, post-process slots 3
    )  # fmt: skip
