"""Seed exercise 1 at the cell level: what does NVAE's depthwise-separable decoder cell cost and
save against a standard-convolution cell, at three widths? Parameters (counted, and from the
closed forms of docs/param_counts.md, which must agree), training images per second (forward +
backward of one cell) and peak memory, with the SE gate NVAE puts in every cell.

The standard cell the ratios are taken against is NVAE's own regular residual cell
(``nvae.residual_cell``, the official ``res_bnswish``): two weight-normalized 3x3 convolutions
(receptive field 5x5, as the separable cell's 5x5 depthwise) with the same 0.1 residual scale,
BatchNorm settings and SE gate, so that only separability differs (issue 24). The plain ResNet
cell (``baselines.conv_cell``: no weight normalization, no residual scale, PyTorch's BatchNorm
defaults) is measured beside them for reference.

    python -m benchmarks.cells.exercise1_cells                      # C 16 32 64 at 16x16, batch 32
    python -m benchmarks.cells.exercise1_cells --channels 16 32 64 --size 16 --repeats 20

The whole-model side of the exercise (the same MNIST NVAE with separable or standard cells at
three widths) is ``experiments/exercise1_params.yaml --profile mnist``; the NLL each reaches at
equal steps is the ``standard_cells`` row of ``experiments/mnist_ablations.yaml``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.harness.measure import (
    MIB,
    cell_training_step,
    header,
    interleaved_times,
    markdown_table,
    peak_allocated_bytes,
    set_threads,
)
from genzoo_plugins.baselines.conv_cell import ConvResidualCell
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.encoder_cell import ResidualCell
from genzoo_plugins.nvae.se import SqueezeExcitation


def se_parameters(chs: int) -> int:
    """``Linear(C, s)`` and ``Linear(s, C)`` with biases, ``s = max(C // 16, 4)``."""
    s = max(chs // 16, 4)
    return 2 * chs * s + s + chs


def separable_parameters(chs: int, expansion: int = 6, kernel: int = 5) -> int:
    """docs/param_counts.md: ``2E C^2 + (4 + 4E + k^2 E) C``, plus SE."""
    return 2 * expansion * chs**2 + (4 + 4 * expansion + kernel**2 * expansion) * chs + se_parameters(chs)


def residual_parameters(chs: int, kernel: int = 3) -> int:
    """docs/param_counts.md: ``2k^2 C^2 + 8C``, plus SE (the conv cell's, plus one weight-norm
    log-norm per output channel of each convolution)."""
    return 2 * kernel**2 * chs**2 + 8 * chs + se_parameters(chs)


def conv_parameters(chs: int, kernel: int = 3) -> int:
    """docs/param_counts.md: ``2k^2 C^2 + 6C``, plus SE."""
    return 2 * kernel**2 * chs**2 + 6 * chs + se_parameters(chs)


CELLS = {
    "nvae.separable_cell (E=6, 5x5 depthwise)": (SeparableCell, separable_parameters),
    "nvae.residual_cell (two weight-normalized 3x3 convs)": (ResidualCell, residual_parameters),
    "baselines.conv_cell (plain ResNet cell, two 3x3 convs)": (ConvResidualCell, conv_parameters),
}
STANDARD = "nvae.residual_cell (two weight-normalized 3x3 convs)"
"""The cell the ratios are taken against: the fair standard cell."""


def measure(chs: int, size: int, batch: int, repeats: int, warmup: int) -> list[list[object]]:
    torch.manual_seed(0)
    cells = {name: cls(chs, chs, gate_layer=SqueezeExcitation).train() for name, (cls, _) in CELLS.items()}
    x = torch.randn(batch, chs, size, size)
    cotangent = torch.randn(batch, chs, size, size)
    steps = {name: cell_training_step(cell, x, cotangent) for name, cell in cells.items()}
    seconds = interleaved_times(steps, repeats=repeats, warmup=warmup)
    peaks = {name: peak_allocated_bytes(run) for name, run in steps.items()}
    rows = []
    for name, cell in cells.items():
        counted = sum(p.numel() for p in cell.parameters())
        closed = CELLS[name][1](chs)
        if counted != closed:
            raise AssertionError(
                f"{name} at C={chs}: {counted:,} parameters counted, {closed:,} by the closed form"
            )
        rows.append(
            [
                name,
                f"{counted:,}",
                f"{counted / sum(p.numel() for p in cells[STANDARD].parameters()):.3f}",
                f"{batch / seconds[name]:.0f}",
                f"{seconds[STANDARD] / seconds[name]:.2f}x",
                f"{peaks[name] / MIB:.1f}",
                f"{peaks[name] / peaks[STANDARD]:.2f}x",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--size", type=int, default=16, help="height and width of the cell's input")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    print(
        header(
            "Exercise 1, cell level: separable vs standard cell (ratios against nvae.residual_cell)",
            threads=args.threads,
            extra=f"{args.size}x{args.size}, batch {args.batch}, SE gate, forward + backward, median of "
            f"{args.repeats} interleaved steps after {args.warmup} warm-up; parameters counted = closed form",
        )
    )
    columns = ["cell", "params (= closed form)", "params vs standard", "train img/s", "speed vs standard",
               "peak alloc MiB", "memory vs standard"]  # fmt: skip
    for chs in args.channels:
        print(f"**C = {chs}**\n")
        print(
            markdown_table(columns, measure(chs, args.size, args.batch, args.repeats, args.warmup)),
            flush=True,
        )


if __name__ == "__main__":
    main()
