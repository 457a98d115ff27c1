"""NVAE's combiner cells (official ``EncCombinerCell`` / ``DecCombinerCell``): how the
bottom-up and top-down paths meet at each latent group (Sec. 3, Fig. 2)."""

from __future__ import annotations

import torch
from torch import nn

from genzoo_plugins.nvae.weight_norm import wn_conv2d


class EncoderCombiner(nn.Module):
    """``feature + conv1x1(dec_state)``: the bottom-up feature a posterior reads (official
    ``EncCombinerCell``), so each posterior also depends on the groups above it."""

    def __init__(self, enc_chs: int, dec_chs: int) -> None:
        super().__init__()
        self.conv = wn_conv2d(dec_chs, enc_chs, 1)

    def forward(self, feature: torch.Tensor, dec_state: torch.Tensor) -> torch.Tensor:
        return feature + self.conv(dec_state)


class DecoderCombiner(nn.Module):
    """``conv1x1(concat(state, z))``: how a group's sample enters the top-down path (official
    ``DecCombinerCell``)."""

    def __init__(self, dec_chs: int, latent_chs: int) -> None:
        super().__init__()
        self.conv = wn_conv2d(dec_chs + latent_chs, dec_chs, 1)

    def forward(self, state: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([state, z], dim=1))
