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
from genzoo.io.validation import check_bool, check_odd_int


@genzoo.component(
    "cell",
    "baselines.conv_cell",
    description="standard residual cell: (BN-Swish-3x3 conv) x2, plain skip",
)
class ConvResidualCell(Cell):
    """``skip(x) + gate(conv2(swish(bn2(conv1(swish(bn1(x)))))))``: the standard residual sum,
    with no 0.1 factor on the branch.

    Plain ``nn.Conv2d`` layers with bias (no weight normalization) and PyTorch's default
    BatchNorm. Skip: identity, or a 1x1 conv (with bias) when the shape changes: stride 2 when
    ``resample="down"`` (the first conv then has stride 2 too); when ``resample="up"`` the input
    is upsampled (nearest x2) first, for the branch and the skip alike (computed in the cheaper
    order that gives the same result).

    :param channels_last: run in ``torch.channels_last``, as NVAE's cells do on CPU (exact,
        default on), so that an ablation compares the cells, not memory formats.
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
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        check_odd_int("kernel_size", kernel_size)
        self.channels_last = check_bool("channels_last", channels_last)
        stride = 2 if resample == "down" else 1
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size, padding=kernel_size // 2)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()
        needs_projection = in_chs != out_chs or resample != "none"
        self.skip = nn.Conv2d(in_chs, out_chs, 1, stride=stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = F.silu(self.bn1(x))
        skip = self.skip(x)
        if self.resample == "up":
            # Nearest upsampling commutes with BN (same batch statistics), Swish and a 1x1 conv,
            # so those run at the low resolution: the result of "upsample first", 4x cheaper.
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        h = self.conv2(F.silu(self.bn2(self.conv1(h))))
        return skip + self.gate(h)
