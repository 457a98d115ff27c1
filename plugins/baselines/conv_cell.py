"""A standard convolutional residual cell (He et al. 2016, pre-activation form with Swish):
(BN -> Swish -> 3x3 conv) twice, then the gate, plus the skip path. The output is the standard
``skip(x) + branch(x)``: no 0.1 scaling and no weight normalization, which are NVAE's choices.
It has the same none / down / up interface as NVAE's cells, so it drops in wherever a cell key
goes (the "separable cell -> standard conv" ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.interfaces import Cell, GateLayer


class ConvResidualCell(Cell):
    """(BN -> Swish -> 3x3 conv) x 2 -> gate; skip: identity, or a 1x1 conv (stride 2 when
    down, after nearest x2 when up) when the shape changes.

    ``expansion`` is accepted so that the cell drops in where a decoder cell is expected; a
    standard cell has no expansion and ignores it.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: GateLayer | None = None,
        kernel_size: int = 3,
        expansion: int | None = None,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r}; expected an odd positive integer")
        stride = 2 if resample == "down" else 1
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size, padding=kernel_size // 2)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()
        needs_projection = in_chs != out_chs or resample != "none"
        self.skip = nn.Conv2d(in_chs, out_chs, 1, stride=stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(F.silu(self.bn1(x)))
        h = self.conv2(F.silu(self.bn2(h)))
        return self.skip(x) + self.gate(h)


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "cell", "baselines.conv_cell", ConvResidualCell,
        description="standard residual cell: (BN-Swish-3x3 conv) x2, plain skip",
    )  # fmt: skip
