"""Scaling: time and peak memory of one training step of the CIFAR-sized NVAE (one latent
scale, 32 channels, default cells) as the number of groups grows (5, 10, 20, 30 at 32x32) and
as the resolution grows (16, 32, 64 with 10 groups), batch 16. Prints Markdown tables with the
growth relative to the first row and the fitted exponent (method: benchmarks/README.md).

    python -m benchmarks.model.bench_scaling
    python -m benchmarks.model.bench_scaling --groups 5 10 --resolutions 16 32 --repeats 3
"""

from __future__ import annotations

import argparse
import math

import torch

from benchmarks.harness.measure import (
    MIB,
    header,
    interleaved_times,
    markdown_table,
    peak_allocated_bytes,
    set_threads,
)
from benchmarks.harness.small_models import build, cifar_options, images, training_step


def log_log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x: y grows as x to this power."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def sweep(name: str, values: list[int], make_options, batch: int, args: argparse.Namespace) -> str:
    steps, params = {}, {}
    for value in values:
        options = make_options(value)
        model, channels_last = build(options, "default")
        steps[value] = training_step(model, images(batch, options["image_shape"]), channels_last)
        params[value] = sum(p.numel() for p in model.parameters())
    seconds = interleaved_times(steps, repeats=args.repeats, warmup=args.warmup)
    peaks = {value: peak_allocated_bytes(step) for value, step in steps.items()}
    first = values[0]
    rows = [
        [
            value,
            f"{params[value]:,}",
            f"{1000 * seconds[value]:.0f}",
            f"{seconds[value] / seconds[first]:.2f}x",
            f"{peaks[value] / MIB:.0f}",
            f"{peaks[value] / peaks[first]:.2f}x",
        ]
        for value in values
    ]
    time_exp = log_log_slope(values, [seconds[v] for v in values])
    mem_exp = log_log_slope(values, [peaks[v] for v in values])
    table = markdown_table(
        [name, "params", "ms / step", "time vs first", "peak alloc MiB", "memory vs first"], rows
    )
    return table + f"\nFitted growth: time ~ {name}^{time_exp:.2f}, peak memory ~ {name}^{mem_exp:.2f}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    print(
        header(
            "Scaling: training step of the CIFAR-sized NVAE",
            threads=args.threads,
            extra=f"batch {args.batch}, default cells, median of {args.repeats} interleaved steps after "
            f"{args.warmup} warm-up; peak alloc as in bench_cells.py",
        )
    )
    print(f"**Groups (one scale, 32x32, batch {args.batch})**\n")
    print(sweep("groups", args.groups, lambda g: cifar_options(groups=g), args.batch, args), flush=True)
    print(f"**Resolution (one scale, 10 groups, batch {args.batch})**\n")
    print(
        sweep("resolution", args.resolutions, lambda r: cifar_options(size=r), args.batch, args), flush=True
    )


if __name__ == "__main__":
    main()
