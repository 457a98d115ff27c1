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

from genzoo.interfaces import RESAMPLE_MODES
from genzoo.io.validation import check_choice, check_int
from genzoo_plugins.nvae.weight_norm import wn_conv2d


class FactorizedReduce(nn.Module):
    """Maps ``(B, in_chs, H, W)`` (H, W even) to ``(B, out_chs, H / 2, W / 2)`` without dropping
    pixels: ``cat([conv_i(swish(x) shifted by s_i)])`` over the four shifts.

    The convs (1x1, stride 2, with bias, weight-normalized) get ``out_chs // 4`` channels each
    and the last one the remainder, as in the official code. With fewer than 4 output channels
    (which the official code does not allow) the first ``out_chs`` shifts get one channel each.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        check_int("out_chs", out_chs, 1)
        quarter = out_chs // 4
        widths = (quarter, quarter, quarter, out_chs - 3 * quarter) if quarter else (1,) * out_chs
        self.convs = nn.ModuleList(wn_conv2d(in_chs, w, 1, stride=2, padding=0) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In NCHW even when the cell runs in channels_last: oneDNN (torch 2.14's 3.12) corrupts
        # the heap computing the weight gradient of a 1x1 stride-2 convolution on channels_last
        # inputs with few channels (2 -> 4 at 64x64, for one), found by tests/test_hierarchy.py.
        x = F.silu(x.contiguous())
        # Row/column shifts (0, 0), (1, 1), (0, 1), (1, 0): views, not copies.
        shifted = (x, x[:, :, 1:, 1:], x[:, :, :, 1:], x[:, :, 1:, :])
        return torch.cat([conv(s) for conv, s in zip(self.convs, shifted)], dim=1)


class UpsampleSkip(nn.Module):
    """Maps ``(B, in_chs, H, W)`` to ``(B, out_chs, 2H, 2W)``: bilinear x2 upsampling
    (``align_corners=True``), then a 1x1 weight-normalized convolution (no bias, as official)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = wn_conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


def make_skip(in_chs: int, out_chs: int, resample: str) -> nn.Module:
    """The skip path of an NVAE cell mapping ``in_chs`` to ``out_chs`` with ``resample``.

    ``"down"``: :class:`FactorizedReduce`; ``"up"``: :class:`UpsampleSkip`; ``"none"``: identity,
    or a 1x1 weight-normalized conv without bias when the channel count changes (the official
    cells never change channels without resampling; this makes them drop-ins anywhere).
    """
    check_choice("resample", resample, RESAMPLE_MODES)
    if resample == "down":
        return FactorizedReduce(in_chs, out_chs)
    if resample == "up":
        return UpsampleSkip(in_chs, out_chs)
    if in_chs != out_chs:
        return wn_conv2d(in_chs, out_chs, 1, bias=False)
    return nn.Identity()
