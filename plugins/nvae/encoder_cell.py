"""NVAE's residual cell for the bottom-up encoder and the pre-process blocks (Sec. 3.1.1, Fig. 3b):
two (BatchNorm -> Swish -> 3x3 weight-normalized conv) then the channel gate; the output is
``skip(x) + 0.1 * branch(x)`` (the 0.1 keeps the residual path small at initialization).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.interfaces import Cell, GateLayer
from genzoo.validation import check_odd_int
from genzoo_plugins.nvae.skip import make_skip
from genzoo_plugins.nvae.weight_norm import wn_conv2d

BN_EPS = 1e-5
BN_MOMENTUM = 0.05  # official neural_operations.py (PyTorch convention: weight of the new batch)
RESIDUAL_SCALE = 0.1


class ResidualCell(Cell):
    """``skip(x) + 0.1 * gate(conv2(swish(bn2(conv1(swish(bn1(x)))))))`` (official ``Cell`` with
    ``res_bnswish`` x 2).

    The convs are weight-normalized with bias; BatchNorm uses eps 1e-5 and momentum 0.05.
    ``resample="down"``: the first conv has stride 2 (channels usually double), skip by
    factorized reduction. ``resample="up"``: nearest x2 upsampling between the first Swish and
    the first conv, as the official ``BNSwishConv`` does (the same as upsampling first, at a
    quarter of the BN and Swish work), skip by bilinear x2 + 1x1 conv; NVAE's encoder never
    upsamples, but this makes the cell a drop-in anywhere.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: GateLayer | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        check_odd_int("kernel_size", kernel_size)
        self.skip = make_skip(in_chs, out_chs, resample)
        self.bn1 = nn.BatchNorm2d(in_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv1 = wn_conv2d(in_chs, out_chs, kernel_size, stride=2 if resample == "down" else 1)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = wn_conv2d(out_chs, out_chs, kernel_size)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.bn1(x))
        if self.resample == "up":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.silu(self.bn2(h)))
        return self.skip(x) + RESIDUAL_SCALE * self.gate(h)


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "cell",
        "nvae.residual_cell",
        ResidualCell,
        description="NVAE encoder cell: (BN-Swish-3x3 conv) x2 + SE",
    )
