"""VDVAE's bottleneck residual block (Child 2021, "Very Deep VAEs Generalize Autoregressive Models
and Can Outperform Them on Images", Sec. 4 and Fig. 3) as a genzoo cell.

The branch is four convolutions, each preceded by GELU: a 1x1 conv down to a bottleneck of a
quarter of the channels, two 3x3 convs at that width, and a 1x1 conv back out. The output is the
plain residual sum ``skip(x) + branch(x)``: no normalization layer and no 0.1 factor (VDVAE
keeps deep stacks stable by scaling the last conv's initial weights instead, ``last_init_scale``).

VDVAE changes resolution outside its blocks; to drop in wherever a genzoo cell goes, this cell
does it the way VDVAE's towers do: ``down`` average-pools (2x2) after the block, ``up`` upsamples
(nearest x2) before it.
"""

from __future__ import annotations

import math

import genzoo
import torch
import torch.nn.functional as F
from torch import nn

KEY = "vdvae.bottleneck_cell"


class BottleneckCell(genzoo.Cell):
    """``skip(x) + gate(c4(gelu(c3(gelu(c2(gelu(c1(gelu(x)))))))))``: VDVAE's bottleneck block.

    :param in_chs, out_chs, resample, gate_layer: the keywords every genzoo cell takes. The gate
        (NVAE's SE when the cell sits in ``nvae.hierarchy``) scales the branch before the residual
        sum; ``None`` is VDVAE's own block, which has no gate.
    :param bottleneck_ratio: width of the 3x3 convs as a fraction of ``in_chs`` (VDVAE: 0.25).
    :param last_init_scale: factor applied to the last 1x1 conv's initial weights. VDVAE uses
        ``sqrt(1 / number_of_blocks)`` so that the residual stream's variance stays bounded in
        deep stacks; 1.0 keeps PyTorch's default initialization, 0.0 starts every block as
        the identity (VDVAE's ``zero_last``).

    The skip path is the identity, or a 1x1 conv when ``in_chs != out_chs``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: genzoo.GateLayer | None = None,
        bottleneck_ratio: float = 0.25,
        last_init_scale: float = 1.0,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        if not isinstance(bottleneck_ratio, (int, float)) or not 0 < bottleneck_ratio <= 4:
            raise ValueError(f"{KEY}: bottleneck_ratio={bottleneck_ratio!r}; expected a number in (0, 4]")
        if not isinstance(last_init_scale, (int, float)) or not math.isfinite(last_init_scale):
            raise ValueError(f"{KEY}: last_init_scale={last_init_scale!r}; expected a finite number")
        mid_chs = max(1, int(in_chs * bottleneck_ratio))  # VDVAE: int(width * bottleneck_multiple)
        self.mid_chs = mid_chs
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1)
        self.conv2 = nn.Conv2d(mid_chs, mid_chs, 3, padding=1)
        self.conv3 = nn.Conv2d(mid_chs, mid_chs, 3, padding=1)
        self.conv4 = nn.Conv2d(mid_chs, out_chs, 1)
        with torch.no_grad():
            self.conv4.weight.mul_(last_init_scale)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()
        self.skip = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(x))
        skip = self.skip(x)
        if self.resample == "up":
            # GELU and 1x1 convs act per pixel, so they commute with nearest upsampling: running
            # them before it gives the "upsample first" result at a quarter of the cost.
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        h = self.conv2(F.gelu(h))
        h = self.conv3(F.gelu(h))
        h = self.conv4(F.gelu(h))
        out = skip + self.gate(h)
        if self.resample == "down":
            out = F.avg_pool2d(out, kernel_size=2)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mid_chs={self.mid_chs}"


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "cell", KEY, BottleneckCell,
        description="VDVAE bottleneck block: GELU + 1x1, 3x3, 3x3, 1x1 convs at 0.25 width, residual",
    )  # fmt: skip
