"""NVAE's posterior flows (Sec. 3.2 / App.; official ``CellAR``, ``PairedCellAR``,
``ARInvertedResidual``): volume-preserving autoregressive shifts ``z <- z - mu(z)``.

``mu`` is computed by masked convolutions that are autoregressive in raster order over pixels
and, at the same pixel, over channels (PixelCNN-style masks): a 3x3 masked conv that excludes
the current channel ("zero diagonal"), ELU, a 5x5 masked depthwise conv, ELU, and a masked 1x1
conv (ELU before it, its log-norm scaled by 0.1 at initialization so mu starts near 0). Output
channel i therefore depends only on earlier pixels and earlier channels of the same pixel, the
Jacobian of ``z - mu(z)`` is unit lower-triangular, and the log-determinant is exactly 0. Each
flow is a pair of such cells, the second with the spatial order mirrored. As in the official
code, the flow is conditioned on ``z`` only (the encoder feature it is given is not used).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genzoo.layers.activations import elu
from genzoo_plugins.nvae.weight_norm import INIT_EPS, NORM_EPS, _channel_norm, parametrize_weight


def channel_mask(in_chs: int, out_chs: int, groups: int, zero_diag: bool) -> torch.Tensor:
    """``(out_chs, in_chs // groups)``: which input channels each output channel may read at the
    current pixel. Channels are split into ``min(in, out)`` ordered blocks."""
    if groups == in_chs:  # depthwise: each channel reads only itself
        return torch.zeros(out_chs, 1) if zero_diag else torch.ones(out_chs, 1)
    if groups != 1:
        raise ValueError(f"groups={groups!r}; masked convolutions support groups 1 or in_chs")
    if in_chs % out_chs and out_chs % in_chs:
        raise ValueError(f"in_chs={in_chs} and out_chs={out_chs}: one must divide the other")
    blocks = min(in_chs, out_chs)
    out_block = torch.arange(out_chs) // (out_chs // blocks)
    in_block = torch.arange(in_chs) // (in_chs // blocks)
    allowed = in_block[None, :] < out_block[:, None] if zero_diag else in_block[None, :] <= out_block[:, None]
    return allowed.float()


def conv_mask(
    kernel_size: int, in_chs: int, out_chs: int, groups: int, zero_diag: bool, mirror: bool
) -> torch.Tensor:
    """Raster-order causal mask ``(out, in // groups, k, k)``, with ``channel_mask`` at the centre;
    ``mirror`` reverses the spatial order (the channel order at the centre stays, as official)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size!r}; a masked convolution needs an odd size")
    m = kernel_size // 2
    mask = torch.ones(out_chs, in_chs // groups, kernel_size, kernel_size)
    mask[:, :, m:, :] = 0
    mask[:, :, m, :m] = 1
    mask[:, :, m, m] = channel_mask(in_chs, out_chs, groups, zero_diag)
    return torch.flip(mask, dims=(2, 3)) if mirror else mask


class MaskedLogWeightNorm(nn.Module):
    """``(log_g, v) -> exp(log_g) * (v * mask) / (||v * mask|| + 1e-5)``: NVAE's masked,
    weight-normalized convolution weight (official ``ARConv2d``)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, log_g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        masked = v * self.mask
        return masked * (torch.exp(log_g) / (_channel_norm(masked) + NORM_EPS))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.log(_channel_norm(weight * self.mask) + INIT_EPS), weight


def masked_conv2d(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    *,
    groups: int = 1,
    zero_diag: bool,
    mirror: bool,
    bias: bool = True,
    init_scale: float = 1.0,
) -> nn.Conv2d:
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, groups=groups, bias=bias)
    mask = conv_mask(kernel_size, in_chs, out_chs, groups, zero_diag, mirror)
    parametrize_weight(conv, MaskedLogWeightNorm(mask))
    if init_scale != 1.0:
        with torch.no_grad():
            conv.parametrizations.weight.original0.add_(math.log(init_scale))
    return conv


class AutoregressiveShift(nn.Module):
    """One flow cell: ``z -> z - mu(z)`` with an autoregressive ``mu`` (log-det 0)."""

    def __init__(
        self, latent_chs: int, *, expansion: int = 6, kernel_size: int = 5, mirror: bool = False
    ) -> None:
        super().__init__()
        hidden = latent_chs * expansion
        self.conv1 = masked_conv2d(latent_chs, hidden, 3, zero_diag=True, mirror=mirror, bias=False)
        self.conv2 = masked_conv2d(
            hidden, hidden, kernel_size, groups=hidden, zero_diag=False, mirror=mirror, bias=False
        )
        # 0.1 brings mu close to 0 at initialization (official weight_init_coeff).
        self.mu = masked_conv2d(hidden, latent_chs, 1, zero_diag=False, mirror=mirror, init_scale=0.1)

    def shift(self, z: torch.Tensor) -> torch.Tensor:
        h = elu(self.conv2(elu(self.conv1(z))))
        return self.mu(elu(h))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.shift(z)


class PairedAutoregressiveFlow(nn.Module):
    """Two :class:`AutoregressiveShift` cells, the second in mirrored order (official
    ``PairedCellAR``). Returns ``(z, log_det)`` with ``log_det`` elementwise zeros."""

    def __init__(self, latent_chs: int, feature_chs: int, *, expansion: int = 6) -> None:
        super().__init__()
        self.feature_chs = feature_chs  # accepted for the interface; unused, as in the official code
        self.cell1 = AutoregressiveShift(latent_chs, expansion=expansion, mirror=False)
        self.cell2 = AutoregressiveShift(latent_chs, expansion=expansion, mirror=True)

    def forward(self, z: torch.Tensor, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.cell2(self.cell1(z))
        return z, torch.zeros_like(z)
