"""The naive reference for NVAE's decoder cell: the math of
:class:`genzoo_plugins.nvae.decoder_cell.SeparableCell` written as a plain ``nn.Sequential`` in
NCHW with separate BatchNorm and Swish modules, as a straightforward PyTorch port would write it.

It is the reference ``tests/test_fast_paths.py`` checks the fast cell against (same weights,
same input, same outputs and gradients within 1e-5 in fp32) and the baseline the benchmarks
(``benchmarks/``) measure against. :class:`UnfoldedCell` is the package's cell without one of its
fast paths (the folded expansion), for the ablation rows of the benchmarks. It registers no
component: the plugin's hook does not import it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.interfaces import Cell, GateLayer
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.encoder_cell import BN_EPS, BN_MOMENTUM, RESIDUAL_SCALE
from genzoo_plugins.nvae.fused import batch_norm, bn_swish_conv
from genzoo_plugins.nvae.skip import make_skip


class NaiveSeparableCell(Cell):
    """``skip(x) + 0.1 * branch(x)`` with ``branch`` = [nearest x2] -> BN -> 1x1 conv -> BN -> SiLU
    -> kxk depthwise conv -> BN -> SiLU -> 1x1 conv -> BN -> gate, every step its own module."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: GateLayer | None = None,
        expansion: int = 6,
        kernel_size: int = 5,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        hidden = in_chs * expansion
        stride = 2 if resample == "down" else 1
        self.skip = make_skip(in_chs, out_chs, resample)
        self.branch = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest") if resample == "up" else nn.Identity(),
            nn.BatchNorm2d(in_chs, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.Conv2d(in_chs, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.SiLU(),
            nn.Conv2d(
                hidden,
                hidden,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=hidden,
                bias=False,
            ),
            nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.SiLU(),
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM),
            gate_layer(out_chs) if gate_layer is not None else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + RESIDUAL_SCALE * self.branch(x)

    @classmethod
    def from_cell(cls, cell: SeparableCell) -> NaiveSeparableCell:
        """A naive cell holding copies of ``cell``'s modules (weights and BatchNorm statistics)."""
        naive = cls(cell.in_chs, cell.out_chs, resample=cell.resample, expansion=cell.expansion)
        naive.skip = copy.deepcopy(cell.skip)
        parts = [cell.bn0, cell.expand, cell.bn1, None, cell.depthwise, cell.bn2, None, cell.project]
        for i, part in enumerate([*parts, cell.bn3, cell.gate], start=1):
            if part is not None:
                naive.branch[i] = copy.deepcopy(part)
        return naive.train(cell.training)


class UnfoldedCell(SeparableCell):
    """The default cell without the folded BN -> expand -> BN (each BN -> [Swish ->] conv fused
    on its own, as before the fold): what the fold alone gains."""

    def branch(
        self, x: torch.Tensor, *, update_stats: bool = True, fused: bool | None = None
    ) -> torch.Tensor:
        # always the fused steps (``fused`` is the cell's resolved option, not used here)
        h = F.interpolate(x, scale_factor=2, mode="nearest") if self.resample == "up" else x
        h = bn_swish_conv(h, self.bn0, self.expand, swish=False, update_stats=update_stats)
        h = bn_swish_conv(h, self.bn1, self.depthwise, update_stats=update_stats)
        h = bn_swish_conv(h, self.bn2, self.project, update_stats=update_stats)
        return self.gate(batch_norm(h, self.bn3, update_stats=update_stats))

    @classmethod
    def from_cell(cls, cell: SeparableCell) -> UnfoldedCell:
        """A copy of ``cell`` (same modules, weights and options) taking the unfolded path."""
        unfolded = copy.deepcopy(cell)
        unfolded.__class__ = cls
        return unfolded


def naive_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`SeparableCell` replaced by its naive twin."""
    return replace_cells(model, NaiveSeparableCell.from_cell)


def replace_cells(model: nn.Module, replacement) -> nn.Module:
    """A copy of ``model`` with every :class:`SeparableCell` ``c`` replaced by ``replacement(c)``."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SeparableCell):
                setattr(parent, name, replacement(child))
    return model
