"""NVAE's depthwise-separable residual cell for the top-down decoder and the post-process blocks
(Sec. 3.1.1, Fig. 3a; official ``InvertedResidual`` with ``mconv_e6k5g0`` / ``mconv_e3k5g0``):
BN -> 1x1 conv to E x channels -> BN -> Swish -> 5x5 depthwise conv -> BN -> Swish -> 1x1 conv
back -> BN -> gate; output ``skip(x) + 0.1 * branch(x)``. E is 6 in the decoder and 3 in the
post-process blocks. As in the official code, these convolutions are plain (no weight norm, no
bias: each is followed by a BatchNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.interfaces import Cell, GateLayer
from genzoo_plugins.nvae.encoder_cell import BN_EPS, BN_MOMENTUM, RESIDUAL_SCALE
from genzoo_plugins.nvae.skip import make_skip


class SeparableCell(Cell):
    """The inverted-residual decoder cell with a 5x5 depthwise convolution.

    ``resample="up"``: nearest x2 upsampling first, skip by bilinear x2 + 1x1 conv.
    ``resample="down"``: stride-2 depthwise conv, skip by factorized reduction (a drop-in).
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
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        if not isinstance(expansion, int) or expansion < 1:
            raise ValueError(f"expansion={expansion!r}; expected a positive integer")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r}; expected an odd positive integer")
        hidden = in_chs * expansion
        self.expansion = expansion
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
        h = F.interpolate(x, scale_factor=2, mode="nearest") if self.resample == "up" else x
        h = self.expand(self.bn0(h))
        h = F.silu(self.bn1(h))
        # Depthwise convolutions run several times faster in channels_last on CPU (backward
        # above all); the result is the same convolution (benchmarks/README.md).
        h = F.silu(self.bn2(self.depthwise(h.contiguous(memory_format=torch.channels_last))))
        h = self.bn3(self.project(h))
        return self.skip(x) + RESIDUAL_SCALE * self.gate(h)


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "cell", "nvae.separable_cell", SeparableCell,
        description="NVAE decoder cell: 1x1 expand, 5x5 depthwise, 1x1 project, BN, SE",
    )  # fmt: skip
