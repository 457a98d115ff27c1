"""NVAE's depthwise-separable residual cell for the top-down decoder and the post-process blocks
(Sec. 3.1.1, Fig. 3a; official ``InvertedResidual`` with ``mconv_e6k5g0`` / ``mconv_e3k5g0``):
BN -> 1x1 conv to E x channels -> BN -> Swish -> 5x5 depthwise conv -> BN -> Swish -> 1x1 conv
back -> BN -> gate; output ``skip(x) + 0.1 * branch(x)``. E is 6 in the decoder and 3 in the
post-process blocks. As in the official code, these convolutions are plain (no weight norm, no
bias: each is followed by a BatchNorm).

Speed and memory (benchmarks/README.md): the cell runs in channels_last (depthwise convolutions
are several times faster so on CPU) and, with ``fused``, (1) BN -> 1x1 expand -> BN is one 1x1
convolution whose weights are folded from the batch statistics, so the expanded tensor is never
normalized, and with the Swish and the depthwise convolution after it it is one step that keeps
only the (unexpanded) input and recomputes the expanded tensor in backward, and (2) BN -> Swish
-> 1x1 conv is one step that keeps only its input and recomputes the rest (:mod:`.fused`; the
paper's fused BN+Swish): one expanded tensor saved per cell instead of six. On CPU the
depthwise convolution's weight gradient comes from genzoo's compiled kernel (:mod:`genzoo.layers.cpu_kernels`,
built on first use) where it can be built. All are exact (same results as the plain modules up
to rounding). ``checkpoint=True`` also drops that one and recomputes the whole
branch in backward: less memory, more time; off by default.

``channels_last`` and ``fused`` default to ``"auto"``: on where they were measured faster, on
the CPU (benchmarks/README.md, CPU tables), and off on CUDA, where the cell then runs the plain
modules in the input's memory format. On an H100 (torch 2.11, 2026-11-24, benchmarks/README.md,
"GPU (NVIDIA H100)") the same model with the naive cells (plain modules, NCHW) was 1.05x to
1.35x faster than with these cells (channels_last + fused) in fp32, quickstart and CIFAR-sized,
batch 16 and 128 (before the folded expansion existed): the step is launch-bound there, and
the fused steps and their recomputation add kernels. Which of the two costs what on CUDA was
not measured apart; ``benchmarks/gpu/bench_gpu_paper.py`` measures the cell with both on against ``auto``. Under
``torch.compile`` (``training.compile``) ``fused: auto`` is off on every device too: the fused
steps are autograd functions around a C++ kernel that dynamo cannot trace (each would split
the compiled cell), and the compiler fuses BatchNorm and Swish itself. Other devices (MPS ...)
get the plain modules, unmeasured. ``true`` or ``false`` force a path on every device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_branch

import genzoo
from genzoo.interfaces import Cell, GateLayer
from genzoo.io.validation import check_bool, check_bool_or_auto, check_int, check_odd_int
from genzoo_plugins.nvae.encoder_cell import BN_EPS, BN_MOMENTUM, RESIDUAL_SCALE
from genzoo_plugins.nvae.fused import batch_norm, bn_conv_bn_swish_conv, bn_swish_conv
from genzoo_plugins.nvae.skip import make_skip


@genzoo.component(
    "cell",
    "nvae.separable_cell",
    description="NVAE decoder cell: 1x1 expand, 5x5 depthwise, 1x1 project, BN, SE",
    accepts=["expansion"],  # the hierarchy gives decoder slots 6, post-process slots 3
)
class SeparableCell(Cell):
    """The inverted-residual decoder cell with a 5x5 depthwise convolution.

    ``resample="up"``: nearest x2 upsampling first, skip by bilinear x2 + 1x1 conv.
    ``resample="down"``: stride-2 depthwise conv, skip by factorized reduction (a drop-in).

    :param channels_last: run in ``torch.channels_last`` (the output is channels_last too, so
        the next cell needs no copy); exact. ``"auto"`` (default): on CPU, off elsewhere (see
        the module docstring).
    :param fused: the folded BN -> expand -> BN, with the Swish and the depthwise convolution
        after it, and the fused BN -> Swish -> 1x1 conv, steps that save only their input
        (:mod:`.fused`); exact. ``"auto"`` (default): on CPU outside ``torch.compile``, off
        elsewhere (see the module docstring).
    :param checkpoint: recompute the whole branch in backward (``torch.utils.checkpoint``),
        saving only the cell input: the least memory, about one more forward pass of time;
        exact, default off. BatchNorm running statistics are updated once per step.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        resample: str = "none",
        gate_layer: GateLayer | None = None,
        expansion: int = 6,
        kernel_size: int = 5,
        channels_last: bool | str = "auto",
        fused: bool | str = "auto",
        checkpoint: bool = False,
    ) -> None:
        super().__init__(in_chs, out_chs, resample=resample)
        check_int("expansion", expansion, 1)
        check_odd_int("kernel_size", kernel_size)
        check_bool_or_auto("channels_last", channels_last)
        check_bool_or_auto("fused", fused)
        check_bool("checkpoint", checkpoint)
        hidden = in_chs * expansion
        self.expansion = expansion
        self.channels_last_option = channels_last
        self.fused_option = fused
        self.checkpoint = checkpoint
        self.skip = make_skip(in_chs, out_chs, resample)
        self.bn0 = nn.BatchNorm2d(in_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.expand = nn.Conv2d(in_chs, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.depthwise = nn.Conv2d(
            hidden, hidden, kernel_size, stride=2 if resample == "down" else 1,
            padding=kernel_size // 2, groups=hidden, bias=False,
        )  # fmt: skip
        self.bn2 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.project = nn.Conv2d(hidden, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()

    def fast_paths(self, device: torch.device) -> tuple[bool, bool]:
        """``(channels_last, fused)`` as this cell runs on ``device`` (``"auto"`` resolved by
        :func:`resolve_fast_path`)."""
        return (
            resolve_fast_path(self.channels_last_option, device),
            resolve_fast_path(self.fused_option, device, traceable=False),
        )

    @property
    def channels_last(self) -> bool:
        """Whether the cell runs in channels_last on the device its parameters are on."""
        return self.fast_paths(self.bn0.weight.device)[0]

    @property
    def fused(self) -> bool:
        """Whether the fused steps run on the device the parameters are on (eager)."""
        return self.fast_paths(self.bn0.weight.device)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last, fused = self.fast_paths(x.device)
        if channels_last:
            # Depthwise convolutions run several times faster in channels_last on CPU (backward
            # above all); the skip path takes the converted input so that the sum stays in it.
            x = x.contiguous(memory_format=torch.channels_last)
        if self.checkpoint and self.training and torch.is_grad_enabled():
            passes = []  # the recomputation in backward must not count the batch twice

            def branch(x: torch.Tensor) -> torch.Tensor:
                passes.append(None)
                return self.branch(x, update_stats=len(passes) == 1, fused=fused)

            h = checkpoint_branch(branch, x, use_reentrant=False, preserve_rng_state=False)
        else:
            h = self.branch(x, fused=fused)
        return torch.add(self.skip(x), h, alpha=RESIDUAL_SCALE)  # one pass: skip + 0.1 h

    def branch(
        self, x: torch.Tensor, *, update_stats: bool = True, fused: bool | None = None
    ) -> torch.Tensor:
        """The residual branch, before the 0.1 scale; ``update_stats=False`` leaves BatchNorm
        running statistics alone (a checkpointed branch recomputed in backward); ``fused``
        (default: as resolved for ``x``'s device) takes the fused steps."""
        if fused is None:
            fused = self.fast_paths(x.device)[1]
        h = F.interpolate(x, scale_factor=2, mode="nearest") if self.resample == "up" else x
        step = dict(update_stats=update_stats, fuse=fused)
        h = bn_conv_bn_swish_conv(h, self.bn0, self.expand, self.bn1, self.depthwise, **step)
        h = bn_swish_conv(h, self.bn2, self.project, **step)
        return self.gate(batch_norm(h, self.bn3, update_stats=update_stats))


def resolve_fast_path(option: bool | str, device: torch.device, *, traceable: bool = True) -> bool:
    """``option`` (``True``, ``False`` or ``"auto"``) for a cell running on ``device``:
    ``"auto"`` is on for the CPU only, where the fast paths were measured faster, and, unless
    the path is ``traceable``, only outside ``torch.compile`` (see the module docstring)."""
    if option != "auto":
        return bool(option)
    return device.type == "cpu" and (traceable or not torch.compiler.is_compiling())
