"""Cell level: forward + backward time and peak memory of NVAE's decoder cell (naive reference,
channels_last only, the default fast cell, checkpointed), NVAE's encoder cell and the standard
conv cell, at C channels in and out, one resolution, batch 32, with the SE gate NVAE puts in
every cell. Prints Markdown tables (see benchmarks/README.md for the method).

    python -m benchmarks.cells.bench_cells                      # C 32 64 128, resolutions 16 32
    python -m benchmarks.cells.bench_cells --channels 32 --resolutions 32 --repeats 20
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks.harness.measure import (
    MIB,
    cell_training_step,
    header,
    interleaved_times,
    markdown_table,
    peak_allocated_bytes,
    ratio,
    saved_for_backward_bytes,
    set_threads,
    without_cpu_kernels,
)
from genzoo_plugins.baselines.conv_cell import ConvResidualCell
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.encoder_cell import ResidualCell
from genzoo_plugins.nvae.naive_cells import NaiveSeparableCell, UnfoldedCell
from genzoo_plugins.nvae.se import SqueezeExcitation

REFERENCE = "decoder, naive NCHW (reference)"
KERNEL_OFF = "decoder, default without the CPU kernel (GENZOO_CPU_KERNELS=0)"


def build_cells(chs: int) -> dict[str, torch.nn.Module]:
    """The cells compared, the decoder variants sharing one set of weights."""
    fast = SeparableCell(chs, chs, gate_layer=SqueezeExcitation)
    same = fast.state_dict()
    cl_only = SeparableCell(chs, chs, gate_layer=SqueezeExcitation, fused=False)
    checkpointed = SeparableCell(chs, chs, gate_layer=SqueezeExcitation, checkpoint=True)
    cl_only.load_state_dict(same)
    checkpointed.load_state_dict(same)
    return {
        REFERENCE: NaiveSeparableCell.from_cell(fast),
        "decoder, channels_last only (fused=False)": cl_only,
        "decoder, fused BN+Swish steps only (no folded expansion)": UnfoldedCell.from_cell(fast),
        KERNEL_OFF: copy.deepcopy(fast),
        "decoder, default (channels_last + fused)": fast,
        "decoder, checkpoint=True": checkpointed,
        "encoder cell (nvae.residual_cell)": ResidualCell(chs, chs, gate_layer=SqueezeExcitation),
        "standard conv cell (baselines.conv_cell)": ConvResidualCell(chs, chs, gate_layer=SqueezeExcitation),
    }


def measure(chs: int, size: int, batch: int, repeats: int, warmup: int) -> list[list[object]]:
    torch.manual_seed(0)
    cells = {name: cell.train() for name, cell in build_cells(chs).items()}
    x = torch.randn(batch, chs, size, size)  # NCHW, as the cell receives it from a default model
    cotangent = torch.randn(batch, chs, size, size)
    steps = {name: cell_training_step(cell, x, cotangent) for name, cell in cells.items()}
    steps[KERNEL_OFF] = without_cpu_kernels(steps[KERNEL_OFF])
    seconds = interleaved_times(steps, repeats=repeats, warmup=warmup)
    peaks = {name: peak_allocated_bytes(run) for name, run in steps.items()}
    saved = {
        name: saved_for_backward_bytes(lambda c=cell: c(x.detach().requires_grad_()), cell)
        for name, cell in cells.items()
    }
    rows = []
    for name, cell in cells.items():
        rows.append(
            [
                name,
                f"{sum(p.numel() for p in cell.parameters()):,}",
                f"{1000 * seconds[name]:.1f}",
                f"{seconds[REFERENCE] / seconds[name]:.2f}x",
                f"{peaks[name] / MIB:.1f}",
                ratio(peaks[name], peaks[REFERENCE]),
                f"{saved[name] / MIB:.1f}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    print(
        header(
            "Cell level: forward + backward",
            threads=args.threads,
            extra=f"batch {args.batch}, SE gate, median of {args.repeats} interleaved steps after "
            f"{args.warmup} warm-up; speedup and memory relative to the naive decoder cell",
        )
    )
    columns = ["cell", "params", "ms / step", "speedup", "peak alloc MiB", "vs naive", "saved MiB"]
    for size in args.resolutions:
        for chs in args.channels:
            print(f"**C = {chs}, {size}x{size}, batch {args.batch}**\n")
            print(
                markdown_table(columns, measure(chs, size, args.batch, args.repeats, args.warmup)), flush=True
            )


if __name__ == "__main__":
    main()
