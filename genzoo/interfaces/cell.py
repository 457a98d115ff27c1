"""The ``cell`` kind: a residual block of a convolutional tower."""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import nn

from genzoo.io.validation import check_choice, check_int

RESAMPLE_MODES = ("none", "down", "up")

GateLayer = Callable[[int], nn.Module]
"""A callable ``gate_layer(chs) -> nn.Module`` that builds a channel gate for ``chs`` channels."""


class Cell(nn.Module, abc.ABC):
    """A residual block mapping ``(B, in_chs, H, W)`` to ``(B, out_chs, H', W')``.

    Contract:

    - ``resample="none"`` keeps the resolution (``H' = H``); ``"down"`` halves it
      (``H' = H // 2``, H even); ``"up"`` doubles it (``H' = 2 H``).
    - Constructor keywords mean the same in every cell: ``in_chs``, ``out_chs``, ``resample``,
      and ``gate_layer`` (a :data:`GateLayer`, or ``None`` for no gate). A cell may take more
      keywords of its own (``expansion``, ``kernel_size`` ...), each with a default.
    - All state lives in parameters and buffers, so ``state_dict()`` is the checkpoint.
    - Device-agnostic: tensors are created on the device of the input.
    """

    def __init__(self, in_chs: int, out_chs: int, *, resample: str = "none") -> None:
        super().__init__()
        check_choice("resample", resample, RESAMPLE_MODES)
        for name, value in (("in_chs", in_chs), ("out_chs", out_chs)):
            check_int(name, value, 1)
        self.in_chs = in_chs
        self.out_chs = out_chs
        self.resample = resample

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_chs, H, W)`` to ``(B, out_chs, H', W')``."""

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The spatial size this cell produces from ``height x width``."""
        if self.resample == "down":
            return height // 2, width // 2
        if self.resample == "up":
            return height * 2, width * 2
        return height, width

    def extra_repr(self) -> str:
        return f"in_chs={self.in_chs}, out_chs={self.out_chs}, resample={self.resample!r}"
