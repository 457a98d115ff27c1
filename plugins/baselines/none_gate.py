"""The identity gate: what "SE -> none" swaps in."""

from __future__ import annotations

import torch

import genzoo
from genzoo.interfaces import ChannelGate


@genzoo.component("gate", "baselines.none_gate", description="no gate (identity)")
class NoGate(ChannelGate):
    """Identity: leaves every channel as it is (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
