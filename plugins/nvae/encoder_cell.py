"""NVAE's residual cell for the bottom-up encoder and the pre-process blocks (Sec. 3.1.1, Fig. 3b):
two (BatchNorm -> Swish -> 3x3 weight-normalized conv) then the channel gate; the output is
``skip(x) + 0.1 * branch(x)`` (the 0.1 keeps the residual path small at initialization).

Speed and memory (benchmarks/README.md): the cell runs in channels_last (``channels_last``,
default on: oneDNN's 3x3 convolutions and their gradients are faster so on CPU, up to 3x for 16
channels at 32x32). With ``fused`` (default off) each BatchNorm -> Swish -> conv is one step
that keeps only its input and the batch statistics for backward and recomputes the
normalization and the Swish there (:func:`.fused.bn_swish_conv`, the paper's fused BN+Swish, as
in the decoder cell): one tensor saved per convolution instead of three, 10 to 12% less peak
memory for a whole NVAE step, for about 10% more time in these cells. Both are exact (same
results as the plain modules up to rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.interfaces import Cell, GateLayer
from genzoo.io.validation import check_bool, check_odd_int
from genzoo_plugins.nvae.fused import bn_swish_conv
from genzoo_plugins.nvae.skip import make_skip
from genzoo_plugins.nvae.weight_norm import wn_conv2d

BN_EPS = 1e-5
BN_MOMENTUM = 0.05  # official neural_operations.py (PyTorch convention: weight of the new batch)
RESIDUAL_SCALE = 0.1


@genzoo.component("cell", "nvae.residual_cell", description="NVAE encoder cell: (BN-Swish-3x3 conv) x2 + SE")
class ResidualCell(Cell):
    """``skip(x) + 0.1 * gate(conv2(swish(bn2(conv1(swish(bn1(x)))))))`` (official ``Cell`` with
    ``res_bnswish`` x 2).

    The convs are weight-normalized with bias; BatchNorm uses eps 1e-5 and momentum 0.05.
    ``resample="down"``: the first conv has stride 2 (channels usually double), skip by
    factorized reduction. ``resample="up"``: nearest x2 upsampling between the first Swish and
    the first conv, as the official ``BNSwishConv`` does (the same as upsampling first, at a
    quarter of the BN and Swish work), skip by bilinear x2 + 1x1 conv; NVAE's encoder never
    upsamples, but this makes the cell a drop-in anywhere.

    :param channels_last: run in ``torch.channels_last`` (the output is channels_last too);
        exact, default on.
    :param fused: each BN -> Swish -> conv as one step that keeps only its input for backward
        (see the module docstring): less memory, more time; exact, default off. The "up" cell's
        first step, with the upsampling inside it, always runs through the modules.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: GateLayer | None = None,
        kernel_size: int = 3,
        channels_last: bool = True,
        fused: bool = False,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        check_odd_int("kernel_size", kernel_size)
        self.channels_last = check_bool("channels_last", channels_last)
        self.fused = check_bool("fused", fused)
        self.skip = make_skip(in_chs, out_chs, resample)
        self.bn1 = nn.BatchNorm2d(in_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv1 = wn_conv2d(in_chs, out_chs, kernel_size, stride=2 if resample == "down" else 1)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = wn_conv2d(out_chs, out_chs, kernel_size)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # the skip path takes it too
        if self.resample == "up":
            h = self.conv1(F.interpolate(F.silu(self.bn1(x)), scale_factor=2, mode="nearest"))
        else:
            h = bn_swish_conv(x, self.bn1, self.conv1, fuse=self.fused)
        h = bn_swish_conv(h, self.bn2, self.conv2, fuse=self.fused)
        return torch.add(self.skip(x), self.gate(h), alpha=RESIDUAL_SCALE)  # one pass: skip + 0.1 h
