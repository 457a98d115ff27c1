"""The ``gate`` kind: a channel gate such as squeeze-and-excitation."""

from __future__ import annotations

import abc

import torch
from torch import nn

from genzoo.io.validation import check_int


class ChannelGate(nn.Module, abc.ABC):
    """Rescales the channels of ``(B, chs, H, W)`` and returns a tensor of the same shape.

    Constructed as ``gate(chs=...)`` (cells call it through their ``gate_layer``). The
    identity gate (``baselines.none_gate``) is a valid gate.
    """

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.chs = check_int("chs", chs, 1)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` with its channels rescaled; same shape as ``x``."""
