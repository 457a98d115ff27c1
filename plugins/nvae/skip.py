"""Skip paths of NVAE's resampling cells (official ``get_skip_connection``).

- down: a factorized reduction: Swish, then four stride-2 1x1 weight-normalized convolutions on
  the input shifted by (0, 0), (1, 1), (0, 1) and (1, 0) pixels, concatenated along channels, so
  that every input pixel reaches the output (a single stride-2 1x1 conv would skip 3 in 4);
- up: bilinear x2 upsampling (``align_corners=True``, as the official code) then a 1x1
  weight-normalized convolution;
- none: identity, or a 1x1 convolution when the channel count changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genzoo_plugins.nvae.weight_norm import wn_conv2d


class FactorizedReduce(nn.Module):
    """Halves the resolution without dropping pixels; ``out_chs`` is split over four convs."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        if out_chs < 4:
            raise ValueError(f"out_chs={out_chs!r}; a factorized reduction needs at least 4 output channels")
        quarter = out_chs // 4
        widths = (quarter, quarter, quarter, out_chs - 3 * quarter)
        self.convs = nn.ModuleList(wn_conv2d(in_chs, w, 1, stride=2, padding=0) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(x)
        shifted = (x, x[:, :, 1:, 1:], x[:, :, :, 1:], x[:, :, 1:, :])
        return torch.cat([conv(s) for conv, s in zip(self.convs, shifted)], dim=1)


class UpsampleSkip(nn.Module):
    """Bilinear x2 upsampling, then a 1x1 weight-normalized convolution (no bias, as official)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = wn_conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


def make_skip(in_chs: int, out_chs: int, resample: str) -> nn.Module:
    """The skip path of a cell with the given channels and resampling."""
    if resample == "down":
        return FactorizedReduce(in_chs, out_chs)
    if resample == "up":
        return UpsampleSkip(in_chs, out_chs)
    if in_chs != out_chs:
        return wn_conv2d(in_chs, out_chs, 1, bias=False)
    return nn.Identity()
