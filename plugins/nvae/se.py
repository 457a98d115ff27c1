"""Squeeze-and-excitation channel gate (Hu et al. 2018), as NVAE uses it in every cell (Sec. 3.1.1)."""

from __future__ import annotations

import torch
from einops import reduce
from torch import nn

import genzoo
from genzoo.interfaces import ChannelGate
from genzoo.io.validation import check_int


@genzoo.component("gate", "nvae.se", description="squeeze-and-excitation gate (NVAE cells)")
class SqueezeExcitation(ChannelGate):
    """Global average pool -> Linear(C, max(C // 16, 4)) -> ReLU -> Linear -> sigmoid -> scale."""

    def __init__(self, chs: int, *, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__(chs)
        check_int("reduction", reduction, 1)
        check_int("min_hidden", min_hidden, 1)
        self.hidden = max(chs // reduction, min_hidden)
        self.fc1 = nn.Linear(chs, self.hidden)
        self.fc2 = nn.Linear(self.hidden, chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = reduce(x, "b c h w -> b c", "mean")
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * scale[:, :, None, None]
