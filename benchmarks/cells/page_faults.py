"""Page faults and time of one forward + backward of NVAE's decoder cell (C = 32, 32x32,
batch 32): the naive reference, channels_last only, and the default (channels_last + fused).

glibc returns large freed blocks to the kernel, so every expanded tensor of a cell step (25 MiB
here) is faulted in page by page again on the next step. Run it twice to see what that costs:

    python -m benchmarks.cells.page_faults
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 python -m benchmarks.cells.page_faults

(the second keeps blocks up to 32 MiB on the heap and never trims it: no faults after warm-up,
at the price of memory held by the process).
"""

from __future__ import annotations

import argparse
import os
import resource

import torch

from benchmarks.harness.measure import interleaved_times, set_threads
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.naive_cells import NaiveSeparableCell
from genzoo_plugins.nvae.se import SqueezeExcitation


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    fast = SeparableCell(32, 32, gate_layer=SqueezeExcitation)
    cells = {
        "naive": NaiveSeparableCell.from_cell(fast),
        "channels_last only": SeparableCell(32, 32, gate_layer=SqueezeExcitation, fused=False),
        "default": fast,
    }
    x, cotangent = torch.randn(32, 32, 32, 32), torch.randn(32, 32, 32, 32)
    steps = {
        name: (lambda c=cell: c(x.detach().requires_grad_()).backward(cotangent))
        for name, cell in cells.items()
    }
    seconds = interleaved_times(steps, repeats=args.repeats, warmup=2)
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"malloc settings: {malloc or 'glibc defaults'}")
    print("| cell | ms / step | minor page faults / step |\n|---|---|---|")
    for name, step in steps.items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        print(f"| {name} | {1000 * seconds[name]:.1f} | {faults:,} |")


if __name__ == "__main__":
    main()
